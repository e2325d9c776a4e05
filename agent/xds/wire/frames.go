package wire

import (
	"encoding/binary"
	"strconv"
)

// HTTP/2 frame types and flags (RFC 9113 §6), the ones this server reads or
// writes.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// Settings (RFC 9113 §6.5.2) and error codes (§7).
const (
	settingHeaderTableSize   = 0x1
	settingMaxConcurrent     = 0x3
	settingInitialWindowSize = 0x4
	settingMaxFrameSize      = 0x5
	settingMaxHeaderListSize = 0x6

	errNo            = 0x0
	errProtocol      = 0x1
	errFlowControl   = 0x3
	errStreamClosed  = 0x5
	errFrameSize     = 0x6
	errRefusedStream = 0x7
	errCompression   = 0x9
	errEnhanceCalm   = 0xb
)

const (
	preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	// headerLen is a frame header's size.
	headerLen = 9
	// maxFrame is the largest frame payload a client may send: HTTP/2's
	// default, which this server never raises.
	maxFrame = 16384
	// window is every flow-control window this server grants: HTTP/2's
	// initial 65,535 bytes, per stream and per connection, never grown.
	window = 65535
	// maxHeaderList bounds a request's header fields (names, values and 32
	// bytes each, as SETTINGS_MAX_HEADER_LIST_SIZE counts them), and
	// maxHeaderBlock its encoded block with CONTINUATIONs.
	maxHeaderList  = 16 << 10
	maxHeaderBlock = 64 << 10
)

type frameHeader struct {
	length uint32
	typ    byte
	flags  byte
	stream uint32
}

func parseHeader(b []byte) frameHeader {
	return frameHeader{
		length: uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:    b[3],
		flags:  b[4],
		stream: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1),
	}
}

func appendHeader(b []byte, length int, typ, flags byte, stream uint32) []byte {
	b = append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags)
	return binary.BigEndian.AppendUint32(b, stream)
}

func appendWindowUpdate(b []byte, stream uint32, n uint32) []byte {
	b = appendHeader(b, 4, frameWindowUpdate, 0, stream)
	return binary.BigEndian.AppendUint32(b, n)
}

func appendRST(b []byte, stream, code uint32) []byte {
	b = appendHeader(b, 4, frameRSTStream, 0, stream)
	return binary.BigEndian.AppendUint32(b, code)
}

func appendGoAway(b []byte, last, code uint32, debug string) []byte {
	b = appendHeader(b, 8+len(debug), frameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last)
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, debug...)
}

// serverSettings is the server's first frame.
func serverSettings(maxStreams int) []byte {
	b := appendHeader(nil, 18, frameSettings, 0, 0)
	for _, s := range [][2]uint32{
		{settingMaxConcurrent, uint32(maxStreams)},
		{settingMaxHeaderListSize, maxHeaderList},
		{settingHeaderTableSize, 4096},
	} {
		b = binary.BigEndian.AppendUint16(b, uint16(s[0]))
		b = binary.BigEndian.AppendUint32(b, s[1])
	}
	return b
}

// HPACK (RFC 7541) for the few header fields this server sends: an indexed
// static entry or literals never added to a dynamic table, so a connection
// keeps no encoder state.

// appendInt appends v as an HPACK integer with an n-bit prefix, the prefix
// byte's other bits being first.
func appendInt(b []byte, first byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	for v -= max; v >= 128; v >>= 7 {
		b = append(b, byte(v&0x7f)|0x80)
	}
	return append(b, byte(v))
}

func appendString(b []byte, s string) []byte {
	return append(appendInt(b, 0, 7, uint64(len(s))), s...)
}

// appendField appends a literal field without indexing, its name by its
// static table index (nameIndex > 0) or literal.
func appendField(b []byte, nameIndex uint64, name, value string) []byte {
	b = appendInt(b, 0, 4, nameIndex)
	if nameIndex == 0 {
		b = appendString(b, name)
	}
	return appendString(b, value)
}

// responseHeaders are a response's headers: :status 200 (static entry 8)
// and content-type (static name 31).
var responseHeaders = appendField([]byte{0x88}, 31, "", "application/grpc")

// appendTrailers appends the fields that end a response.
func appendTrailers(b []byte, code uint32, msg string) []byte {
	b = appendField(b, 0, "grpc-status", strconv.FormatUint(uint64(code), 10))
	if msg != "" {
		b = appendField(b, 0, "grpc-message", encodeMessage(msg))
	}
	return b
}

// encodeMessage percent-encodes a status message as gRPC's protocol says:
// bytes outside printable ASCII, and '%'.
func encodeMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(msg)+16)
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}
