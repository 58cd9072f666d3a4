//go:build kafkacluster

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/internal/settings"
	"github.com/acme/orders-service/kafka"
	"github.com/acme/orders-service/paymentsim"
	"github.com/acme/orders-service/postgres/pgtest"
)

// secureListener is the cluster's SASL_SSL listener (KAFKA_CLUSTER_SECURE=true):
// SCRAM-SHA-512 over TLS, client certificate required.
type secureListener struct {
	bootstrap, ca, cert, key, user, password string
}

func needSecureListener(t *testing.T, c *cluster) secureListener {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			t.Fatalf("the cluster has no secured listener (%v): start it with KAFKA_CLUSTER_SECURE=true, as make test-failover does", err)
		}
		return strings.TrimSpace(string(b))
	}
	pki := filepath.Join(c.dir, "pki")
	return secureListener{
		bootstrap: read("secure_bootstrap"),
		ca:        filepath.Join(pki, "ca.crt"), cert: filepath.Join(pki, "client.crt"), key: filepath.Join(pki, "client.key"),
		user: read("pki/scram-user"), password: read("pki/scram-password"),
	}
}

// env is the service's (and the simulator's) Kafka settings for the listener.
func (s secureListener) env(password string) map[string]string {
	return map[string]string{
		"KAFKA_BROKER": s.bootstrap, "KAFKA_TLS": "true", "KAFKA_TLS_CA_FILE": s.ca,
		"KAFKA_TLS_CERT_FILE": s.cert, "KAFKA_TLS_KEY_FILE": s.key,
		"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USER": s.user, "KAFKA_SASL_PASSWORD": password,
	}
}

// kcat runs kcat against the listener with mechanism and password and the
// client certificate, consuming topic from the beginning to its end.
func (s secureListener) kcat(t *testing.T, mechanism, password, topic string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", "-b", s.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-J",
		"-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms="+mechanism,
		"-X", "sasl.username="+s.user, "-X", "sasl.password="+password,
		"-X", "ssl.ca.location="+s.ca, "-X", "ssl.certificate.location="+s.cert, "-X", "ssl.key.location="+s.key)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after 60s: %w", ctx.Err())
	}
	return out.String(), errOut.String(), err
}

// kcatLibrdkafka is kcat's librdkafka version as major, minor, patch.
func kcatLibrdkafka(t *testing.T) (string, [3]int) {
	t.Helper()
	out, err := exec.Command("kcat", "-V").Output()
	if err != nil {
		t.Fatalf("kcat -V (kcat is required: .ci/run installs it): %v", err)
	}
	m := regexp.MustCompile(`librdkafka (\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("kcat -V names no librdkafka version:\n%s", out)
	}
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return m[0], v
}

// checkKcatEvents asserts that kcat's JSON lines hold an OrderCreated, keyed
// by the order id and with the CloudEvents headers, for every order of ids.
func checkKcatEvents(t *testing.T, out string, ids []string) {
	t.Helper()
	created := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var msg struct {
			Key     string   `json:"key"`
			Payload string   `json:"payload"`
			Headers []string `json:"headers"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil {
			t.Fatalf("kcat output line %q: %v", line, err)
		}
		h := map[string]string{}
		for i := 0; i+1 < len(msg.Headers); i += 2 {
			h[msg.Headers[i]] = msg.Headers[i+1]
		}
		if h["ce_type"] != "orders.v1.OrderCreated" {
			continue
		}
		var data struct {
			OrderID string `json:"order_id"`
		}
		_, terr := time.Parse(time.RFC3339, h["ce_time"])
		if err := json.Unmarshal([]byte(msg.Payload), &data); err != nil || data.OrderID != msg.Key || terr != nil ||
			h["ce_specversion"] != "1.0" || h["ce_id"] == "" || h["ce_source"] == "" || h["content-type"] != "application/json" {
			t.Fatalf("kcat read an OrderCreated with key=%q headers=%v payload=%q", msg.Key, h, msg.Payload)
		}
		created[msg.Key] = true
	}
	for _, id := range ids {
		if !created[id] {
			t.Fatalf("kcat read no OrderCreated keyed %s (%d orders had one)", id, len(created))
		}
	}
}

// TestClusterSecurity (issue 9, 3d): against the SASL_SSL listener with
// SCRAM-SHA-512 and mutual TLS, the service and the payments simulator work
// with the right credentials; a wrong password stops the service at start
// with one line naming the problem. kcat reads the service's events over the
// same listener with its client certificate and SASL/PLAIN, and is refused
// with a wrong password. With SCRAM-SHA-512 kcat is refused while its
// librdkafka is older than 2.6.1, which sends a client-final-message Kafka 4
// rejects (confluentinc/librdkafka#4895); a newer one must succeed.
func TestClusterSecurity(t *testing.T) {
	c := needCluster(t)
	s := needSecureListener(t, c)
	dsn := pgtest.NewEmptyDSN(t)
	names := uniqueNames("secure")
	env := s.env(s.password)
	env["POSTGRES_DSN"] = dsn
	for k, v := range names {
		env[k] = v
	}
	r := startReplica(t, "replica-1", env)

	simEnv := s.env(s.password)
	simCfg, err := settings.LoadPaymentsSim(func(k string) string { return simEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	kc := simCfg.Kafka
	cl, err := kafka.NewClient(kc, paymentsim.ClientOptions(names["KAFKA_GROUP_ID"]+".payments-sim", names["KAFKA_TOPIC"])...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		(paymentsim.Config{InTopic: names["KAFKA_TOPIC"], OutTopic: names["KAFKA_INBOX_TOPIC"]}).Run(ctx, cl)
	}()
	defer func() { cancel(); <-simDone; cl.Close() }()

	stop := make(chan struct{})
	close(stop)
	ids := startLoad(t, 20, false, stop, r).wait(t)
	poll.Eventually(t, 90*time.Second, "every order paid over SASL_SSL", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM orders WHERE status = 'finished'`) == len(ids)
	})
	poll.Eventually(t, 60*time.Second, "the outbox empty", func() bool {
		return queryInt(t, dsn, `SELECT count(*) FROM outbox WHERE NOT sent`) == 0
	})

	// A wrong password: the service stops at start with one clear line.
	bad := s.env("not-" + s.password)
	bad["POSTGRES_DSN"], bad["AUTH_MODE"] = dsn, "none"
	bad["GRPC_PORT"], bad["HTTP_PORT"] = "0", "0"
	for k, v := range names {
		bad[k] = v
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer bcancel()
	run := exec.CommandContext(bctx, serviceBinary(t))
	run.Env = []string{"PATH=" + os.Getenv("PATH"), "LOG_LEVEL=error"}
	for k, v := range bad {
		run.Env = append(run.Env, k+"="+v)
	}
	var stdout, errOut bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &errOut
	start := time.Now()
	err = run.Run()
	if bctx.Err() != nil {
		t.Fatalf("with a wrong SASL password the service still ran after 90s; stderr:\n%s", errOut.String())
	}
	if err == nil {
		t.Fatal("with a wrong SASL password the service exited 0")
	}
	msg := strings.TrimSpace(errOut.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "KAFKA_SASL_PASSWORD") || strings.Contains(msg+stdout.String(), s.password) {
		t.Fatalf("wrong password: want one line naming KAFKA_SASL_PASSWORD without the password, got:\n%s", msg)
	}
	stopped := time.Since(start).Round(time.Millisecond)

	topic := names["KAFKA_TOPIC"]
	out, kerr, err := s.kcat(t, "PLAIN", s.password, topic)
	if err != nil {
		t.Fatalf("kcat over SASL_SSL with PLAIN and the client certificate: %v\n%s", err, kerr)
	}
	checkKcatEvents(t, out, ids)
	records := strings.Count(strings.TrimSpace(out), "\n") + 1

	refused := func(mechanism, password string) string {
		t.Helper()
		out, kerr, err := s.kcat(t, mechanism, password, topic)
		_, reason, found := strings.Cut(kerr, "SASL authentication error: ")
		if err == nil || strings.TrimSpace(out) != "" || !found {
			t.Fatalf("kcat with %s: want refused (an authentication error, no record), got err=%v, %d bytes read, stderr:\n%s",
				mechanism, err, len(out), kerr)
		}
		if strings.Contains(kerr, s.password) {
			t.Fatalf("kcat's error shows the password:\n%s", kerr)
		}
		reason, _, _ = strings.Cut(reason, " (after ")
		return reason
	}
	wrongPlain := refused("PLAIN", "not-"+s.password)

	lib, v := kcatLibrdkafka(t)
	var scram string
	if v[0] > 2 || v[0] == 2 && (v[1] > 6 || v[1] == 6 && v[2] >= 1) {
		out, kerr, err := s.kcat(t, "SCRAM-SHA-512", s.password, topic)
		if err != nil {
			t.Fatalf("kcat (%s, which has the SCRAM fix) over SASL_SSL with SCRAM-SHA-512: %v\n%s", lib, err, kerr)
		}
		checkKcatEvents(t, out, ids)
		scram = "read them with SCRAM-SHA-512 too"
	} else {
		scram = "refused with SCRAM-SHA-512 and the right password (librdkafka < 2.6.1): " + refused("SCRAM-SHA-512", s.password)
	}
	t.Logf("SUMMARY security: SASL_SSL SCRAM-SHA-512 + mTLS: orders=%d created and paid; wrong password stopped the service after %v: %s; "+
		"kcat (%s) with PLAIN + client certificate read %d records, every OrderCreated keyed and with ce_* headers; "+
		"refused with a wrong password: %s; %s", len(ids), stopped, msg, lib, records, wrongPlain, scram)
}
