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
