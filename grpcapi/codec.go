package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/gen/orderspb"
)

// grpc-go answers INTERNAL to any request it cannot decode, before any
// interceptor runs, but a string field of an OrderService request holding
// invalid UTF-8 is a bad request. For those requests only, the codec below
// drops the invalid fields, decodes the rest and records the dropped field
// numbers in the request's own unknown fields (under invalidUTF8Marker);
// rejectInvalidUTF8 then answers INVALID_ARGUMENT naming the fields, after
// authentication. The record lives and dies with the request message. Every
// other message (health, reflection) that fails to decode is an error, so
// no handler ever sees a half-decoded message.

// invalidUTF8Marker is the field number, unused by any request, under which
// the codec records the numbers of dropped string fields as packed varints.
const invalidUTF8Marker = protowire.MaxValidNumber

// lenientRequests are the request types whose invalid UTF-8 fields are
// reported to the client as INVALID_ARGUMENT rather than INTERNAL.
var lenientRequests = func() map[protoreflect.FullName]bool {
	m := map[protoreflect.FullName]bool{}
	methods := orderspb.File_orders_v1_orders_proto.Services().ByName("OrderService").Methods()
	for i := range methods.Len() {
		m[methods.Get(i).Input().FullName()] = true
	}
	return m
}()

type utf8Codec struct{ encoding.CodecV2 }

func newUTF8Codec() encoding.CodecV2 {
	return utf8Codec{encoding.GetCodecV2(protoenc.Name)}
}

func (c utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if !ok || !lenientRequests[m.ProtoReflect().Descriptor().FullName()] {
		return err
	}
	if err == nil {
		dropMarker(m.ProtoReflect())
		return nil
	}
	var u interface{ InvalidUTF8() bool }
	if !errors.As(err, &u) {
		return err
	}
	clean, bad := dropInvalidUTF8(m.ProtoReflect().Descriptor(), data.Materialize())
	if len(bad) == 0 {
		return err
	}
	var nums []byte
	for _, n := range bad {
		nums = protowire.AppendVarint(nums, uint64(n))
	}
	clean = protowire.AppendTag(clean, invalidUTF8Marker, protowire.BytesType)
	clean = protowire.AppendBytes(clean, nums)
	proto.Reset(m)
	return proto.Unmarshal(clean, m)
}

// dropInvalidUTF8 returns the encoded message b without its top-level string
// fields that are not valid UTF-8 (and without any invalidUTF8Marker field a
// client sent), and the numbers of the dropped string fields.
func dropInvalidUTF8(md protoreflect.MessageDescriptor, b []byte) (clean []byte, bad []protowire.Number) {
	clean = make([]byte, 0, len(b))
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return clean, nil
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return clean, nil
		}
		field := b[:n+m]
		b = b[n+m:]
		if num == invalidUTF8Marker {
			continue
		}
		if typ == protowire.BytesType {
			if fd := md.Fields().ByNumber(num); fd != nil && fd.Kind() == protoreflect.StringKind {
				if v, _ := protowire.ConsumeBytes(field[n:]); !utf8.Valid(v) {
					bad = append(bad, num)
					continue
				}
			}
		}
		clean = append(clean, field...)
	}
	return clean, bad
}

// dropMarker removes an invalidUTF8Marker field a client sent itself.
func dropMarker(m protoreflect.Message) {
	u := m.GetUnknown()
	if len(u) == 0 {
		return
	}
	if _, found := markedFields(u); found {
		kept := make([]byte, 0, len(u))
		for len(u) > 0 {
			num, typ, n := protowire.ConsumeTag(u)
			l := protowire.ConsumeFieldValue(num, typ, u[max(n, 0):])
			if n < 0 || l < 0 {
				break
			}
			if num != invalidUTF8Marker {
				kept = append(kept, u[:n+l]...)
			}
			u = u[n+l:]
		}
		m.SetUnknown(kept)
	}
}

// markedFields returns the field numbers recorded under invalidUTF8Marker in
// the unknown fields u, and whether the marker is present.
func markedFields(u protoreflect.RawFields) ([]protowire.Number, bool) {
	var nums []protowire.Number
	found := false
	for len(u) > 0 {
		num, typ, n := protowire.ConsumeTag(u)
		if n < 0 {
			break
		}
		u = u[n:]
		if num == invalidUTF8Marker && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(u)
			if m < 0 {
				break
			}
			found = true
			for len(v) > 0 {
				x, k := protowire.ConsumeVarint(v)
				if k < 0 {
					break
				}
				nums = append(nums, protowire.Number(x))
				v = v[k:]
			}
		}
		m := protowire.ConsumeFieldValue(num, typ, u)
		if m < 0 {
			break
		}
		u = u[m:]
	}
	return nums, found
}

// rejectInvalidUTF8 answers INVALID_ARGUMENT to requests the codec marked,
// naming each field that was not valid UTF-8.
func rejectInvalidUTF8(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		m, ok := req.(proto.Message)
		if !ok {
			return handler(ctx, req)
		}
		r := m.ProtoReflect()
		nums, found := markedFields(r.GetUnknown())
		if !found {
			return handler(ctx, req)
		}
		var v orders.Violations
		for _, n := range nums {
			if fd := r.Descriptor().Fields().ByNumber(n); fd != nil {
				v.Add(string(fd.Name()), "must be valid UTF-8")
			}
		}
		if len(v) == 0 {
			v.Add("request", "must be valid UTF-8")
		}
		return nil, toStatus(ctx, log, v.Err())
	}
}
