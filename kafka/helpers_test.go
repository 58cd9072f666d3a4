package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/testpki"
)

// startBroker starts an embedded broker on a free loopback port and closes
// it when the test ends.
func startBroker(t *testing.T, opts ...EmbeddedOption) *Embedded {
	t.Helper()
	b, err := StartEmbedded("127.0.0.1:0", opts...)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// kfakeBroker is a one-broker kfake cluster for the client features the
// service's embedded broker does not offer (SASL, TLS, ACLs).
type kfakeBroker struct{ *kfake.Cluster }

// Addr returns the host:port the broker listens on.
func (b kfakeBroker) Addr() string { return b.ListenAddrs()[0] }

// startKfake starts a one-broker kfake cluster with opts on a free loopback
// port and closes it when the test ends.
func startKfake(t *testing.T, opts ...kfake.Opt) kfakeBroker {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake.NewCluster: %v", err)
	}
	t.Cleanup(c.Close)
	return kfakeBroker{c}
}

// newClient builds a client with NewClient and closes it when the test ends.
func newClient(t *testing.T, c Config, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := NewClient(c, extra...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// produceOne produces one record synchronously and fails the test on error.
func produceOne(t *testing.T, cl *kgo.Client, r *kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(testContext(t, 10*time.Second), r).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", r.Topic, err)
	}
}

// consumeN reads n records of topic from the start with a fresh client.
func consumeN(t *testing.T, c Config, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := newClient(t, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx := testContext(t, 10*time.Second)
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consume %s: got %d of %d records before %v", topic, len(recs), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consume %s/%d: %v", topic, p, err)
		})
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// serverTLS returns the broker's TLS config; with mTLS it requires client
// certificates signed by the CA.
func serverTLS(t *testing.T, p testpki.PKI, mTLS bool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCertFile, p.ServerKeyFile)
	if err != nil {
		t.Fatalf("load server key pair: %v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if mTLS {
		caPEM, err := os.ReadFile(p.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc
}

// partitionReplicas returns the replicas of topic's partitions, waiting
// until the metadata of a just created topic reached the broker asked.
func partitionReplicas(t *testing.T, cl *kgo.Client, topic string) int {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	for {
		details, err := kadm.NewClient(cl).ListTopics(ctx, topic)
		if err == nil && len(details[topic].Partitions) > 0 {
			return details[topic].Partitions.NumReplicas()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s has no partitions in the metadata: %v", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
