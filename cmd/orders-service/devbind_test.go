package main

import (
	"net"
	"testing"
)

// TestDevBindsLoopback: -dev serves without authentication, so its gRPC
// and HTTP listeners bind 127.0.0.1 unless GRPC_HOST / HTTP_HOST say
// otherwise; outside -dev they bind every interface as before.
func TestDevBindsLoopback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dev      bool
		env      map[string]string
		loopback bool
	}{
		{"-dev", true, nil, true},
		{"-dev with GRPC_HOST and HTTP_HOST 0.0.0.0", true, map[string]string{"GRPC_HOST": "0.0.0.0", "HTTP_HOST": "0.0.0.0"}, false},
		{"serve", false, jwtEnv, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := withEnv(tc.env, "GRPC_PORT", "0", "HTTP_PORT", "0")
			getenv := envOf(env)
			if tc.dev {
				getenv = devEnv(getenv, false)
			}
			cfg, err := loadConfig(getenv)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := grpcListener(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			httpLn, err := net.Listen("tcp", cfg.httpAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer httpLn.Close()
			for name, addr := range map[string]net.Addr{"gRPC": ln.Addr(), "HTTP": httpLn.Addr()} {
				ip := addr.(*net.TCPAddr).IP
				if ip.IsLoopback() != tc.loopback || (!tc.loopback && !ip.IsUnspecified()) {
					t.Errorf("%s listens on %v, want loopback %v", name, addr, tc.loopback)
				}
			}
		})
	}
}
