package tcpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes every connection back until it closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestDelayIsPerChunkNotSerialised sends many lines at once through a
// proxy that delays each direction: every line comes back in order, no
// sooner than two delays, and all of them within a few delays, not one
// round trip per line.
func TestDelayIsPerChunkNotSerialised(t *testing.T) {
	p, err := Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const delay = 50 * time.Millisecond
	p.SetDelay(delay)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const lines = 20
	start := time.Now()
	go func() {
		for i := range lines {
			fmt.Fprintf(c, "line %d\n", i)
			time.Sleep(2 * time.Millisecond) // separate chunks
		}
	}()
	r := bufio.NewReader(c)
	for i := range lines {
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("line %d\n", i); got != want {
			t.Fatalf("line %d: got %q, want %q", i, got, want)
		}
		if i == 0 {
			if rtt := time.Since(start); rtt < 2*delay {
				t.Fatalf("first line back after %s, want at least %s", rtt, 2*delay)
			}
		}
	}
	if took := time.Since(start); took > lines*delay/2 {
		t.Fatalf("%d lines took %s: the delay serialises them (one round trip is %s)", lines, took, 2*delay)
	}
}

// TestNoDelay forwards at once with the delay off.
func TestNoDelay(t *testing.T) {
	p, err := Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprintln(c, "ping")
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "ping\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	if rtt := time.Since(start); rtt > time.Second {
		t.Fatalf("round trip took %s without a delay", rtt)
	}
}
