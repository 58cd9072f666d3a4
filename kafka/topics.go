package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// EnsureTopics creates those of topics that do not exist yet, with the given
// partitions and replication factor (-1 for either means the broker's
// default). It asks the brokers' metadata first and creates only the topics
// it says are missing, so a client without CREATE permission (the usual
// grant on managed Kafka) succeeds when its topics exist; they are left as
// they are. Topics that are missing (or may not be described) and that the
// broker refuses to create come back as a *MissingTopicsError. When the
// broker cannot be reached before ctx ends, the one error returned names the
// topics and the reason.
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, replicationFactor int16, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	if partitions == 0 || partitions < -1 {
		return fmt.Errorf("ensure topics: invalid partition count %d (want > 0, or -1 for the broker default)", partitions)
	}
	if replicationFactor == 0 || replicationFactor < -1 {
		return fmt.Errorf("ensure topics: invalid replication factor %d (want > 0, or -1 for the broker default)", replicationFactor)
	}
	w := saslWatchOf(cl)
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if w != nil {
		tripped := w.start()
		go func() {
			select {
			case <-tripped:
				cancel(w.err())
			case <-reqCtx.Done():
			}
		}()
	}
	failed := func(err error) error {
		switch {
		case ctx.Err() == nil && reqCtx.Err() != nil:
			err = context.Cause(reqCtx) // the SASL watch gave up
		case w != nil && ctx.Err() != nil && w.failing():
			err = fmt.Errorf("%w; %w", err, w.err())
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("no answer in time: %w", err)
		case errors.Is(err, kerr.SaslAuthenticationFailed):
			err = fmt.Errorf("%w (check %s, %s and %s)", err, envSASLMechanism, envSASLUser, envSASLPassword)
		}
		return fmt.Errorf("ensure topics %s on %s: %w", quoteAll(topics), seedBrokers(cl), err)
	}
	missing, err := missingTopics(reqCtx, cl, topics)
	if err != nil {
		return failed(err)
	}
	if len(missing) == 0 {
		return nil
	}
	// kadm.Client.Close would close cl, which belongs to the caller.
	resps, err := kadm.NewClient(cl).CreateTopics(reqCtx, partitions, replicationFactor, nil, missing...)
	if err != nil {
		return failed(err)
	}
	var errs []error
	var refused []string
	for _, t := range missing {
		r, ok := resps[t]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("create topic %q: broker did not answer for it", t))
			continue
		case r.Err == nil, errors.Is(r.Err, kerr.TopicAlreadyExists):
			continue
		case r.ErrMessage != "" && !strings.Contains(r.Err.Error(), r.ErrMessage):
			errs = append(errs, fmt.Errorf("create topic %q: %w: %s", t, r.Err, r.ErrMessage))
		default:
			errs = append(errs, fmt.Errorf("create topic %q: %w", t, r.Err))
		}
		if !kerr.IsRetriable(r.Err) {
			refused = append(refused, t)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	err = fmt.Errorf("ensure topics: %w", joinedError(errs))
	if len(refused) > 0 {
		return &MissingTopicsError{Topics: refused, Err: err}
	}
	return err
}

// missingTopics asks the brokers' metadata which of topics do not exist, or
// may not be described (only CreateTopics can tell then), without creating
// any.
func missingTopics(ctx context.Context, cl *kgo.Client, topics []string) ([]string, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	exists := map[string]bool{}
	for _, rt := range resp.Topics {
		if rt.Topic == nil {
			continue
		}
		switch err := kerr.ErrorForCode(rt.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.TopicAuthorizationFailed):
		default: // no error, or one of a topic that exists (LEADER_NOT_AVAILABLE during an election)
			exists[*rt.Topic] = true
		}
	}
	var missing []string
	for _, t := range topics {
		if !exists[t] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// TopicDifference is a setting in which an existing topic differs from what
// EnsureTopics would have created.
type TopicDifference struct {
	Topic   string
	Setting string // "partitions" or "replication factor"
	Have    int
	Want    int
}

// TopicDifferences compares existing topics with the partitions and
// replication factor EnsureTopics was asked for. Replication -1 means the
// broker's default.replication.factor, compared only while the cluster has
// that many brokers; partitions -1 is not compared. Topics that do not exist
// are not reported.
func TopicDifferences(ctx context.Context, cl *kgo.Client, partitions int32, replicationFactor int16, topics ...string) ([]TopicDifference, error) {
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describe topics %s: %w", quoteAll(topics), err)
	}
	wantRF := int(replicationFactor)
	if wantRF == -1 {
		if wantRF, err = defaultReplicationFactor(ctx, adm); err != nil {
			return nil, err
		}
	}
	var diffs []TopicDifference
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			continue // absent, or created so recently that this broker has no metadata yet
		}
		if partitions > 0 && len(d.Partitions) != int(partitions) {
			diffs = append(diffs, TopicDifference{t, "partitions", len(d.Partitions), int(partitions)})
		}
		if have := d.Partitions.NumReplicas(); wantRF > 0 && have != wantRF {
			diffs = append(diffs, TopicDifference{t, "replication factor", have, wantRF})
		}
	}
	return diffs, nil
}

// defaultReplicationFactor reads default.replication.factor from the first
// broker that answers.
// It returns 0 (nothing to compare) when the broker does not say or when
// fewer brokers are up than the default asks for: a single-node development
// broker, or a degraded cluster.
func defaultReplicationFactor(ctx context.Context, adm *kadm.Client) (int, error) {
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return 0, fmt.Errorf("list brokers: %w", err)
	}
	if len(brokers) == 0 {
		return 0, nil
	}
	// Any live broker will do: the first one may be down.
	var rcs kadm.ResourceConfigs
	for i, b := range brokers {
		rcs, err = adm.DescribeBrokerConfigs(ctx, b.NodeID)
		if err == nil {
			break
		}
		if err = fmt.Errorf("describe broker %d configs: %w", b.NodeID, err); i == len(brokers)-1 || ctx.Err() != nil {
			return 0, err
		}
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			continue
		}
		for _, c := range rc.Configs {
			if c.Key != "default.replication.factor" || c.Value == nil {
				continue
			}
			n, err := strconv.Atoi(*c.Value)
			if err != nil {
				return 0, fmt.Errorf("broker default.replication.factor %q: %w", *c.Value, err)
			}
			if n > len(brokers) {
				return 0, nil
			}
			return n, nil
		}
	}
	return 0, nil
}

// joinedError joins errors on one line, unlike errors.Join.
type joinedError []error

func (e joinedError) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e joinedError) Unwrap() []error { return e }

func seedBrokers(cl *kgo.Client) string {
	seeds, _ := cl.OptValue(kgo.SeedBrokers).([]string)
	return strings.Join(seeds, ",")
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// IsAuthenticationFailure reports whether err says the brokers refused the
// client's SASL credentials, which no retry can fix.
func IsAuthenticationFailure(err error) bool {
	return errors.Is(err, kerr.SaslAuthenticationFailed)
}

// MissingTopicsError says topics do not exist and the broker refused to
// create them (no CREATE permission, a policy): a fault of the
// configuration, unlike a broker that cannot be reached.
type MissingTopicsError struct {
	Topics []string
	Err    error
}

func (e *MissingTopicsError) Error() string { return e.Err.Error() }
func (e *MissingTopicsError) Unwrap() error { return e.Err }
