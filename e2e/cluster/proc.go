package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is a child process started by the harness: a control-plane
// component, a pod's workload or anything started with StartInNode.
//
// Every Process runs in its own process group so that stopping it also stops
// whatever it forked, and with PR_SET_PDEATHSIG so that it dies with the test
// binary even when the test is killed before its cleanups run (go test
// -timeout, Ctrl-C).
type Process struct {
	// Name identifies the process in logs and errors.
	Name string
	// LogPath is the file receiving the process's stdout and stderr.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait has returned
	err  error         // cmd.Wait's result; read only after done is closed
}

// prepareCmd sets the attributes every harness child needs: its own process
// group (so the whole tree can be signalled) and a parent-death signal.
func prepareCmd(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Pdeathsig fires when the creating OS thread exits; Go only retires
	// threads that were locked with LockOSThread and never unlocked, which
	// the harness does not do, so in practice it fires when the test binary
	// exits.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// startProcess starts cmd with its output appended to logPath.
func startProcess(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log for %s: %w", name, err)
	}
	// The child holds its own copy of the descriptor; ours can be closed
	// as soon as it has started.
	defer logFile.Close()

	fmt.Fprintf(logFile, "### %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(cmd.Args, " "))
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	prepareCmd(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// startForTest starts cmd as startProcess does, failing t if it cannot, and
// stops it in t.Cleanup (SIGTERM, then SIGKILL after grace).
func startForTest(t testing.TB, name, logPath string, cmd *exec.Cmd, grace time.Duration) *Process {
	t.Helper()
	p, err := startProcess(name, logPath, cmd)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(grace); err != nil {
			t.Errorf("e2e: teardown: %v", err)
		}
	})
	return p
}

// Pid returns the process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and if so its wait error
// (nil for exit status 0).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// ExitCode returns the exit code, -1 if it is still running or was killed
// by a signal.
func (p *Process) ExitCode() int {
	if exited, _ := p.Exited(); !exited {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process's whole group.
func (p *Process) Signal(sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid(), sig)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pgid %d): %w", p.Name, p.Pid(), err)
	}
	return nil
}

// Stop sends SIGTERM to the process group, waits up to grace for the leader
// to exit, then SIGKILLs the group. It always sends a final SIGKILL to the
// group so that children the leader left behind do not survive it. Stop is
// idempotent.
func (p *Process) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, p.Pid())
	}
}

// LogTail returns up to n last lines of the process's log.
func (p *Process) LogTail(n int) string { return fileTail(p.LogPath, n) }

// fileTail returns up to n last lines of the file at path, or a note saying
// why it could not be read.
func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
