package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/acme/orders-service/gen/orderspb"
	"github.com/acme/orders-service/internal/kafkatest"
	"github.com/acme/orders-service/internal/poll"
	"github.com/acme/orders-service/paymentsim"
	"github.com/acme/orders-service/postgres/pgtest"
)

// serviceACLs are what a service principal is granted on managed Kafka:
// read, write and describe its topics and groups, idempotent and
// transactional writes; no CREATE anywhere.
func serviceACLs() []kfake.ACL {
	acl := func(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	var acls []kfake.ACL
	for _, op := range []kmsg.ACLOperation{kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationDescribe} {
		acls = append(acls, acl(kmsg.ACLResourceTypeTopic, "*", op), acl(kmsg.ACLResourceTypeGroup, "*", op),
			acl(kmsg.ACLResourceTypeTransactionalId, "*", op))
	}
	return append(acls, acl(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationIdempotentWrite))
}

// TestTopicsExistWithoutCreatePermission: the service's principal may read,
// write and describe but not create topics, and the topics exist: orders
// flow and a payment applies (the inbox consumer starts). A second instance
// whose dead-letter topic is missing and cannot be created is not ready, with
// one log line naming the topic, while it stays alive.
// kfake in both modes: it needs users and ACLs (the real-cluster variant is
// TestClusterTopicsWithoutCreatePermission, build tag kafkacluster).
func TestTopicsExistWithoutCreatePermission(t *testing.T) {
	names := map[string]string{"KAFKA_TOPIC": "orders.events", "KAFKA_INBOX_TOPIC": "payments.events",
		"KAFKA_DLQ_TOPIC": "payments.events.dlq", "KAFKA_GROUP_ID": "orders-service"}
	c := kafkatest.Fake(t, kfake.SeedTopics(3, names["KAFKA_TOPIC"], names["KAFKA_INBOX_TOPIC"], names["KAFKA_DLQ_TOPIC"]),
		kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin-secret"),
		kfake.User("PLAIN", "orders", "orders-secret", serviceACLs()...))
	env := withEnv(names, "POSTGRES_DSN", pgtest.NewEmptyDSN(t), "KAFKA_BROKER", c.Addr(),
		"KAFKA_SASL_MECHANISM", "PLAIN", "KAFKA_SASL_USER", "orders", "KAFKA_SASL_PASSWORD", "orders-secret",
		"KAFKA_SASL_ALLOW_PLAINTEXT", "true", "READINESS_INTERVAL", "200ms")
	admin := kgo.SASL(plain.Auth{User: "admin", Pass: "admin-secret"}.AsMechanism())
	orderIsPaid(t, env, []string{c.Addr()}, admin)

	env = withEnv(env, "KAFKA_DLQ_TOPIC", "payments.events.missing-dlq", "KAFKA_GROUP_ID", "orders-service-2")
	in := launchInstance(t, nil, env)
	poll.Eventually(t, 10*time.Second, "/readyz 503 naming kafka_topics", func() bool {
		in.exited()
		resp, err := http.Get("http://" + in.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body readyBody
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode == http.StatusServiceUnavailable && body.Checks["kafka_topics"] == "unavailable" && body.Checks["postgres"] == "ok"
	})
	if resp, err := http.Get("http://" + in.httpAddr + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with a missing topic: %v %v, want 200 (alive)", resp, err)
	}
	var lines []string
	for line := range strings.Lines(in.logs.String()) {
		if strings.Contains(line, "payments.events.missing-dlq") && strings.Contains(line, `"level":"ERROR"`) {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "TOPIC_AUTHORIZATION_FAILED") {
		t.Errorf("%d error lines name the missing topic, want 1 with the broker's reason:\n%s", len(lines), strings.Join(lines, ""))
	}
}

// orderIsPaid starts an instance with env, creates an order, answers it
// with a payments simulator of its own (a client with simOpts on brokers)
// and waits until the order is finished: its event was relayed and the
// inbox consumer applied the payment.
func orderIsPaid(t *testing.T, env map[string]string, brokers []string, simOpts ...kgo.Opt) {
	t.Helper()
	in := startInstance(t, nil, env)
	ctx, cancel := context.WithCancel(context.Background())
	sim, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, simOpts...),
		paymentsim.ClientOptions(env["KAFKA_GROUP_ID"]+".sim", env["KAFKA_TOPIC"])...)...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		(paymentsim.Config{InTopic: env["KAFKA_TOPIC"], OutTopic: env["KAFKA_INBOX_TOPIC"]}).Run(ctx, sim)
	}()
	t.Cleanup(func() { cancel(); <-done; sim.Close() })

	o, err := in.client.CreateOrder(context.Background(), &orderspb.CreateOrderRequest{UserId: "acl", Amount: 100})
	if err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "the order finished by its payment", func() bool {
		st, err := in.client.GetOrderStatus(context.Background(), &orderspb.GetOrderStatusRequest{OrderId: o.GetOrder().GetId()})
		return err == nil && st.GetStatus() == orderspb.OrderStatus_ORDER_STATUS_FINISHED
	})
}
