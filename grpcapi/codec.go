package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/acme/orders-service"
)

// grpc-go answers INTERNAL to any request it cannot decode, but a string
// field holding invalid UTF-8 is a bad request: the codec below records such
// requests and the interceptor answers them INVALID_ARGUMENT naming the field.

// badUTF8 maps a request message to the names of its invalid string fields
// between decoding and the interceptor.
var badUTF8 sync.Map

type utf8Codec struct{ encoding.CodecV2 }

func newUTF8Codec() encoding.CodecV2 {
	return utf8Codec{encoding.GetCodecV2(protoenc.Name)}
}

func (c utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	var u interface{ InvalidUTF8() bool }
	if err == nil || !errors.As(err, &u) {
		return err
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	fields := invalidUTF8Fields(m.ProtoReflect().Descriptor(), data.Materialize())
	if len(fields) == 0 {
		return err
	}
	badUTF8.Store(v, fields)
	return nil
}

// invalidUTF8Fields walks the top-level fields of the encoded message b and
// returns the names of string fields that are not valid UTF-8.
func invalidUTF8Fields(md protoreflect.MessageDescriptor, b []byte) []string {
	var names []string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return names
		}
		b = b[n:]
		if typ == protowire.BytesType {
			if fd := md.Fields().ByNumber(num); fd != nil && fd.Kind() == protoreflect.StringKind {
				v, m := protowire.ConsumeBytes(b)
				if m >= 0 && !utf8.Valid(v) {
					names = append(names, string(fd.Name()))
				}
			}
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return names
		}
		b = b[n:]
	}
	return names
}

// rejectInvalidUTF8 answers INVALID_ARGUMENT to requests the codec marked.
func rejectInvalidUTF8(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if fields, ok := badUTF8.LoadAndDelete(req); ok {
			var v orders.Violations
			for _, f := range fields.([]string) {
				v.Add(f, "must be valid UTF-8")
			}
			return nil, toStatus(ctx, log, v.Err())
		}
		return handler(ctx, req)
	}
}
