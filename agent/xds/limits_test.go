package xds

import (
	"testing"

	"google.golang.org/grpc/codes"
)

// Names are bounded in all, not only per address: many addresses would
// otherwise multiply MaxNamesPerPeer (issue 11, attack a over 25 addresses).
func TestNamesBeyondTheTotalEndTheStreamThatAddsThem(t *testing.T) {
	s := startServerWith(t, Options{Limits: Limits{MaxNames: 3}}, "a", "b", "c", "d")
	first := dial(t, s)
	first.request("a", "b")
	first.expect("a", "b")

	second := dial(t, s)
	second.request("c", "d") // 4 in all
	second.expectEnd(codes.ResourceExhausted, "more than 3 names in all")

	third := dial(t, s)
	third.request("c") // 3 in all: the refused stream's names were never counted
	third.expect("c")
}
