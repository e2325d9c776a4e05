package xds

import (
	"errors"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

// decodeRequest decodes a DiscoveryRequest straight into what compact keeps
// of it: the Node's metadata other than MetadataNodeName, and every field
// the server does not read, are skipped on the wire rather than built and
// thrown away. A request's cost is then its wire bytes while it arrives,
// and not three times that (a decoded message and its garbage): a megabyte
// of node metadata costs the agent nothing once read. What it decodes is
// compact's input made smaller, never different: compact still runs after
// it, and clips what it keeps (names over maxNameLen are kept to
// maxNameLen+1 bytes, so that compact drops and counts them).

var errWire = errors.New("invalid DiscoveryRequest wire format")

// wireFields calls f with each field of the message in b (its value's bytes
// for length-delimited fields, nil otherwise; varints in n) until f fails.
func wireFields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return errWire
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return errWire
		}
		b = b[l:]
		if err := f(num, typ, v, n); err != nil {
			return err
		}
	}
	return nil
}

// bytesFields calls f with each length-delimited field of the message in b
// (strings, bytes and messages: all the decoder reads but varints).
func bytesFields(b []byte, f func(num protowire.Number, v []byte) error) error {
	return wireFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		return f(num, v)
	})
}

var errUTF8 = errors.New("string field contains invalid UTF-8")

// text is a string field the server reads, whole: compact clips it, and a
// string clipped twice would not say how long it was. Like the proto codec,
// it refuses invalid UTF-8.
func text(v []byte) (string, error) {
	if !utf8.Valid(v) {
		return "", errUTF8
	}
	return string(v), nil
}

func decodeRequest(b []byte, req *discoveryv3.DiscoveryRequest) error {
	return bytesFields(b, func(num protowire.Number, v []byte) (err error) {
		switch num {
		case 1:
			req.VersionInfo, err = text(v)
		case 2:
			err = decodeNode(v, orNew(&req.Node))
		case 3:
			if !utf8.Valid(v) {
				return errUTF8
			}
			// A name over the bound is cut just past it: compact drops it.
			req.ResourceNames = append(req.ResourceNames, string(v[:min(len(v), maxNameLen+1)]))
		case 4:
			req.TypeUrl, err = text(v)
		case 5:
			req.ResponseNonce, err = text(v)
		case 6:
			err = decodeStatus(v, orNew(&req.ErrorDetail))
		}
		return err
	})
}

// orNew returns *p, first setting it to a new T if nil: a repeated message
// field merges into the one decoded before, as the proto codec does.
func orNew[T any](p **T) *T {
	if *p == nil {
		*p = new(T)
	}
	return *p
}

// decodeNode decodes the Node fields trimNode keeps.
func decodeNode(b []byte, n *corev3.Node) error {
	return bytesFields(b, func(num protowire.Number, v []byte) (err error) {
		switch num {
		case 1:
			n.Id, err = text(v)
		case 2:
			n.Cluster, err = text(v)
		case 3:
			n.Metadata, err = keptMetadata(v, n.Metadata)
		case 4:
			l := orNew(&n.Locality)
			err = bytesFields(v, func(num protowire.Number, v []byte) (err error) {
				switch num {
				case 1:
					l.Region, err = text(v)
				case 2:
					l.Zone, err = text(v)
				case 3:
					l.SubZone, err = text(v)
				}
				return err
			})
		case 6:
			n.UserAgentName, err = text(v)
		case 7:
			var s string
			s, err = text(v)
			n.UserAgentVersionType = &corev3.Node_UserAgentVersion{UserAgentVersion: s}
		}
		return err
	})
}

// keptMetadata adds the string values of the kept keys (keptMetadataKeys)
// in a Struct to kept, the last of each winning as the proto codec would
// keep it, and skips every other entry.
func keptMetadata(b []byte, kept *structpb.Struct) (*structpb.Struct, error) {
	err := wireFields(b, func(num protowire.Number, typ protowire.Type, entry []byte, _ uint64) error {
		if num != 1 || typ != protowire.BytesType {
			return nil
		}
		var key, value []byte
		if err := bytesFields(entry, func(num protowire.Number, v []byte) error {
			switch num {
			case 1:
				key = v
			case 2:
				value = v
			}
			return nil
		}); err != nil {
			return err
		}
		k := keptMetadataKey(key)
		if k == "" {
			return nil
		}
		if kept != nil {
			delete(kept.Fields, k)
		}
		return wireFields(value, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
			if num < 1 || num > 6 { // not one of Value's kinds
				return nil
			}
			if num != 3 || typ != protowire.BytesType { // another kind than string_value
				if kept != nil {
					delete(kept.Fields, k)
				}
				return nil
			}
			s, err := text(v)
			if err != nil {
				return err
			}
			if kept == nil {
				kept = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			}
			kept.Fields[k] = structpb.NewStringValue(s)
			return nil
		})
	})
	if kept != nil && len(kept.Fields) == 0 {
		kept = nil
	}
	return kept, err
}

// keptMetadataKey returns key as one of keptMetadataKeys, "" if it is none.
func keptMetadataKey(key []byte) string {
	for _, k := range keptMetadataKeys {
		if string(key) == k {
			return k
		}
	}
	return ""
}

// decodeStatus decodes a NACK's error detail: its code and message.
func decodeStatus(b []byte, s *status.Status) error {
	return wireFields(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		var err error
		switch {
		case num == 1 && typ == protowire.VarintType:
			s.Code = int32(n)
		case num == 2 && typ == protowire.BytesType:
			s.Message, err = text(v)
		}
		return err
	})
}
