package grpcapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/acme/orders-service"
)

// codeOf is the one place where domain error kinds become gRPC codes.
var codeOf = map[orders.Code]codes.Code{
	orders.EINVALID:      codes.InvalidArgument,
	orders.ENOTFOUND:     codes.NotFound,
	orders.ECONFLICT:     codes.FailedPrecondition,
	orders.EEXISTS:       codes.AlreadyExists,
	orders.EUNAUTHORIZED: codes.Unauthenticated,
	orders.EFORBIDDEN:    codes.PermissionDenied,
	orders.ELIMIT:        codes.ResourceExhausted,
	orders.EUNAVAILABLE:  codes.Unavailable,
	orders.EINTERNAL:     codes.Internal,
}

// toStatus translates err into a gRPC status error. Invalid requests carry a
// google.rpc.BadRequest naming each bad field; internal errors are logged
// and answered without their details.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	code := orders.ErrorCode(err)
	grpcCode, ok := codeOf[code]
	if !ok {
		grpcCode = codes.Internal
	}
	switch grpcCode {
	case codes.Internal:
		log.ErrorContext(ctx, "request failed", "error", err)
	case codes.Unavailable:
		log.WarnContext(ctx, "dependency unavailable", "error", err)
	}
	st := status.New(grpcCode, orders.ErrorMessage(err))
	var de *orders.Error
	if errors.As(err, &de) && len(de.Fields) > 0 {
		br := &errdetails.BadRequest{}
		for _, f := range de.Fields {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
				Field: f.Field, Description: f.Description,
			})
		}
		if withDetails, err := st.WithDetails(br); err == nil {
			st = withDetails
		}
	}
	return st.Err()
}
