package health

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The frame tests run on synctest's clock: a client that waits for a frame
// that never comes reaches its deadline at once instead of after a minute.
const (
	testConnTimeout = 30 * time.Second // each write, and each frame once begun
	testNextWithin  = time.Minute      // the deadline of every next: a failure bound
	testCheckWithin = 10 * time.Second // sent as grpc-timeout on a Check, as check.go does
)

func TestGRPCConnFrames(t *testing.T) {
	pingData := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	tests := []struct {
		name  string
		calls []string // methods started, in order; nil: one Check
		onDue []string // methods started when next reports errDue, one each time
		// serve writes the response, once the server has read every request.
		serve func(s *fakeServer)
		// events is what next returned until every call ended or it failed.
		events []string
		// replies is what the client wrote while reading; nil: not checked.
		replies []string
	}{
		// Responses.
		{
			name: "headers, one message and OK trailers: the message, then the end",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage("serving"))
				s.status(1, "0", "")
			},
			events:  []string{`1 msg "serving"`, `1 end OK`},
			replies: []string{"WINDOW_UPDATE 0 +12", "WINDOW_UPDATE 1 +12"},
		},
		{
			name: "a message split across three DATA frames comes out whole, once",
			serve: func(s *fakeServer) {
				m := grpcMessage("serving")
				s.grpcHeaders(1)
				s.data(1, false, m[:3]) // inside the length prefix
				s.data(1, false, m[3:8])
				s.data(1, false, m[8:])
				s.status(1, "0", "")
			},
			events: []string{`1 msg "serving"`, `1 end OK`},
			replies: []string{
				"WINDOW_UPDATE 0 +3", "WINDOW_UPDATE 1 +3",
				"WINDOW_UPDATE 0 +5", "WINDOW_UPDATE 1 +5",
				"WINDOW_UPDATE 0 +4", "WINDOW_UPDATE 1 +4",
			},
		},
		{
			name: "two messages and an empty one in one DATA frame come out one at a time",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, slices.Concat(grpcMessage("serving"), grpcMessage(""), grpcMessage("not serving")))
				s.status(1, "0", "")
			},
			events: []string{`1 msg "serving"`, `1 msg ""`, `1 msg "not serving"`, `1 end OK`},
		},
		{
			name: "padding counts against the windows and is given back with the data",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.paddedData(1, grpcMessage("serving"), 20)
				s.status(1, "0", "")
			},
			events:  []string{`1 msg "serving"`, `1 end OK`},
			replies: []string{"WINDOW_UPDATE 0 +33", "WINDOW_UPDATE 1 +33"}, // 1 length byte + 12 + 20
		},
		{
			name: "content-type application/grpc+proto is a gRPC response",
			serve: func(s *fakeServer) {
				s.headers(1, false, ":status", "200", "content-type", "application/grpc+proto")
				s.data(1, false, grpcMessage("serving"))
				s.status(1, "0", "")
			},
			events: []string{`1 msg "serving"`, `1 end OK`},
		},
		{
			name: "trailers-only response with grpc-status 12: the call ends Unimplemented with the decoded message",
			serve: func(s *fakeServer) {
				s.headers(1, true, ":status", "200", "content-type", "application/grpc",
					"grpc-status", "12", "grpc-message", "unknown%20service%20grpc.health.v1.Health")
			},
			events: []string{`1 end Unimplemented: unknown service grpc.health.v1.Health`},
		},
		{
			name: "trailers-only response with grpc-status 0: the call ends OK with no message",
			serve: func(s *fakeServer) {
				s.headers(1, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "0")
			},
			events: []string{`1 end OK`},
		},
		{
			name: "a message, then trailers with grpc-status 14: the message, then Unavailable",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage("serving"))
				s.status(1, "14", "backend%20shutting%20down")
			},
			events: []string{`1 msg "serving"`, `1 end Unavailable: backend shutting down`},
		},
		{
			name: "HTTP 404 with a text body from a server that is not gRPC: the call ends Unimplemented",
			serve: func(s *fakeServer) {
				s.headers(1, false, ":status", "404", "content-type", "text/plain; charset=utf-8")
				s.data(1, true, []byte("404 page not found\n"))
			},
			events: []string{`1 end Unimplemented: not a gRPC response: HTTP status 404, content-type "text/plain; charset=utf-8"`},
		},
		{
			name: "HTTP 503 with the gRPC content-type: the call ends Unavailable",
			serve: func(s *fakeServer) {
				s.headers(1, true, ":status", "503", "content-type", "application/grpc")
			},
			events: []string{`1 end Unavailable: not a gRPC response: HTTP status 503, content-type "application/grpc"`},
		},
		{
			name: "HTTP 200 with an HTML content-type: the call ends Unknown",
			serve: func(s *fakeServer) {
				s.headers(1, false, ":status", "200", "content-type", "text/html")
				s.data(1, true, []byte("<html></html>"))
			},
			events: []string{`1 end Unknown: not a gRPC response: HTTP status 200, content-type "text/html"`},
		},
		{
			name: "a grpc-status that is not a number: the call ends Unknown",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.status(1, "OK", "")
			},
			events: []string{`1 end Unknown: malformed grpc-status "OK"`},
		},
		{
			name: "trailers without grpc-status: the call ends Internal",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage("serving"))
				s.headers(1, true, "grpc-message", "bye")
			},
			events: []string{`1 msg "serving"`, `1 end Internal: response ends without a status`},
		},
		{
			name: "END_STREAM on DATA with no trailers: the message, then Internal; the stream's window is not returned",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, true, grpcMessage("serving"))
			},
			events:  []string{`1 msg "serving"`, `1 end Internal: response ends without a status`},
			replies: []string{"WINDOW_UPDATE 0 +12"},
		},
		{
			name: "OK trailers while a message's length prefix promises more bytes: the call ends Internal",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage("serving")[:8])
				s.status(1, "0", "")
			},
			events: []string{`1 end Internal: response ends within a message`},
		},
		{
			name: "a length prefix cut short by END_STREAM: the call ends Internal",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, true, []byte{0, 0, 0})
			},
			events: []string{`1 end Internal: response ends without a status`},
		},

		// RST_STREAM.
		{
			name:   "RST_STREAM REFUSED_STREAM before any headers: the call ends Unavailable",
			serve:  func(s *fakeServer) { s.rst(1, http2.ErrCodeRefusedStream) },
			events: []string{`1 end Unavailable: stream reset: REFUSED_STREAM`},
		},
		{
			name: "RST_STREAM CANCEL in the middle of a message: the call ends Canceled, the partial message dropped",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage("serving")[:8])
				s.rst(1, http2.ErrCodeCancel)
			},
			events: []string{`1 end Canceled: stream reset: CANCEL`},
		},
		{
			name: "a whole message before RST_STREAM INTERNAL_ERROR still comes out, then Internal",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage("serving"))
				s.rst(1, http2.ErrCodeInternal)
			},
			events: []string{`1 msg "serving"`, `1 end Internal: stream reset: INTERNAL_ERROR`},
		},
		{
			name:   "RST_STREAM ENHANCE_YOUR_CALM: the call ends ResourceExhausted",
			serve:  func(s *fakeServer) { s.rst(1, http2.ErrCodeEnhanceYourCalm) },
			events: []string{`1 end ResourceExhausted: stream reset: ENHANCE_YOUR_CALM`},
		},
		{
			name:  "RST_STREAM of the Check leaves the Watch on the same connection running",
			calls: []string{methodWatch, methodCheck},
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.rst(3, http2.ErrCodeRefusedStream)
				s.data(1, false, grpcMessage("serving"))
				s.status(1, "0", "")
			},
			events: []string{`3 end Unavailable: stream reset: REFUSED_STREAM`, `1 msg "serving"`, `1 end OK`},
		},

		// GOAWAY.
		{
			name:   "GOAWAY before any response: next reports errGoAway",
			serve:  func(s *fakeServer) { s.goAway(0, http2.ErrCodeNo) },
			events: []string{"GOAWAY"},
		},
		{
			name: "GOAWAY after a whole message: the message comes out first, then errGoAway, though trailers follow",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage("serving"))
				s.goAway(1, http2.ErrCodeNo)
				s.status(1, "0", "")
			},
			events: []string{`1 msg "serving"`, "GOAWAY"},
		},
		{
			name:  "GOAWAY ENHANCE_YOUR_CALM with a Watch and a Check open: errGoAway for the connection",
			calls: []string{methodWatch, methodCheck},
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.goAway(3, http2.ErrCodeEnhanceYourCalm)
				s.status(1, "0", "")
			},
			events: []string{"GOAWAY"},
		},

		// Responses the connection cannot survive.
		{
			name: "a length prefix over 1 KiB: refused before the message arrives",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, []byte{0, 0, 0, 0x04, 0x01})
			},
			events: []string{"error: response message over 1024 bytes"},
		},
		{
			name: "a whole 1025-byte message in one DATA frame, within the window: refused",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, grpcMessage(strings.Repeat("x", maxMessage+1)))
			},
			events: []string{"error: response message over 1024 bytes"},
		},
		{
			name: "5000 bytes of empty messages in one DATA frame, beyond the granted window: refused",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, bytes.Repeat(grpcMessage(""), 1000))
			},
			events: []string{"error: response data beyond the flow-control window"},
		},
		{
			name: "a compressed message, though none was offered: refused",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, []byte{1, 0, 0, 0, 2, 'h', 'i'})
			},
			events: []string{"error: compressed response, though no compression was offered"},
		},
		{
			name:   "DATA before response headers: refused",
			serve:  func(s *fakeServer) { s.data(1, false, grpcMessage("serving")) },
			events: []string{"error: DATA before response headers"},
		},
		{
			name: "response headers over 8 KiB: refused",
			serve: func(s *fakeServer) {
				s.headers(1, false, ":status", "200", "content-type", "application/grpc",
					"x-a", strings.Repeat("a", 5000), "x-b", strings.Repeat("b", 5000))
			},
			events: []string{"error: response headers too large"},
		},
		{
			name:   "PUSH_PROMISE, though push is disabled: refused",
			serve:  func(s *fakeServer) { s.pushPromise(1, 2) },
			events: []string{"error: server pushed, though push is disabled"},
		},
		{
			name: "a frame over the 16 KiB the client reads: refused",
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.data(1, false, make([]byte, 16<<10+1))
			},
			events: []string{"error: http2: frame too large"},
		},

		// Time.
		{
			name:   "a server that answers nothing: errDue at next's deadline",
			serve:  func(s *fakeServer) {},
			events: []string{"due"},
		},
		{
			name:  "no answer to the Watch by the deadline: errDue, then a Check started on the same connection is answered",
			calls: []string{methodWatch},
			onDue: []string{methodCheck},
			serve: func(s *fakeServer) {
				s.grpcHeaders(3)
				s.data(3, false, grpcMessage("serving"))
				s.status(3, "0", "")
				s.trailersOnly(1, "12")
			},
			events: []string{"due", `3 msg "serving"`, `3 end OK`, `1 end Unimplemented`},
		},
		{
			name:   "half a frame header, then silence: the frame's timeout, not errDue, which never cuts a frame in half",
			serve:  func(s *fakeServer) { s.raw([]byte{0, 0, 12, 0}) },
			events: []string{"timeout"},
		},

		// Connection control.
		{
			name: "the server's SETTINGS is acknowledged, its ack of ours is not answered",
			serve: func(s *fakeServer) {
				s.settings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
				s.settingsAck()
				s.trailersOnly(1, "0")
			},
			events:  []string{`1 end OK`},
			replies: []string{"SETTINGS ack"},
		},
		{
			name: "a PING is answered with its data, a PING ack is not answered",
			serve: func(s *fakeServer) {
				s.ping(false, pingData)
				s.ping(true, [8]byte{9})
				s.trailersOnly(1, "0")
			},
			events:  []string{`1 end OK`},
			replies: []string{"PING ack 0102030405060708"},
		},
		{
			name: "WINDOW_UPDATE and an unknown frame type from the server: ignored, nothing written back",
			serve: func(s *fakeServer) {
				s.windowUpdate(0, 1<<20)
				s.windowUpdate(1, 1<<20)
				s.unknownFrame(0xfa, 1)
				s.trailersOnly(1, "0")
			},
			events:  []string{`1 end OK`},
			replies: []string{},
		},
		{
			name: "DATA on a stream the client never opened: ignored, its bytes returned on the connection",
			serve: func(s *fakeServer) {
				s.data(5, false, grpcMessage("serving"))
				s.trailersOnly(1, "0")
			},
			events:  []string{`1 end OK`},
			replies: []string{"WINDOW_UPDATE 0 +12"},
		},
		{
			name:  "a Watch and a Check answered on one connection, interleaved: each event carries its call's id",
			calls: []string{methodWatch, methodCheck},
			serve: func(s *fakeServer) {
				s.grpcHeaders(1)
				s.grpcHeaders(3)
				s.data(3, false, grpcMessage("check: serving"))
				s.data(1, false, grpcMessage("watch: serving"))
				s.status(3, "0", "")
				s.data(1, false, grpcMessage("watch: not serving"))
				s.status(1, "0", "")
			},
			events: []string{
				`3 msg "check: serving"`, `1 msg "watch: serving"`, `3 end OK`,
				`1 msg "watch: not serving"`, `1 end OK`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				calls := tt.calls
				if calls == nil {
					calls = []string{methodCheck}
				}
				got := exchange(t, calls, tt.onDue, tt.serve)
				if !slices.Equal(got.events, tt.events) {
					t.Errorf("events:\n got  %q\n want %q", got.events, tt.events)
				}
				if tt.replies != nil && !slices.Equal(got.replies, tt.replies) {
					t.Errorf("client wrote while reading:\n got  %q\n want %q", got.replies, tt.replies)
				}
			})
		})
	}
}

func TestGRPCConnOpensWithItsSettingsAndSendsOneMessagePerCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := exchange(t, []string{methodWatch, methodCheck}, nil, func(s *fakeServer) {
			s.trailersOnly(3, "0")
			s.trailersOnly(1, "0")
		})
		want := []string{
			"SETTINGS HEADER_TABLE_SIZE=0 ENABLE_PUSH=0 INITIAL_WINDOW_SIZE=2048 MAX_HEADER_LIST_SIZE=8192",
			"HEADERS 1 :method=POST :scheme=http :path=/grpc.health.v1.Health/Watch :authority=backend:8080" +
				" content-type=application/grpc te=trailers user-agent=nodexds-health",
			`DATA 1 END_STREAM "\x00\x00\x00\x00\x04ping"`,
			"HEADERS 3 :method=POST :scheme=http :path=/grpc.health.v1.Health/Check :authority=backend:8080" +
				" content-type=application/grpc te=trailers user-agent=nodexds-health grpc-timeout=10000m",
			`DATA 3 END_STREAM "\x00\x00\x00\x00\x04ping"`,
		}
		if !slices.Equal(got.request, want) {
			t.Errorf("client wrote before the response:\n got  %q\n want %q", got.request, want)
		}
		if want := []string{"3 end OK", "1 end OK"}; !slices.Equal(got.events, want) {
			t.Errorf("events: got %q, want %q", got.events, want)
		}
	})
}

// transcript is one exchange between a grpcConn and a fakeServer, one line
// per event or frame.
type transcript struct {
	request []string // frames the client wrote up to its last request's END_STREAM
	replies []string // frames the client wrote after that, while reading
	events  []string // what next returned, ending with its error if it failed
}

// exchange starts calls (methods, in order) on a grpcConn over net.Pipe whose
// other end is a fakeServer, and calls next until every call has ended or
// next fails. When next reports errDue, it starts the next of onDue instead of
// stopping, as check.go starts a Check when one is due. serve writes the
// response once the server has read every request, onDue's included. Call it
// inside a synctest bubble.
func exchange(t *testing.T, calls, onDue []string, serve func(*fakeServer)) transcript {
	t.Helper()
	cli, srv := net.Pipe()
	s := &fakeServer{
		conn:      srv,
		w:         http2.NewFramer(srv, nil),
		calls:     len(calls) + len(onDue),
		requested: make(chan struct{}),
		readDone:  make(chan struct{}),
		writeDone: make(chan struct{}),
	}
	s.enc = hpack.NewEncoder(&s.block)
	// The client asks for no dynamic table; a server honours that by
	// announcing size 0 and indexing nothing.
	s.enc.SetMaxDynamicTableSizeLimit(0)
	finish := func() {
		cli.Close() // ends the server's read, and any write the client will not read
		<-s.readDone
		<-s.writeDone
		srv.Close()
	}
	t.Cleanup(finish) // for a Fatal; closing twice is harmless
	go s.read(t)
	go func() {
		defer close(s.writeDone)
		select {
		case <-s.requested:
			serve(s)
		case <-s.readDone:
		}
	}()

	g, err := newGRPCConn(cli, "backend:8080", testConnTimeout)
	if err != nil {
		t.Fatalf("newGRPCConn: %v", err)
	}
	start := func(method string) {
		var timeout time.Duration
		if method == methodCheck {
			timeout = testCheckWithin
		}
		if _, err := g.start(method, []byte("ping"), timeout); err != nil {
			t.Fatalf("start %s: %v", method, err)
		}
	}
	for _, m := range calls {
		start(m)
	}
	var tr transcript
	deadline := time.Now().Add(testNextWithin)
	for open := len(calls); open > 0; {
		ev, err := g.next(deadline)
		if err != nil {
			tr.events = append(tr.events, describeError(err))
			if !errors.Is(err, errDue) || len(onDue) == 0 {
				break
			}
			start(onDue[0])
			onDue, open, deadline = onDue[1:], open+1, time.Now().Add(testNextWithin)
			continue
		}
		tr.events = append(tr.events, describeEvent(ev))
		if ev.end {
			open--
		}
	}
	finish()
	if s.err != nil && !errors.Is(s.err, io.ErrClosedPipe) {
		t.Errorf("server write: %v", s.err)
	}
	tr.request, tr.replies = s.got[:s.mark], s.got[s.mark:]
	return tr
}

// fakeServer is the server end of a net.Pipe. Its write methods are for
// serve scripts; after the first failed write they do nothing.
type fakeServer struct {
	conn  net.Conn
	w     *http2.Framer // writes only; read has a Framer of its own
	enc   *hpack.Encoder
	block bytes.Buffer // enc's output: one header block
	calls int          // requests to read before serving
	err   error

	got       []string // every frame the client wrote, described
	mark      int      // len(got) when the last request ended
	requested chan struct{}
	readDone  chan struct{}
	writeDone chan struct{}
}

// read checks the client preface and records the client's frames until the
// client end closes.
func (s *fakeServer) read(t *testing.T) {
	defer close(s.readDone)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(s.conn, preface); err != nil || string(preface) != http2.ClientPreface {
		t.Errorf("client preface: %q, %v", preface, err)
		return
	}
	fr := http2.NewFramer(nil, s.conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	ended := 0
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				t.Errorf("server read: %v", err)
			}
			return
		}
		s.got = append(s.got, describeFrame(f))
		if d, ok := f.(*http2.DataFrame); ok && d.StreamEnded() {
			if ended++; ended == s.calls {
				s.mark = len(s.got)
				close(s.requested)
			}
		}
	}
}

func (s *fakeServer) write(fn func() error) {
	if s.err == nil {
		s.err = fn()
	}
}

// headers writes one HEADERS frame of the fields in kv (name, value, ...).
func (s *fakeServer) headers(stream uint32, endStream bool, kv ...string) {
	s.block.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		s.write(func() error { return s.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]}) })
	}
	s.write(func() error {
		return s.w.WriteHeaders(http2.HeadersFrameParam{
			StreamID: stream, BlockFragment: s.block.Bytes(), EndStream: endStream, EndHeaders: true,
		})
	})
}

// grpcHeaders writes the response headers of a gRPC server.
func (s *fakeServer) grpcHeaders(stream uint32) {
	s.headers(stream, false, ":status", "200", "content-type", "application/grpc")
}

// status writes trailers: grpc-status, and grpc-message if not empty.
func (s *fakeServer) status(stream uint32, code, message string) {
	kv := []string{"grpc-status", code}
	if message != "" {
		kv = append(kv, "grpc-message", message)
	}
	s.headers(stream, true, kv...)
}

// trailersOnly writes a response that is only a status: one HEADERS frame.
func (s *fakeServer) trailersOnly(stream uint32, code string) {
	s.headers(stream, true, ":status", "200", "content-type", "application/grpc", "grpc-status", code)
}

func (s *fakeServer) data(stream uint32, endStream bool, b []byte) {
	s.write(func() error { return s.w.WriteData(stream, endStream, b) })
}

func (s *fakeServer) paddedData(stream uint32, b []byte, padding int) {
	s.write(func() error { return s.w.WriteDataPadded(stream, false, b, make([]byte, padding)) })
}

func (s *fakeServer) rst(stream uint32, code http2.ErrCode) {
	s.write(func() error { return s.w.WriteRSTStream(stream, code) })
}

func (s *fakeServer) goAway(lastStream uint32, code http2.ErrCode) {
	s.write(func() error { return s.w.WriteGoAway(lastStream, code, nil) })
}

func (s *fakeServer) settings(settings ...http2.Setting) {
	s.write(func() error { return s.w.WriteSettings(settings...) })
}

func (s *fakeServer) settingsAck() {
	s.write(s.w.WriteSettingsAck)
}

func (s *fakeServer) ping(ack bool, data [8]byte) {
	s.write(func() error { return s.w.WritePing(ack, data) })
}

func (s *fakeServer) windowUpdate(stream, n uint32) {
	s.write(func() error { return s.w.WriteWindowUpdate(stream, n) })
}

func (s *fakeServer) unknownFrame(typ http2.FrameType, stream uint32) {
	s.write(func() error { return s.w.WriteRawFrame(typ, 0, stream, []byte("?")) })
}

func (s *fakeServer) pushPromise(stream, promised uint32) {
	s.block.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/"}} {
		s.write(func() error { return s.enc.WriteField(f) })
	}
	s.write(func() error {
		return s.w.WritePushPromise(http2.PushPromiseParam{StreamID: stream, PromiseID: promised, BlockFragment: s.block.Bytes(), EndHeaders: true})
	})
}

// raw writes bytes that need not be whole frames.
func (s *fakeServer) raw(b []byte) {
	s.write(func() error { _, err := s.conn.Write(b); return err })
}

// grpcMessage is m with gRPC's length prefix, uncompressed.
func grpcMessage(m string) []byte {
	b := make([]byte, 5+len(m))
	binary.BigEndian.PutUint32(b[1:5], uint32(len(m)))
	copy(b[5:], m)
	return b
}

func describeEvent(ev event) string {
	switch {
	case !ev.end:
		return fmt.Sprintf("%d msg %q", ev.id, ev.msg)
	case ev.detail == "":
		return fmt.Sprintf("%d end %v", ev.id, ev.code)
	}
	return fmt.Sprintf("%d end %v: %s", ev.id, ev.code, ev.detail)
}

// describeError names the errors check.go tells apart.
func describeError(err error) string {
	switch {
	case errors.Is(err, errGoAway):
		return "GOAWAY"
	case errors.Is(err, errDue):
		return "due"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "error: " + err.Error()
}

func describeFrame(f http2.Frame) string {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return "SETTINGS ack"
		}
		line := "SETTINGS"
		for i := range f.NumSettings() {
			line += fmt.Sprintf(" %v=%d", f.Setting(i).ID, f.Setting(i).Val)
		}
		return line
	case *http2.PingFrame:
		if f.IsAck() {
			return fmt.Sprintf("PING ack %x", f.Data)
		}
		return fmt.Sprintf("PING %x", f.Data)
	case *http2.WindowUpdateFrame:
		return fmt.Sprintf("WINDOW_UPDATE %d +%d", f.StreamID, f.Increment)
	case *http2.MetaHeadersFrame:
		line := fmt.Sprintf("HEADERS %d", f.StreamID)
		for _, hf := range f.Fields {
			line += " " + hf.Name + "=" + hf.Value
		}
		if f.StreamEnded() {
			line += " END_STREAM"
		}
		return line
	case *http2.DataFrame:
		end := ""
		if f.StreamEnded() {
			end = " END_STREAM"
		}
		return fmt.Sprintf("DATA %d%s %q", f.StreamID, end, f.Data())
	}
	h := f.Header()
	return fmt.Sprintf("%v %d", h.Type, h.StreamID)
}
