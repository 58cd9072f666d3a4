package peerlimit_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/peerlimit"
)

// TestPerPeerCap: a peer's connection beyond the cap is closed at once,
// another peer is served, and a closed connection gives its slot back.
func TestPerPeerCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := peerlimit.Listener(raw, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("x")) // greets every connection it keeps
			accepted <- c
		}
	}()
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	kept := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadFull(c, make([]byte, 1))
		return err == nil
	}
	a1, a2, a3 := dial("127.0.0.1"), dial("127.0.0.1"), dial("127.0.0.1")
	if !kept(a1) || !kept(a2) {
		t.Fatal("the first two connections of 127.0.0.1 were not kept")
	}
	if kept(a3) {
		t.Error("a third connection of 127.0.0.1 was kept with a cap of 2")
	}
	if b := dial("127.0.0.2"); !kept(b) {
		t.Error("127.0.0.2 was turned away while 127.0.0.1 is at its cap")
	}
	(<-accepted).Close() // the server closes a1: its slot is free again
	if a4 := dial("127.0.0.1"); !kept(a4) {
		t.Error("after one of its connections closed, 127.0.0.1 could not connect again")
	}
}
