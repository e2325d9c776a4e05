//go:build race

package agent_test

// raceEnabled: the race detector slows the agent several times; attacks
// shrink to keep the suite short.
const raceEnabled = true
