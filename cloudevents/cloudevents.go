// Package cloudevents is the CloudEvents Kafka protocol binding in binary
// mode as the service writes and reads it: the header names and fixed
// values, building and reading an event's headers, the message id the inbox
// deduplicates on, the dead-letter copy of a record, and the encoding of the
// domain's events (Encoder) that the outbox stores.
//
// Its functions take any header type shaped as struct{Key string; Value
// []byte}, such as franz-go's kgo.RecordHeader or postgres.Header, so it
// depends on no Kafka client and converts no header slices.
package cloudevents

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Record headers of the CloudEvents Kafka binding in binary mode.
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderType        = "ce_type"
	HeaderSource      = "ce_source"
	HeaderTime        = "ce_time"
	HeaderContentType = "content-type"
	HeaderDataSchema  = "ce_dataschema"
	HeaderTraceParent = "traceparent"
)

// Values of the fixed CloudEvents headers.
const (
	SpecVersion     = "1.0"
	ContentTypeJSON = "application/json"
)

// SchemaBaseURI is where the JSON Schemas of the events' data live: the
// repository's api/schemas directory, one file per event type.
const SchemaBaseURI = "https://github.com/acme/orders-service/blob/main/api/schemas/"

// DataSchemaURI returns the ce_dataschema of events of type ceType: the URI
// of the JSON Schema of their data, which is also that schema's $id.
func DataSchemaURI(ceType string) string {
	return SchemaBaseURI + ceType + ".json"
}

// Header is the constraint of the header types this package reads and
// writes.
type Header interface {
	~struct {
		Key   string
		Value []byte
	}
}

// header is the shape every Header type converts to and from.
type header = struct {
	Key   string
	Value []byte
}

// Event is the metadata an event's CloudEvents headers carry.
type Event struct {
	ID          string    // ce_id: the event's identity, the same on every redelivery
	Type        string    // ce_type, e.g. orders.v1.OrderCreated
	Source      string    // ce_source
	Time        time.Time // ce_time
	DataSchema  string    // ce_dataschema (DataSchemaURI); empty: no header
	TraceParent string    // traceparent; empty when no trace is active
}

// AppendHeaders appends e's record headers to hs: ce_specversion 1.0,
// ce_id, ce_type, ce_source, ce_time in RFC 3339 (UTC, with the fraction of
// a second when there is one), content-type application/json, and
// ce_dataschema and traceparent when e has them.
func AppendHeaders[H Header](hs []H, e Event) []H {
	hs = append(hs,
		H(header{HeaderSpecVersion, []byte(SpecVersion)}),
		H(header{HeaderID, []byte(e.ID)}),
		H(header{HeaderType, []byte(e.Type)}),
		H(header{HeaderSource, []byte(e.Source)}),
		H(header{HeaderTime, e.Time.UTC().AppendFormat(nil, time.RFC3339Nano)}),
		H(header{HeaderContentType, []byte(ContentTypeJSON)}),
	)
	if e.DataSchema != "" {
		hs = append(hs, H(header{HeaderDataSchema, []byte(e.DataSchema)}))
	}
	if e.TraceParent != "" {
		hs = append(hs, H(header{HeaderTraceParent, []byte(e.TraceParent)}))
	}
	return hs
}

// Parse reads an event's attributes from hs, each from the last header of
// its name (Lookup). A missing header leaves its field empty; Time is zero
// when ce_time is missing or not RFC 3339.
func Parse[H Header](hs []H) Event {
	var e Event
	e.ID, _ = Lookup(hs, HeaderID)
	e.Type, _ = Lookup(hs, HeaderType)
	e.Source, _ = Lookup(hs, HeaderSource)
	e.DataSchema, _ = Lookup(hs, HeaderDataSchema)
	e.TraceParent, _ = Lookup(hs, HeaderTraceParent)
	if s, ok := Lookup(hs, HeaderTime); ok {
		e.Time, _ = time.Parse(time.RFC3339Nano, s)
	}
	return e
}

// Lookup returns the value of the last header named key in hs, as Kafka's
// Headers.lastHeader does, and whether there is one.
func Lookup[H Header](hs []H, key string) (string, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if h := header(hs[i]); h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// MaxMessageIDLen is the longest ce_id used as a message id.
const MaxMessageIDLen = 255

// Position is where a record was read.
type Position struct {
	Topic     string
	Partition int32
	Offset    int64
}

// String returns "<topic>/<partition>/<offset>", the message id of a
// record without a usable ce_id.
func (p Position) String() string {
	return p.Topic + "/" + strconv.FormatInt(int64(p.Partition), 10) + "/" + strconv.FormatInt(p.Offset, 10)
}

// MessageID returns the id under which the inbox stores, and deduplicates,
// the record read at pos with headers hs: its ce_id (Lookup) when that is
// non-empty, valid UTF-8 without NUL, at most MaxMessageIDLen bytes long and
// free of '/', else pos.String(). Every position contains '/', so no ce_id
// can equal another record's position.
//
// A ce_id that qualifies but for a '/' is returned as alias: versions before
// this rule stored it as the message id, and a redelivery of a record stored
// then must still be recognised by it. alias is empty otherwise.
func MessageID[H Header](pos Position, hs []H) (id, alias string) {
	ceID, _ := Lookup(hs, HeaderID)
	if ceID == "" || len(ceID) > MaxMessageIDLen || !utf8.ValidString(ceID) || strings.ContainsRune(ceID, 0) {
		return pos.String(), ""
	}
	if strings.Contains(ceID, "/") {
		return pos.String(), ceID
	}
	return ceID, ""
}
