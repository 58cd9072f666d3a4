// Package grpcapi serves the orders.v1.OrderService gRPC API: it validates
// requests, calls the business logic and translates domain errors into gRPC
// status codes (in errors.go, the only place that does).
package grpcapi

import (
	"context"
	"log/slog"
	"strings"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/pagetoken"
)

// OrderService is the business logic the API serves; postgres.OrderService
// implements it.
type OrderService interface {
	CreateOrder(ctx context.Context, n orders.NewOrder) (*orders.Order, error)
	GetOrders(ctx context.Context, userID string, limit int, after *orders.Cursor) ([]*orders.Order, *orders.Cursor, error)
	GetOrderStatus(ctx context.Context, id string) (status orders.Status, userID string, err error)
	MarkOrderFinished(ctx context.Context, id string) (*orders.Order, error)
}

// Handler implements orderspb.OrderServiceServer: the OrderService API
// behind the transport NewServer builds.
type Handler struct {
	orderspb.UnimplementedOrderServiceServer
	orders  OrderService
	pageKey []byte
	log     *slog.Logger
}

// NewHandler returns the API over svc; pageKey signs page tokens and must be
// the same on every replica.
func NewHandler(svc OrderService, pageKey []byte, log *slog.Logger) *Handler {
	return &Handler{orders: svc, pageKey: pageKey, log: log}
}

// CreateOrder implements orderspb.OrderServiceServer.
func (s *Handler) CreateOrder(ctx context.Context, req *orderspb.CreateOrderRequest) (*orderspb.CreateOrderResponse, error) {
	userID, err := auth.ResolveUser(ctx, req.GetUserId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	o, err := s.orders.CreateOrder(ctx, orders.NewOrder{
		UserID:      userID,
		Amount:      req.GetAmount(),
		Currency:    req.GetCurrency(),
		Description: req.GetDescription(),
		RequestID:   req.GetRequestId(),
	})
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &orderspb.CreateOrderResponse{Order: orderToProto(o)}, nil
}

// GetOrders implements orderspb.OrderServiceServer.
func (s *Handler) GetOrders(ctx context.Context, req *orderspb.GetOrdersRequest) (*orderspb.GetOrdersResponse, error) {
	userID, err := auth.ResolveUser(ctx, req.GetUserId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	var v orders.Violations
	v.Check("user_id", orders.ValidateUserID(userID))
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		v.Add("page_size", "must not be negative")
	case size == 0:
		size = orders.DefaultPageSize
	case size > orders.MaxPageSize:
		size = orders.MaxPageSize
	}
	var after *orders.Cursor
	if tok := req.GetPageToken(); tok != "" && len(v) == 0 {
		c, err := pagetoken.Decode(s.pageKey, userID, tok)
		if err != nil {
			v.Add("page_token", "is not a token this server issued for this user_id")
		} else {
			after = &c
		}
	}
	if err := v.Err(); err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	list, next, err := s.orders.GetOrders(ctx, userID, size, after)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &orderspb.GetOrdersResponse{Orders: make([]*orderspb.Order, 0, len(list))}
	for _, o := range list {
		resp.Orders = append(resp.Orders, orderToProto(o))
	}
	if next != nil {
		resp.NextPageToken = pagetoken.Encode(s.pageKey, userID, *next)
	}
	return resp, nil
}

// GetOrderStatus implements orderspb.OrderServiceServer. Another user's
// order is NOT_FOUND, as if it did not exist.
func (s *Handler) GetOrderStatus(ctx context.Context, req *orderspb.GetOrderStatusRequest) (*orderspb.GetOrderStatusResponse, error) {
	id := req.GetOrderId()
	if err := validateOrderID(id); err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	status, owner, err := s.orders.GetOrderStatus(ctx, id)
	if err == nil && !auth.CanSeeOwner(ctx, owner) {
		err = orders.Errorf(orders.ENOTFOUND, "order not found")
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &orderspb.GetOrderStatusResponse{OrderId: strings.ToLower(id), Status: statusToProto(status)}, nil
}

// MarkOrderFinished implements orderspb.OrderServiceServer.
func (s *Handler) MarkOrderFinished(ctx context.Context, req *orderspb.MarkOrderFinishedRequest) (*orderspb.MarkOrderFinishedResponse, error) {
	if err := auth.RequirePrivileged(ctx); err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if err := validateOrderID(req.GetOrderId()); err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	o, err := s.orders.MarkOrderFinished(ctx, req.GetOrderId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &orderspb.MarkOrderFinishedResponse{Order: orderToProto(o)}, nil
}

func validateOrderID(id string) error {
	var v orders.Violations
	v.Check("order_id", orders.ValidateOrderID(id))
	return v.Err()
}
