package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/internal/settings"
)

// config is the service's configuration (settings.Config, read from the
// table of settings) and the environment it came from.
type config struct {
	settings.Config
	getenv func(string) string // for settings read by libraries (OTEL_*)
}

// loadConfig reads the configuration through getenv. The error names the
// first bad variable.
func loadConfig(getenv func(string) string) (config, error) {
	c, err := settings.Load(getenv)
	return config{Config: c, getenv: getenv}, err
}

// httpAddr is where the metrics and health server listens.
func (c config) httpAddr() string {
	return net.JoinHostPort(c.HTTPHost, strconv.Itoa(c.HTTPPort))
}

// healthcheckAddr is where the healthcheck subcommand asks /readyz: HTTP_HOST,
// or the loopback address when it binds every interface.
func (c config) healthcheckAddr() string {
	host := c.HTTPHost
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(c.HTTPPort))
}

// requireAuthMode refuses to serve outside -dev unless AUTH_MODE was set
// explicitly, so a forgotten setting cannot leave the API open to everyone.
func requireAuthMode(c config, dev bool) error {
	if dev || c.Auth.Mode != "" {
		return nil
	}
	return fmt.Errorf("%s: required outside -dev: set %s=jwt, or %s=none to let every caller act for any user",
		auth.EnvMode, auth.EnvMode, auth.EnvMode)
}
