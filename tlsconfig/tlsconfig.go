// Package tlsconfig builds server TLS configurations whose certificate and
// client CA pool follow their files on disk, so certificates rotate without
// a restart.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CheckInterval is how often, at most, the files are checked for changes;
// the check runs during a TLS handshake, so an idle server does no work.
const CheckInterval = 5 * time.Second

// ServerConfig returns a TLS 1.2+ server configuration serving the key pair
// in certFile and keyFile. With clientCAFile set, clients must present a
// certificate signed by one of its CAs (mTLS). The files are read now (an
// error names the file at fault) and again by a handshake when their
// modification time, size or identity changed, checked at most every
// CheckInterval. A change that does not load (a half-written pair, say) is
// logged with slog.Default and the previous configuration stays in use until
// a later check succeeds.
func ServerConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	r, err := newReloader(certFile, keyFile, clientCAFile, CheckInterval)
	if err != nil {
		return nil, err
	}
	return r.outer(), nil
}

// reloader holds the current configuration and the file states it was
// built from.
type reloader struct {
	certFile, keyFile, caFile string
	interval                  time.Duration
	now                       func() time.Time

	mu      sync.Mutex
	current *tls.Config
	stamps  []os.FileInfo // of certFile, keyFile and caFile when set
	checked time.Time
}

func newReloader(certFile, keyFile, caFile string, interval time.Duration) (*reloader, error) {
	r := &reloader{certFile: certFile, keyFile: keyFile, caFile: caFile, interval: interval, now: time.Now}
	stamps, err := r.stat()
	if err != nil {
		return nil, err
	}
	cfg, err := r.load()
	if err != nil {
		return nil, err
	}
	r.current, r.stamps, r.checked = cfg, stamps, r.now()
	return r, nil
}

func (r *reloader) outer() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: r.configForClient}
}

func (r *reloader) files() []string {
	if r.caFile == "" {
		return []string{r.certFile, r.keyFile}
	}
	return []string{r.certFile, r.keyFile, r.caFile}
}

func (r *reloader) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= r.interval {
		r.checked = now
		if err := r.reloadIfChanged(); err != nil {
			slog.Warn("TLS files changed but do not load; keeping the previous certificate", "err", err)
		}
	}
	return r.current, nil
}

// reloadIfChanged rebuilds the configuration when any file changed. The
// files are stat'ed before they are read, so a change racing the read is
// seen by the next check.
func (r *reloader) reloadIfChanged() error {
	stamps, err := r.stat()
	if err != nil {
		return err
	}
	if sameFiles(stamps, r.stamps) {
		return nil
	}
	cfg, err := r.load()
	if err != nil {
		return err
	}
	r.current, r.stamps = cfg, stamps
	slog.Info("TLS configuration reloaded", "cert_file", r.certFile, "client_ca_file", r.caFile)
	return nil
}

func (r *reloader) stat() ([]os.FileInfo, error) {
	var stamps []os.FileInfo
	for _, f := range r.files() {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		stamps = append(stamps, fi)
	}
	return stamps, nil
}

func sameFiles(a, b []os.FileInfo) bool {
	for i := range a {
		if !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

func (r *reloader) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2"},
	}
	if r.caFile != "" {
		b, err := os.ReadFile(r.caFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("tls: no PEM certificate in client CA file %s", r.caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
