//go:build kafkacluster

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acme/orders-service/postgres/pgtest"
)

// TestClusterTopicsWithoutCreatePermission: on the cluster's SASL_SSL
// listener, with ACLs enforced (StandardAuthorizer) and set by Kafka's own
// AclCommand (scripts/kafka-cluster.sh), the service runs as a principal
// allowed to read, write and describe but not to create topics, nor to
// describe the brokers' configs. With its topics created beforehand, orders
// flow and a payment applies: the inbox consumer starts without a CREATE
// and without waiting for the topic-settings comparison.
func TestClusterTopicsWithoutCreatePermission(t *testing.T) {
	c := needCluster(t)
	s := needSecureListener(t, c)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(c.dir, "pki", name))
		if err != nil {
			t.Fatalf("the secured cluster has no limited user (%v): start it with this scripts/kafka-cluster.sh", err)
		}
		return strings.TrimSpace(string(b))
	}
	names := uniqueNames("acl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, topic := range []string{names["KAFKA_TOPIC"], names["KAFKA_INBOX_TOPIC"], names["KAFKA_DLQ_TOPIC"]} {
		if _, err := c.adm.CreateTopic(ctx, 3, 3, nil, topic); err != nil {
			t.Fatalf("create %s as the super user: %v", topic, err)
		}
	}
	t.Cleanup(func() {
		c.adm.DeleteTopics(context.Background(), names["KAFKA_TOPIC"], names["KAFKA_INBOX_TOPIC"], names["KAFKA_DLQ_TOPIC"])
	})

	env := s.env(read("limited-password"))
	env["KAFKA_SASL_USER"] = read("limited-user")
	env["POSTGRES_DSN"] = pgtest.NewEmptyDSN(t)
	for k, v := range names {
		env[k] = v
	}
	// The simulator runs as the super user, on the PLAINTEXT listener.
	orderIsPaid(t, env, c.brokers)
}
