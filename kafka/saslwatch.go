package kafka

import (
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// saslFailureLimit is how many SASL exchanges in a row must break off, with
// no authenticated request in between, before EnsureTopics gives up early.
const saslFailureLimit = 3

// saslWatch is a kgo hook that notices SASL exchanges breaking off. A broker
// that rejects credentials by closing the connection (kfake does; Kafka
// answers SASL_AUTHENTICATION_FAILED instead) makes kgo retry with a bare
// EOF until the context ends; the watch lets EnsureTopics stop sooner and say
// why.
type saslWatch struct {
	mechanism, user string

	mu       sync.Mutex
	failures int
	lastErr  error
	lastAddr string
	tripped  chan struct{} // closed once failures reaches saslFailureLimit
}

var _ kgo.HookBrokerE2E = (*saslWatch)(nil)

func newSASLWatch(mechanism, user string) *saslWatch {
	return &saslWatch{mechanism: mechanism, user: user, tripped: make(chan struct{})}
}

// OnBrokerE2E implements kgo.HookBrokerE2E.
func (w *saslWatch) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	err := e2e.Err()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case key == int16(kmsg.SASLHandshake) || key == int16(kmsg.SASLAuthenticate):
		if err == nil {
			return
		}
		w.failures++
		w.lastErr = err
		w.lastAddr = fmt.Sprintf("%s:%d", meta.Host, meta.Port)
		if w.failures == saslFailureLimit {
			close(w.tripped)
		}
	case key != int16(kmsg.ApiVersions) && err == nil:
		// A request got an answer, so some connection authenticated.
		if w.failures >= saslFailureLimit {
			w.tripped = make(chan struct{})
		}
		w.failures = 0
	}
}

// start forgets earlier failures and returns a channel that is closed once
// SASL fails saslFailureLimit times in a row from now on.
func (w *saslWatch) start() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failures >= saslFailureLimit {
		w.tripped = make(chan struct{})
	}
	w.failures = 0
	return w.tripped
}

// failing reports whether the last SASL exchange broke off.
func (w *saslWatch) failing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failures > 0
}

// err describes the last failure; it names the user but never the password.
func (w *saslWatch) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Errorf("SASL %s authentication as user %q to %s failed %d times in a row, last with: %w (check %s, %s and %s)",
		w.mechanism, w.user, w.lastAddr, w.failures, w.lastErr, envSASLMechanism, envSASLUser, envSASLPassword)
}

// saslWatchOf returns the watch that Options installed in cl, if any.
func saslWatchOf(cl *kgo.Client) *saslWatch {
	for _, v := range cl.OptValues(kgo.WithHooks) {
		hs, _ := v.([]kgo.Hook)
		for _, h := range hs {
			if w, ok := h.(*saslWatch); ok {
				return w
			}
		}
	}
	return nil
}
