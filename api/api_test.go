package api_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"

	"github.com/acme/orders-service"
	"github.com/acme/orders-service/api"
	"github.com/acme/orders-service/cloudevents"
)

// schemaFile is the part of a schema file these tests read.
type schemaFile struct {
	ID                   string                     `json:"$id"`
	Schema               string                     `json:"$schema"`
	Title                string                     `json:"title"`
	Properties           map[string]json.RawMessage `json:"properties"`
	Required             []string                   `json:"required"`
	AdditionalProperties *bool                      `json:"additionalProperties"`
}

func readSchema(t *testing.T, typ string) schemaFile {
	t.Helper()
	b, err := api.Files.ReadFile("schemas/" + typ + ".json")
	if err != nil {
		t.Fatalf("no schema for %s: %v", typ, err)
	}
	var s schemaFile
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("schemas/%s.json: %v", typ, err)
	}
	return s
}

// jsonFields returns the JSON names of v's fields, and those that are always
// present (no omitempty).
func jsonFields(v any) (all, always []string) {
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, opts, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name == "-" || !rt.Field(i).IsExported() {
			continue
		}
		if name == "" {
			name = rt.Field(i).Name
		}
		all = append(all, name)
		if !slices.Contains(strings.Split(opts, ","), "omitempty") {
			always = append(always, name)
		}
	}
	slices.Sort(all)
	slices.Sort(always)
	return all, always
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestEmittedSchemasMatchEventStructs derives each emitted event's fields
// from its Go struct: a field added, renamed or removed without the same
// change to its schema fails here. The schemas admit nothing else
// (additionalProperties: false) and require every field the service always
// writes.
func TestEmittedSchemasMatchEventStructs(t *testing.T) {
	for _, ev := range []orders.Event{orders.OrderCreated{}, orders.OrderFinished{}, orders.OrderCancelled{}} {
		s := readSchema(t, ev.EventType())
		all, always := jsonFields(ev)
		if got := sortedKeys(s.Properties); !slices.Equal(got, all) {
			t.Errorf("schemas/%s.json properties %v, the event's fields %v", ev.EventType(), got, all)
		}
		if got := slices.Sorted(slices.Values(s.Required)); !slices.Equal(got, always) {
			t.Errorf("schemas/%s.json requires %v, the event always has %v", ev.EventType(), got, always)
		}
		if s.AdditionalProperties == nil || *s.AdditionalProperties {
			t.Errorf("schemas/%s.json admits other properties: set additionalProperties false", ev.EventType())
		}
	}
}

// TestConsumedSchemasMatchPaymentResult: the payment schemas describe what
// the inbox decodes (orders.PaymentResult); only order_id is required, and
// producers may add fields the service ignores.
func TestConsumedSchemasMatchPaymentResult(t *testing.T) {
	all, _ := jsonFields(orders.PaymentResult{})
	for typ, want := range map[string][]string{
		orders.TypePaymentSucceeded: slices.DeleteFunc(slices.Clone(all), func(f string) bool { return f == "reason" }),
		orders.TypePaymentFailed:    all,
	} {
		s := readSchema(t, typ)
		if got := sortedKeys(s.Properties); !slices.Equal(got, want) {
			t.Errorf("schemas/%s.json properties %v, want %v (orders.PaymentResult)", typ, got, want)
		}
		if !slices.Equal(s.Required, []string{"order_id"}) {
			t.Errorf("schemas/%s.json requires %v, want [order_id]", typ, s.Required)
		}
	}
}

// TestSchemaFiles: one schema per event type, named after it, draft
// 2020-12, with the $id the events' ce_dataschema carries, all compiling.
func TestSchemaFiles(t *testing.T) {
	types := []string{orders.TypeOrderCreated, orders.TypeOrderFinished, orders.TypeOrderCancelled, orders.TypePaymentSucceeded, orders.TypePaymentFailed}
	files, err := fs.Glob(api.Files, "schemas/*")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, typ := range types {
		want = append(want, "schemas/"+typ+".json")
		s := readSchema(t, typ)
		if s.ID != cloudevents.DataSchemaURI(typ) || s.Title != typ || s.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("schemas/%s.json: $id %q, title %q, $schema %q; want %q, %q, draft 2020-12", typ, s.ID, s.Title, s.Schema, cloudevents.DataSchemaURI(typ), typ)
		}
		if !strings.HasSuffix(s.ID, "/api/schemas/"+typ+".json") {
			t.Errorf("$id %q does not name the file api/schemas/%s.json", s.ID, typ)
		}
	}
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("schema files %v, want one per event type %v", files, want)
	}
	schemas, err := api.Schemas()
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(schemas); len(got) != len(types) {
		t.Errorf("compiled %v", got)
	}
}

// TestSchemasJudgeData: the schemas accept the service's encoding of its
// events and reject what breaks the contract.
func TestSchemasJudgeData(t *testing.T) {
	schemas, err := api.Schemas()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 4, 5, 6, 7, 891000, time.UTC)
	o := &orders.Order{ID: "0190f5e4-8c1a-7b3e-9f00-1234567890ab", UserID: "alice", Amount: 1250, Currency: "EUR",
		Description: "two books\nand a pen", Status: orders.StatusNew, CreatedAt: now, UpdatedAt: now}
	enc := cloudevents.Encoder[kgo.RecordHeader]{Source: "orders-service"}
	created := o.Created()
	o.Status = orders.StatusFinished
	finished := o.Finished()
	o.Status = orders.StatusCancelled
	for _, ev := range []orders.Event{created, finished, o.Cancelled("")} {
		m, err := enc.Encode(context.Background(), ev, "", now)
		if err != nil {
			t.Fatal(err)
		}
		if err := api.Validate(schemas[ev.EventType()], m.Value); err != nil {
			t.Errorf("%s %s: %v", ev.EventType(), m.Value, err)
		}
	}
	for _, tc := range []struct {
		typ, data string
		valid     bool
	}{
		{orders.TypeOrderFinished, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","user_id":"a","status":"finished","updated_at":"2026-03-04T05:06:07Z"}`, true},
		{orders.TypeOrderFinished, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","user_id":"a","status":"finished","updated_at":"2026-03-04T05:06:07Z","extra":1}`, false},
		{orders.TypeOrderFinished, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","user_id":"a","status":"new","updated_at":"2026-03-04T05:06:07Z"}`, false},
		{orders.TypeOrderFinished, `{"order_id":"not-a-uuid","user_id":"a","status":"finished","updated_at":"2026-03-04T05:06:07Z"}`, false},
		{orders.TypeOrderFinished, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","user_id":"a","status":"finished","updated_at":"yesterday"}`, false},
		{orders.TypeOrderFinished, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","status":"finished","updated_at":"2026-03-04T05:06:07Z"}`, false},
		{orders.TypeOrderCreated, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","user_id":"a","amount":0,"currency":"USD","description":"","status":"new","created_at":"2026-03-04T05:06:07Z"}`, false},
		{orders.TypeOrderCreated, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","user_id":"a","amount":1,"currency":"usd","description":"","status":"new","created_at":"2026-03-04T05:06:07Z"}`, false},
		{orders.TypePaymentSucceeded, `{"order_id":"0190f5e4-8c1a-7b3e-9f00-1234567890ab","payment_id":"p","fee":3}`, true},
		{orders.TypePaymentFailed, `{"payment_id":"p","reason":"declined"}`, false},
	} {
		err := api.Validate(schemas[tc.typ], []byte(tc.data))
		if (err == nil) != tc.valid {
			t.Errorf("%s %s: valid = %v, want %v (%v)", tc.typ, tc.data, err == nil, tc.valid, err)
		}
	}
}

// asyncAPI is the part of asyncapi.yaml these tests read.
type asyncAPI struct {
	AsyncAPI   string `yaml:"asyncapi"`
	Components struct {
		Messages map[string]struct {
			Name    string `yaml:"name"`
			Payload struct {
				Ref string `yaml:"$ref"`
			} `yaml:"payload"`
			Headers struct {
				AllOf []struct {
					Properties map[string]struct {
						Const string `yaml:"const"`
					} `yaml:"properties"`
				} `yaml:"allOf"`
			} `yaml:"headers"`
		} `yaml:"messages"`
	} `yaml:"components"`
}

// TestAsyncAPIUsesTheSchemas: the AsyncAPI document's message for each
// event type takes its payload from that type's schema file and fixes its
// ce_type (and, for published events, ce_dataschema). The document itself
// is validated by the AsyncAPI parser (make check-asyncapi).
func TestAsyncAPIUsesTheSchemas(t *testing.T) {
	b, err := api.Files.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc asyncAPI
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Errorf("asyncapi: %q, want 3.0.0", doc.AsyncAPI)
	}
	published := []string{orders.TypeOrderCreated, orders.TypeOrderFinished, orders.TypeOrderCancelled}
	for _, typ := range append(published, orders.TypePaymentSucceeded, orders.TypePaymentFailed) {
		found := false
		for key, m := range doc.Components.Messages {
			if m.Name != typ {
				continue
			}
			found = true
			if m.Payload.Ref != "./schemas/"+typ+".json" {
				t.Errorf("message %s payload $ref %q, want ./schemas/%s.json", key, m.Payload.Ref, typ)
			}
			consts := map[string]string{}
			for _, s := range m.Headers.AllOf {
				for h, p := range s.Properties {
					consts[h] = p.Const
				}
			}
			if consts[cloudevents.HeaderType] != typ {
				t.Errorf("message %s fixes ce_type %q, want %q", key, consts[cloudevents.HeaderType], typ)
			}
			if slices.Contains(published, typ) && consts[cloudevents.HeaderDataSchema] != cloudevents.DataSchemaURI(typ) {
				t.Errorf("message %s fixes ce_dataschema %q, want %q", key, consts[cloudevents.HeaderDataSchema], cloudevents.DataSchemaURI(typ))
			}
		}
		if !found {
			t.Errorf("asyncapi.yaml has no message named %s", typ)
		}
	}
}
