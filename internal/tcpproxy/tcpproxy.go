// Package tcpproxy is a TCP proxy for tests and benchmarks that simulate
// outages and distance: SetCut(true) drops every connection and refuses new
// ones until SetCut(false); SetDelay delays every chunk forwarded, in each
// direction.
package tcpproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections from a local port to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	delay atomic.Int64 // time.Duration added to each chunk, each direction

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

// Start listens on a free 127.0.0.1 port and forwards to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

// Addr is the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetCut(true) closes every open connection and refuses new ones;
// SetCut(false) accepts connections again.
func (p *Proxy) SetCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if !cut {
		return
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// SetDelay makes the proxy hold every chunk it forwards, in each direction,
// for d before writing it on (a round trip gains 2d), as a link that far
// away would: chunks keep their order and the next ones are read while
// earlier ones wait, so throughput is not bound by the delay. It applies to
// chunks read from then on; 0 turns it off.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Close stops the proxy and closes all connections.
func (p *Proxy) Close() {
	p.ln.Close()
	p.SetCut(true)
}

func (p *Proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(in)
	}
}

func (p *Proxy) forward(in net.Conn) {
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(in, out) {
		in.Close()
		out.Close()
		return
	}
	defer p.untrack(in, out)
	go func() { p.copy(out, in); out.Close() }()
	p.copy(in, out)
	in.Close()
}

// chunk is data read from one side and due to be written on at due.
type chunk struct {
	data []byte
	due  time.Time
}

// copy forwards src to dst until either fails, each chunk no earlier than
// the delay after it was read. A reader and a writer run apart, joined by a
// queue in read order, so that waiting chunks do not stop the reading.
func (p *Proxy) copy(dst io.WriteCloser, src io.Reader) {
	queue := make(chan chunk, 1024)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for c := range queue {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				dst.Close() // makes the other direction fail too
				for range queue {
				}
				return
			}
		}
	}()
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			queue <- chunk{data: buf[:n], due: time.Now().Add(time.Duration(p.delay.Load()))}
		}
		if err != nil {
			break
		}
	}
	close(queue)
	<-writerDone
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
	}
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}
