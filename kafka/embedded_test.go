package kafka

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestEmbeddedListensOnGivenAddress(t *testing.T) {
	b := startBroker(t)
	host, port, err := net.SplitHostPort(b.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr() = %q, want 127.0.0.1 with a chosen port", b.Addr())
	}
	// A plain TCP client (as kcat would be) reaches it.
	conn, err := net.DialTimeout("tcp", b.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", b.Addr(), err)
	}
	conn.Close()

	// The same address cannot be taken twice.
	if other, err := StartEmbedded(b.Addr()); err == nil {
		other.Close()
		t.Fatalf("second StartEmbedded on %s succeeded", b.Addr())
	} else if !strings.Contains(err.Error(), b.Addr()) {
		t.Errorf("error %q does not name the address", err)
	}
}

func TestEmbeddedRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	const topic, group = "orders.events", "orders-service"

	first, err := StartEmbedded("127.0.0.1:0", WithDataDir(dir))
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	addr := first.Addr()
	c := Config{Brokers: []string{addr}}

	cl, err := NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(testContext(t, 10*time.Second), cl, 2, -1, topic); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	for i := range 10 {
		produceOne(t, cl, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "order-%d", i%3), Value: fmt.Appendf(nil, "event-%d", i)})
	}
	adm := kadm.NewClient(cl)
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(testContext(t, 10*time.Second), group, offsets); err != nil {
		t.Fatalf("commit offsets: %v", err)
	}
	cl.Close()
	first.Close()

	// Restart on the same address with the same data directory.
	second, err := StartEmbedded(addr, WithDataDir(dir))
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	t.Cleanup(second.Close)
	if second.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", second.Addr(), addr)
	}

	recs := consumeN(t, c, topic, 10)
	seen := make(map[string]bool)
	for _, r := range recs {
		seen[string(r.Value)] = true
	}
	for i := range 10 {
		if v := fmt.Sprintf("event-%d", i); !seen[v] {
			t.Errorf("record %q lost across the restart", v)
		}
	}
	if len(recs) != 10 {
		t.Errorf("consumed %d records, want 10", len(recs))
	}

	got, err := kadm.NewClient(newClient(t, c)).FetchOffsets(testContext(t, 10*time.Second), group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	if o, ok := got.Lookup(topic, 0); !ok || o.At != 1 {
		t.Errorf("committed offset after restart = %+v (found %v), want 1", o, ok)
	}
}

func TestEmbeddedRestartKeepsDataForConnectedClient(t *testing.T) {
	// A client that stays up while the broker restarts reconnects and keeps
	// producing; nothing produced before or after is lost.
	dir := t.TempDir()
	const topic = "restart"
	first, err := StartEmbedded("127.0.0.1:0", WithDataDir(dir))
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	addr := first.Addr()
	c := Config{Brokers: []string{addr}}
	cl := newClient(t, c)
	if err := EnsureTopics(testContext(t, 10*time.Second), cl, 1, -1, topic); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	produceOne(t, cl, &kgo.Record{Topic: topic, Value: []byte("before")})
	first.Close()

	second, err := StartEmbedded(addr, WithDataDir(dir))
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	t.Cleanup(second.Close)
	produceOne(t, cl, &kgo.Record{Topic: topic, Value: []byte("after")})

	recs := consumeN(t, c, topic, 2)
	if len(recs) != 2 || string(recs[0].Value) != "before" || string(recs[1].Value) != "after" {
		var vs []string
		for _, r := range recs {
			vs = append(vs, string(r.Value))
		}
		t.Fatalf("records after restart = %q, want [before after]", vs)
	}
}

func TestEmbeddedLoggerLevels(t *testing.T) {
	var buf strings.Builder
	a := slogAdapter{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	a.Logf(kfake.LogLevelError, "persist: %v", "disk full")
	a.Logf(kfake.LogLevelWarn, "slow %d", 1)
	a.Logf(kfake.LogLevelInfo, "request %s", "Produce")
	a.Logf(kfake.LogLevelDebug, "detail")
	out := buf.String()
	for _, want := range []string{`level=ERROR msg="persist: disk full" component=kfake`, `level=WARN msg="slow 1"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "Produce") || strings.Contains(out, "detail") {
		t.Errorf("log %q has info or debug lines below the warn level", out)
	}
}
