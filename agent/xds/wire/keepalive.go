package wire

import (
	"errors"
	"time"
)

// ping answers a client's PING, and ends a connection that pings too often
// while nothing is sent to it, as gRPC servers' enforcement policy does
// (three strikes).
func (c *conn) ping(h frameHeader, p []byte) error {
	if h.stream != 0 {
		return protocolError("PING on a stream")
	}
	if len(p) != 8 {
		return connError{errFrameSize, "PING of a wrong size"}
	}
	if h.flags&flagAck != 0 {
		return nil // keepalive's: reading it was enough
	}
	now := time.Now()
	if c.sentData.Swap(false) {
		c.strikes = 0
	} else if now.Sub(c.lastPing) < c.cfg.MinPingInterval {
		c.strikes++
	}
	c.lastPing = now
	if c.strikes > 2 {
		return connError{errEnhanceCalm, "too_many_pings"}
	}
	b := appendHeader(make([]byte, 0, headerLen+8), 8, framePing, flagAck, 0)
	return c.write(append(b, p...))
}

// startKeepalive pings a connection that has sent nothing for
// KeepaliveTime, and closes it if nothing comes within KeepaliveTimeout,
// looking as often as gRPC-Go's server does.
func (c *conn) startKeepalive() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.ka = time.AfterFunc(c.cfg.KeepaliveTime, c.keepalive)
	}
}

// keepalive is the timer's: only one runs at a time (each resets the timer
// last), so the ka* fields are its own.
func (c *conn) keepalive() {
	c.mu.Lock()
	t, closed := c.ka, c.closed
	c.mu.Unlock()
	if closed {
		return
	}
	if last := c.lastRead.Load(); last > c.kaSeen { // read since we last looked
		c.kaSeen, c.kaPinged = last, false
		t.Reset(time.Until(time.Unix(0, last).Add(c.cfg.KeepaliveTime)))
		return
	}
	if c.kaPinged && c.kaLeft <= 0 {
		c.close(errors.New("keepalive: no answer to a ping"))
		return
	}
	if !c.kaPinged {
		if c.write(append(appendHeader(nil, 8, framePing, 0, 0), make([]byte, 8)...)) != nil {
			return
		}
		c.kaPinged, c.kaLeft = true, c.cfg.KeepaliveTimeout
	}
	d := min(c.cfg.KeepaliveTime, c.kaLeft)
	c.kaLeft -= d
	t.Reset(d)
}
