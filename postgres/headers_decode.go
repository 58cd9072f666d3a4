package postgres

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/acme/orders-service/cloudevents"
)

// decodeHeaders reads a headers column as json.Unmarshal into headerList
// reads it. The relay and the inbox claim decode one per row, so the usual
// shape (PostgreSQL's jsonb output of what encodeHeaders wrote: an array of
// objects with "key" and "value" or "value_base64", strings without escapes)
// is parsed directly, with one allocation for all the values; anything else
// (escapes, other members, null members, bad JSON) goes through
// encoding/json, which gives the same result or error.
func decodeHeaders(b []byte) ([]Header, error) {
	if hs, ok := decodeHeadersFast(b); ok {
		return hs, nil
	}
	var l headerList
	if err := l.decodeSlow(b); err != nil {
		return nil, err
	}
	return l, nil
}

// decodeHeadersFast parses the usual shape of b; ok is false when b is not
// of that shape, whether or not it is valid JSON.
func decodeHeadersFast(b []byte) (hs []Header, ok bool) {
	p := headerParser{b: b}
	p.space()
	if p.literal("null") {
		p.space()
		return nil, p.i == len(p.b)
	}
	if !p.byte('[') {
		return nil, false
	}
	// Values are copied into one buffer; each is capped at its length so
	// that an append to one cannot overwrite the next.
	vals := make([]byte, 0, len(b))
	hs = make([]Header, 0, 8)
	p.space()
	if p.byte(']') {
		p.space()
		return hs, p.i == len(p.b)
	}
	for {
		p.space()
		h, ok := p.header(&vals)
		if !ok {
			return nil, false
		}
		hs = append(hs, h)
		p.space()
		if p.byte(']') {
			break
		}
		if !p.byte(',') {
			return nil, false
		}
	}
	p.space()
	return hs, p.i == len(p.b)
}

type headerParser struct {
	b []byte
	i int
}

func (p *headerParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *headerParser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *headerParser) literal(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

// str parses a JSON string without escapes or control characters whose
// content is valid UTF-8, and returns its content.
func (p *headerParser) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// header parses one {"key": ..., "value": ...} or {"key": ...,
// "value_base64": ...} object, members in any order, a repeated member's
// last value counting, as encoding/json does.
func (p *headerParser) header(vals *[]byte) (Header, bool) {
	var key, value, value64 []byte
	var hasKey, hasValue, hasValue64 bool
	if !p.byte('{') {
		return Header{}, false
	}
	p.space()
	if !p.byte('}') {
		for {
			p.space()
			name, ok := p.str()
			if !ok {
				return Header{}, false
			}
			p.space()
			if !p.byte(':') {
				return Header{}, false
			}
			p.space()
			v, ok := p.str()
			if !ok {
				return Header{}, false
			}
			switch string(name) {
			case "key":
				key, hasKey = v, true
			case "value":
				value, hasValue = v, true
			case "value_base64":
				value64, hasValue64 = v, true
			default: // encoding/json matches names case-insensitively and skips others
				return Header{}, false
			}
			p.space()
			if p.byte('}') {
				break
			}
			if !p.byte(',') {
				return Header{}, false
			}
		}
	}
	var h Header
	if hasKey {
		h.Key = headerKey(key)
	}
	switch {
	case hasValue:
		h.Value = appendCapped(vals, value)
	case hasValue64:
		n := base64.StdEncoding.DecodedLen(len(value64))
		start := len(*vals)
		if cap(*vals)-start < n {
			return Header{}, false // not reached: base64 never decodes longer than its text
		}
		m, err := base64.StdEncoding.Decode((*vals)[start:start+n], value64)
		if err != nil {
			return Header{}, false // the slow path reports it
		}
		*vals = (*vals)[:start+m]
		h.Value = (*vals)[start : start+m : start+m]
	}
	return h, true
}

// appendCapped appends v to *vals and returns the appended part, capped.
func appendCapped(vals *[]byte, v []byte) []byte {
	start := len(*vals)
	*vals = append(*vals, v...)
	return (*vals)[start:len(*vals):len(*vals)]
}

// headerKey returns the event headers' usual names without allocating.
func headerKey(b []byte) string {
	for _, k := range knownHeaderKeys {
		if string(b) == k {
			return k
		}
	}
	return string(b)
}

var knownHeaderKeys = []string{
	cloudevents.HeaderSpecVersion, cloudevents.HeaderID, cloudevents.HeaderType, cloudevents.HeaderSource,
	cloudevents.HeaderTime, cloudevents.HeaderContentType, cloudevents.HeaderDataSchema, cloudevents.HeaderTraceParent,
}

// headerList is scanned by pgx through ScanBytes, which skips the
// validation pass json.Unmarshal makes before UnmarshalJSON.
var _ pgtype.BytesScanner = (*headerList)(nil)

// ScanBytes decodes a jsonb column's text (SQL NULL: nil headers). pgx
// owns b: decodeHeaders keeps none of it.
func (l *headerList) ScanBytes(b []byte) error {
	if b == nil {
		*l = nil
		return nil
	}
	return l.UnmarshalJSON(b)
}

// UnmarshalJSON decodes b as an array of Header.UnmarshalJSON objects.
func (l *headerList) UnmarshalJSON(b []byte) error {
	hs, err := decodeHeaders(b)
	if err != nil {
		return err
	}
	*l = hs
	return nil
}

// decodeSlow decodes b with encoding/json.
func (l *headerList) decodeSlow(b []byte) error {
	var js []jsonHeader
	if err := json.Unmarshal(b, &js); err != nil {
		return err
	}
	if js == nil {
		*l = nil
		return nil
	}
	hs := make([]Header, len(js))
	for i, j := range js {
		hs[i].Key = j.Key
		switch {
		case j.Value != nil:
			hs[i].Value = []byte(*j.Value)
		case j.ValueBase64 != nil:
			v, err := base64.StdEncoding.DecodeString(*j.ValueBase64)
			if err != nil {
				return fmt.Errorf("header %q: %w", j.Key, err)
			}
			hs[i].Value = v
		}
	}
	*l = hs
	return nil
}
