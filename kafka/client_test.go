package kafka

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/acme/orders-service/internal/testpki"
)

// roundTrip creates topic, produces one record through a client built from c
// and reads it back with a second client.
func roundTrip(t *testing.T, c Config, topic string) {
	t.Helper()
	cl := newClient(t, c)
	if err := EnsureTopics(testContext(t, 10*time.Second), cl, 1, -1, topic); err != nil {
		t.Fatalf("EnsureTopics: %v", err)
	}
	produceOne(t, cl, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("hello")})
	recs := consumeN(t, c, topic, 1)
	if got := string(recs[0].Value); got != "hello" {
		t.Fatalf("consumed value %q, want %q", got, "hello")
	}
}

// TestSASL runs on embedded brokers in both modes: make kafka-up's cluster
// has no SASL listener.
func TestSASL(t *testing.T) {
	const user, password = "orders", "s3cret-Pa55word"
	for _, mech := range []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			b := startKfake(t, kfake.EnableSASL(), kfake.Superuser(mech, user, password))
			good := Config{Brokers: []string{b.Addr()}, SASL: SASLConfig{Mechanism: mech, User: user, Password: password, AllowPlaintext: true}}

			t.Run("right password produces and consumes", func(t *testing.T) {
				roundTrip(t, good, "sasl-topic")
			})

			t.Run("wrong password fails clearly", func(t *testing.T) {
				const wrong = "wrong-Pa55word"
				bad := good
				bad.SASL.Password = wrong
				cl := newClient(t, bad)
				if err := cl.Ping(testContext(t, 10*time.Second)); err == nil {
					t.Fatal("Ping with a wrong password succeeded")
				}

				start := time.Now()
				err := EnsureTopics(testContext(t, 20*time.Second), cl, 1, -1, "sasl-denied")
				if err == nil {
					t.Fatal("EnsureTopics with a wrong password succeeded")
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("EnsureTopics took %v to fail, want well before its 20s context ends", d)
				}
				msg := err.Error()
				for _, want := range []string{`"sasl-denied"`, "SASL " + mech + " authentication", `user "orders"`, b.Addr(), "KAFKA_SASL_PASSWORD"} {
					if !strings.Contains(msg, want) {
						t.Errorf("error %q does not contain %q", msg, want)
					}
				}
				if strings.Contains(msg, wrong) || strings.Contains(msg, password) {
					t.Errorf("error %q contains a password", msg)
				}
				t.Logf("error: %v", err)
			})

			t.Run("other mechanism is refused", func(t *testing.T) {
				other := good
				other.SASL.Mechanism = MechanismScramSHA512
				if mech == MechanismScramSHA512 {
					other.SASL.Mechanism = MechanismPlain
				}
				if err := newClient(t, other).Ping(testContext(t, 10*time.Second)); err == nil {
					t.Fatalf("Ping with mechanism %s succeeded against a %s-only broker", other.SASL.Mechanism, mech)
				}
			})
		})
	}
}

func TestSASLRequiredByBroker(t *testing.T) {
	b := startKfake(t, kfake.EnableSASL(), kfake.Superuser(MechanismPlain, "u", "p"))
	cl := newClient(t, Config{Brokers: []string{b.Addr()}})
	if err := EnsureTopics(testContext(t, 3*time.Second), cl, 1, -1, "no-auth"); err == nil {
		t.Fatal("EnsureTopics without SASL succeeded against a broker requiring SASL")
	}
}

// TestTLS runs on embedded brokers in both modes: make kafka-up's cluster has
// no TLS listener.
func TestTLS(t *testing.T) {
	pki := testpki.New(t)

	t.Run("server TLS with a private CA", func(t *testing.T) {
		b := startKfake(t, kfake.TLS(serverTLS(t, pki, false)))
		roundTrip(t, Config{Brokers: []string{b.Addr()}, TLS: TLSConfig{Enabled: true, CAFile: pki.CAFile}}, "tls-topic")

		// Without the CA file the system roots cannot verify the broker.
		cl := newClient(t, Config{Brokers: []string{b.Addr()}, TLS: TLSConfig{Enabled: true}})
		err := cl.Ping(testContext(t, 10*time.Second))
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Ping without the CA: got %v, want a certificate verification error", err)
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		b := startKfake(t, kfake.TLS(serverTLS(t, pki, true)))
		withCert := Config{Brokers: []string{b.Addr()}, TLS: TLSConfig{
			Enabled: true, CAFile: pki.CAFile, CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile,
		}}
		roundTrip(t, withCert, "mtls-topic")

		noCert := withCert
		noCert.TLS.CertFile, noCert.TLS.KeyFile = "", ""
		if err := newClient(t, noCert).Ping(testContext(t, 10*time.Second)); err == nil {
			t.Fatal("Ping without a client certificate succeeded against an mTLS broker")
		}
	})

	t.Run("plaintext client against TLS broker fails", func(t *testing.T) {
		b := startKfake(t, kfake.TLS(serverTLS(t, pki, false)))
		if err := newClient(t, Config{Brokers: []string{b.Addr()}}).Ping(testContext(t, 3*time.Second)); err == nil {
			t.Fatal("plaintext Ping succeeded against a TLS broker")
		}
	})
}

func TestOptionsFileErrorsNameVariable(t *testing.T) {
	pki := testpki.New(t)
	tests := []struct {
		name string
		tls  TLSConfig
		want string
	}{
		{"missing CA file", TLSConfig{Enabled: true, CAFile: "/nonexistent/ca.pem"}, "KAFKA_TLS_CA_FILE"},
		{"CA file without certificates", TLSConfig{Enabled: true, CAFile: pki.ClientKeyFile}, "KAFKA_TLS_CA_FILE: no PEM certificates"},
		{"key does not match certificate", TLSConfig{Enabled: true, CertFile: pki.ClientCertFile, KeyFile: pki.ServerKeyFile}, "KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE"},
		{"missing key file", TLSConfig{Enabled: true, CertFile: pki.ClientCertFile, KeyFile: "/nonexistent/key.pem"}, "KAFKA_TLS_KEY_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Config{Brokers: []string{"127.0.0.1:9092"}, TLS: tt.tls}.Options()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Options: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestOptionsAppliesConfig(t *testing.T) {
	if _, err := (Config{}).Options(); err == nil {
		t.Fatal("Options of an empty Config succeeded")
	}
	_, err := NewClient(Config{Brokers: []string{"h:1"}, SASL: SASLConfig{Mechanism: "FOO", User: "u", Password: "hunter2"}})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "KAFKA_SASL_MECHANISM") {
		t.Fatalf("NewClient with a bad mechanism: got %v, want a KAFKA_SASL_MECHANISM error without the password", err)
	}

	cl := newClient(t, Config{Brokers: []string{"127.0.0.1:19093", "localhost"}, ClientID: "orders-test"})
	if got := cl.OptValue(kgo.ClientID); got != "orders-test" {
		t.Errorf("client id = %v, want orders-test", got)
	}
	if got := cl.OptValue(kgo.SeedBrokers); !slices.Equal(got.([]string), []string{"127.0.0.1:19093", "localhost"}) {
		t.Errorf("seed brokers = %v", got)
	}
	if got := cl.OptValue(kgo.ProducerLinger); got != producerLinger {
		t.Errorf("linger = %v, want %v", got, producerLinger)
	}
	if got := cl.OptValue(kgo.RequiredAcks); got != kgo.AllISRAcks() {
		t.Errorf("acks = %v, want all ISR", got)
	}
	if got := cl.OptValue(kgo.DisableIdempotentWrite); got != false {
		t.Errorf("idempotent writes disabled = %v, want false", got)
	}
	if got := cl.OptValue(kgo.RecordDeliveryTimeout); got != time.Duration(0) {
		t.Errorf("record delivery timeout = %v, want none", got)
	}

	override := newClient(t, Config{Brokers: []string{"h:1"}}, kgo.ProducerLinger(7*time.Millisecond))
	if got := override.OptValue(kgo.ProducerLinger); got != 7*time.Millisecond {
		t.Errorf("extra option did not override linger: %v", got)
	}
}
