package kafka

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record headers of the CloudEvents Kafka binding in binary mode, as every
// record the service publishes or consumes carries them.
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderType        = "ce_type"
	HeaderSource      = "ce_source"
	HeaderTime        = "ce_time"
	HeaderContentType = "content-type"
	HeaderTraceParent = "traceparent"
)

// Values of the fixed CloudEvents headers.
const (
	SpecVersion     = "1.0"
	ContentTypeJSON = "application/json"
)

// Headers added to a dead-lettered record, beside its original headers.
const (
	HeaderDLQError             = "dlq_error"
	HeaderDLQOriginalTopic     = "dlq_original_topic"
	HeaderDLQOriginalPartition = "dlq_original_partition"
	HeaderDLQOriginalOffset    = "dlq_original_offset"
)

// CloudEvent is the metadata carried in a record's CloudEvents headers.
type CloudEvent struct {
	ID          string    // ce_id: the event's identity, the same on every redelivery
	Type        string    // ce_type, e.g. orders.v1.OrderCreated
	Source      string    // ce_source
	Time        time.Time // ce_time
	TraceParent string    // traceparent; empty when no trace is active
}

// Headers returns the event's record headers: the CloudEvents attributes
// with spec version 1.0, ce_time in RFC 3339 (UTC), content-type
// application/json, and traceparent when set.
func (e CloudEvent) Headers() []kgo.RecordHeader {
	hs := []kgo.RecordHeader{
		{Key: HeaderSpecVersion, Value: []byte(SpecVersion)},
		{Key: HeaderID, Value: []byte(e.ID)},
		{Key: HeaderType, Value: []byte(e.Type)},
		{Key: HeaderSource, Value: []byte(e.Source)},
		{Key: HeaderTime, Value: []byte(e.Time.UTC().Format(time.RFC3339Nano))},
		{Key: HeaderContentType, Value: []byte(ContentTypeJSON)},
	}
	if e.TraceParent != "" {
		hs = append(hs, kgo.RecordHeader{Key: HeaderTraceParent, Value: []byte(e.TraceParent)})
	}
	return hs
}

// CloudEventOf reads the CloudEvents headers of r. Missing headers leave
// their fields empty; Time is zero when ce_time is missing or not RFC 3339.
func CloudEventOf(r *kgo.Record) CloudEvent {
	e := CloudEvent{}
	e.ID, _ = Header(r, HeaderID)
	e.Type, _ = Header(r, HeaderType)
	e.Source, _ = Header(r, HeaderSource)
	e.TraceParent, _ = Header(r, HeaderTraceParent)
	if s, ok := Header(r, HeaderTime); ok {
		e.Time, _ = time.Parse(time.RFC3339Nano, s)
	}
	return e
}

// MessageID identifies r for deduplication: its ce_id header, or
// "<topic>/<partition>/<offset>" when it has none or one containing '/',
// which could equal another record's position.
func MessageID(r *kgo.Record) string {
	if id, ok := Header(r, HeaderID); ok && id != "" && !strings.Contains(id, "/") {
		return id
	}
	return fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
}

// Header returns the value of r's first header named key.
func Header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// SetHeader returns hs with key set to value: the first header named key
// gets the value and later ones are dropped, or the header is appended.
func SetHeader(hs []kgo.RecordHeader, key, value string) []kgo.RecordHeader {
	out := hs[:0:0]
	set := false
	for _, h := range hs {
		if h.Key != key {
			out = append(out, h)
			continue
		}
		if !set {
			out = append(out, kgo.RecordHeader{Key: key, Value: []byte(value)})
			set = true
		}
	}
	if !set {
		out = append(out, kgo.RecordHeader{Key: key, Value: []byte(value)})
	}
	return out
}

// DeadLetter returns the record to publish on the dead-letter topic for r:
// r's key, value and headers, minus any earlier dlq_* headers, plus
// dlq_error (reason), dlq_original_topic, dlq_original_partition and
// dlq_original_offset. r is not modified.
func DeadLetter(r *kgo.Record, topic, reason string) *kgo.Record {
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+4)
	for _, h := range r.Headers {
		if !strings.HasPrefix(h.Key, "dlq_") {
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		kgo.RecordHeader{Key: HeaderDLQError, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderDLQOriginalTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderDLQOriginalPartition, Value: []byte(strconv.FormatInt(int64(r.Partition), 10))},
		kgo.RecordHeader{Key: HeaderDLQOriginalOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: hs}
}
