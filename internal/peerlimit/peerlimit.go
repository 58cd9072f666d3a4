// Package peerlimit caps the connections one remote IP address may hold
// open on a listener, so one host cannot take every connection slot.
package peerlimit

import (
	"net"
	"sync"
)

// Listener returns ln where at most max connections from one IP address are
// open at once; a connection beyond that is closed as soon as it is
// accepted, and Accept waits for the next one.
func Listener(ln net.Listener, max int) net.Listener {
	return &listener{Listener: ln, max: max, open: map[string]int{}}
}

type listener struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open map[string]int // connections per IP address
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr())
		if !l.take(ip) {
			c.Close()
			continue
		}
		return &conn{Conn: c, release: sync.OnceFunc(func() { l.give(ip) })}, nil
	}
}

func (l *listener) take(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip] >= l.max {
		return false
	}
	l.open[ip]++
	return true
}

func (l *listener) give(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

// hostOf is the IP address of addr, or all of it when it has no port.
func hostOf(addr net.Addr) string {
	if a, ok := addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// conn gives its slot back once, at the first Close.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
