package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/grpcapi"
	"github.com/acme/orders-service/postgres"
	"github.com/acme/orders-service/ratelimit"
	"github.com/acme/orders-service/tlsconfig"
)

// serve runs the service until ctx is cancelled, then shuts down gracefully:
// health turns NOT_SERVING, in-flight calls finish within the shutdown
// timeout, then the workers stop.
func serve(ctx context.Context, cfg config, log *slog.Logger, dev bool) error {
	log.Info("starting orders-service", "config", cfg, "dev", dev)

	db, err := openDatabase(ctx, cfg, log, dev)
	if err != nil {
		return err
	}
	defer db.Close()

	pageKey, err := db.PageTokenKey(ctx)
	if err != nil {
		return err
	}
	writer := postgres.NewOrderWriter(cfg.KafkaTopic, "orders-service", nil)
	svc := postgres.NewOrderService(db, writer, cfg.DefaultCurrency)

	hs := health.NewServer()
	api := grpcapi.NewServer(svc, pageKey, log)
	opts, err := grpcOptions(cfg, log)
	if err != nil {
		return err
	}
	grpcServer := grpcapi.NewGRPCServer(api, hs, opts)
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.GRPCPort)))
	if err != nil {
		return fmt.Errorf("listen GRPC_PORT %d: %w", cfg.GRPCPort, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		log.Info("gRPC server listening", "addr", ln.Addr().String())
		if err := grpcServer.Serve(ln); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		stopped := make(chan struct{})
		go func() { grpcServer.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(cfg.ShutdownTimeout):
			log.Warn("shutdown timeout: cancelling in-flight calls")
			grpcServer.Stop()
		}
		return nil
	})
	err = g.Wait()
	log.Info("orders-service stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// openDatabase connects and applies migrations; in dev mode it first creates
// the database when it does not exist.
func openDatabase(ctx context.Context, cfg config, log *slog.Logger, dev bool) (*postgres.DB, error) {
	if dev {
		created, err := postgres.CreateDatabaseIfMissing(ctx, cfg.PostgresDSN)
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("created database", "dsn", redactDSN(cfg.PostgresDSN))
		}
	}
	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := postgres.Open(connectCtx, cfg.PostgresDSN)
	if err != nil {
		return nil, err
	}
	applied, err := db.Migrate(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if len(applied) > 0 {
		log.Info("applied migrations", "migrations", applied)
	}
	return db, nil
}

// migrate applies migrations and exits.
func migrate(ctx context.Context, cfg config, log *slog.Logger, dev bool) error {
	db, err := openDatabase(ctx, cfg, log, dev)
	if err != nil {
		return err
	}
	db.Close()
	log.Info("migrations are up to date")
	return nil
}

// grpcOptions turns the security and limit settings into server options.
func grpcOptions(cfg config, log *slog.Logger) (grpcapi.Options, error) {
	o := grpcapi.Options{
		Log:            log,
		Reflection:     cfg.GRPCReflection,
		MaxRecvMsgSize: cfg.MaxRecvMsgBytes,
		CallTimeout:    cfg.CallTimeout,
	}
	v, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return o, err
	}
	if v.Enabled() {
		o.Interceptors = append(o.Interceptors, auth.UnaryServerInterceptor(v))
		o.Streams = append(o.Streams, auth.StreamServerInterceptor(v))
	} else {
		log.Warn("AUTH_MODE=none: every caller may act for any user; set AUTH_MODE=jwt in production")
	}
	if cfg.RateLimitPerUser > 0 {
		o.Interceptors = append(o.Interceptors,
			grpcapi.RateLimit(ratelimit.New(cfg.RateLimitPerUser, cfg.RateLimitBurst, ratelimit.DefaultMaxUsers), log))
	}
	if cfg.TLSCertFile != "" {
		tc, err := tlsconfig.ServerConfig(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile)
		if err != nil {
			return o, err
		}
		o.ServerOptions = append(o.ServerOptions, grpc.Creds(credentials.NewTLS(tc)))
	} else {
		log.Warn("gRPC is served in plaintext; set GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE to serve TLS")
	}
	return o, nil
}
