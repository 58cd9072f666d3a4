package postgres

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzEncodeHeaders: encodeHeaders writes what json.Marshal writes, up to
// spelling (jsonb keeps the decoded values, not the escapes), and
// headerList reads back what []Header reads.
func FuzzEncodeHeaders(f *testing.F) {
	for _, seed := range []struct{ key, value string }{
		{"ce_id", "0190f5e4-8c1a-7b3e-9f00-1234567890ab"},
		{"quote\"back\\slash", "tab\tnew\nline\rbell\x07del\x7f"},
		{"html", "<a href=\"x\">&amp;</a> \u2028\u2029"},
		{"unicode ключ 🔑", "значение ✓"},
		{"bad\xffkey", "binary\x00\x01\xfe"},
		{"", ""},
	} {
		f.Add(seed.key, []byte(seed.value))
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		for _, hs := range [][]Header{nil, {}, {{Key: key, Value: value}}, {{Key: key}, {Key: "k", Value: value}, {Key: key, Value: []byte("v")}}} {
			got, err := encodeHeaders(hs)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(hs)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(got) {
				t.Fatalf("encodeHeaders(%q) = %s: not JSON", hs, got)
			}
			var fromGot, fromWant []Header
			if err := json.Unmarshal(got, &fromGot); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &fromWant); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromGot, fromWant) {
				t.Fatalf("encodeHeaders(%q) decodes to %q, json.Marshal's to %q", hs, fromGot, fromWant)
			}
			var list headerList
			if err := json.Unmarshal(want, &list); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual([]Header(list), fromWant) {
				t.Fatalf("headerList read %q, []Header %q", list, fromWant)
			}
		}
	})
}

// FuzzDecodeHeaders: decodeHeaders, fast path or not, reads any input as
// headerList read it through encoding/json alone: the same headers (nil and
// empty values told apart) or an error for the same inputs.
func FuzzDecodeHeaders(f *testing.F) {
	for _, seed := range []string{
		`null`, `[]`, ` [ ] `, `[{}]`, `[null]`, `{}`, `[`, `[{"key":"a"}`, `[{"key":"a"}]x`,
		`[{"key": "ce_id", "value": "0190f5e4-8c1a-7b3e-9f00-1234567890ab"}, {"key": "ce_type", "value": "orders.v1.OrderCreated"}]`,
		`[{"value": "v", "key": "k", "key": "k2"}]`,
		`[{"key": "k", "value_base64": "AAH+"}]`, `[{"key": "k", "value_base64": "AAH"}]`, `[{"key": "k", "value_base64": "A\nAH+"}]`,
		`[{"key": "k", "value": "", "value_base64": "AA=="}]`, `[{"key": "k", "value": null}]`, `[{"key": "k", "value": 1}]`,
		`[{"KEY": "k", "Value": "v"}]`, `[{"key": "k", "other": "x"}]`, `[{"key": "t\tab", "value": "q\"uote \u00e9"}]`,
		"[{\"key\": \"bad\xff\", \"value\": \"\xfe\"}]", "[{\"key\": \"ключ 🔑\", \"value\": \"✓\"}]",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotErr := decodeHeaders(b)
		var want headerList
		wantErr := want.decodeSlow(b)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("decodeHeaders(%q): error %v, encoding/json's %v", b, gotErr, wantErr)
		}
		if gotErr == nil && !reflect.DeepEqual(got, []Header(want)) {
			t.Fatalf("decodeHeaders(%q) = %#v, encoding/json's %#v", b, got, []Header(want))
		}
		fast, _ := decodeHeadersFast(b)
		for i := range fast { // values share one buffer: none may have spare capacity
			if cap(fast[i].Value) != len(fast[i].Value) {
				t.Fatalf("decodeHeadersFast(%q): value %d has spare capacity", b, i)
			}
		}
	})
}

// TestDecodeHeadersTakesTheFastPathForStoredHeaders: an event's headers as
// PostgreSQL prints the jsonb encodeHeaders wrote are read without
// encoding/json, which would allocate per header.
func TestDecodeHeadersTakesTheFastPathForStoredHeaders(t *testing.T) {
	stored := `[{"key": "ce_specversion", "value": "1.0"}, {"key": "ce_id", "value": "0190f5e4-8c1a-7b3e-9f00-1234567890ab"}, ` +
		`{"key": "bin", "value_base64": "AAH+"}, {"key": "traceparent", "value": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}]`
	hs, ok := decodeHeadersFast([]byte(stored))
	if !ok {
		t.Fatalf("decodeHeadersFast(%s) fell back", stored)
	}
	if len(hs) != 4 || string(hs[2].Value) != "\x00\x01\xfe" || hs[3].Key != "traceparent" {
		t.Fatalf("decodeHeadersFast(%s) = %q", stored, hs)
	}
	b := []byte(stored)
	if allocs := testing.AllocsPerRun(100, func() { _, _ = decodeHeaders(b) }); allocs > 3 {
		t.Fatalf("decodeHeaders allocates %v times, want at most 3 (values, headers, the key bin)", allocs)
	}
}
