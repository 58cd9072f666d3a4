package grpcapi

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/gen/orderspb"
)

func statusToProto(s orders.Status) orderspb.OrderStatus {
	switch s {
	case orders.StatusNew:
		return orderspb.OrderStatus_ORDER_STATUS_NEW
	case orders.StatusFinished:
		return orderspb.OrderStatus_ORDER_STATUS_FINISHED
	case orders.StatusCancelled:
		return orderspb.OrderStatus_ORDER_STATUS_CANCELLED
	}
	return orderspb.OrderStatus_ORDER_STATUS_UNSPECIFIED
}

func orderToProto(o *orders.Order) *orderspb.Order {
	return &orderspb.Order{
		Id:          o.ID,
		UserId:      o.UserID,
		Amount:      o.Amount,
		Currency:    o.Currency,
		Description: o.Description,
		Status:      statusToProto(o.Status),
		CreatedAt:   timestamppb.New(o.CreatedAt),
		UpdatedAt:   timestamppb.New(o.UpdatedAt),
	}
}
