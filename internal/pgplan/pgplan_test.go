package pgplan

import (
	"strings"
	"testing"
)

const bitmapPlan = `[{"Plan": {"Node Type": "Limit", "Plans": [
	{"Node Type": "Sort", "Plans": [
		{"Node Type": "Bitmap Heap Scan", "Relation Name": "orders", "Plans": [
			{"Node Type": "Bitmap Index Scan", "Index Name": "orders_user_created"}]}]}]}}]`

const seqPlan = `[{"Plan": {"Node Type": "Limit", "Plans": [
	{"Node Type": "Sort", "Plans": [
		{"Node Type": "Seq Scan", "Relation Name": "outbox"}]}]}}]`

func TestCheckIndexed(t *testing.T) {
	bitmap, err := Parse([]byte(bitmapPlan))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bitmap.String(), "Limit > Sort > Bitmap Heap Scan on orders > Bitmap Index Scan using orders_user_created"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if err := bitmap.CheckIndexed("orders", "orders_user_created"); err != nil {
		t.Errorf("bitmap index scan rejected: %v", err)
	}
	if err := bitmap.CheckIndexed("orders", "orders_pkey"); err == nil || !strings.Contains(err.Error(), "index orders_pkey not used") {
		t.Errorf("scan of another index accepted: %v", err)
	}

	seq, err := Parse([]byte(seqPlan))
	if err != nil {
		t.Fatal(err)
	}
	err = seq.CheckIndexed("outbox", "outbox_unsent")
	if err == nil || !strings.Contains(err.Error(), "sequential scan of outbox") || !strings.Contains(err.Error(), "index outbox_unsent not used") {
		t.Errorf("sequential scan accepted: %v", err)
	}
}

func TestParseRejectsOtherOutput(t *testing.T) {
	for _, raw := range []string{`{}`, `[]`, `not json`} {
		if _, err := Parse([]byte(raw)); err == nil {
			t.Errorf("Parse(%q) succeeded", raw)
		}
	}
}

func TestLiteral(t *testing.T) {
	for in, want := range map[any]string{"o'brien": "'o''brien'", 50: "50", int64(7): "7"} {
		got, err := literal(in)
		if err != nil || got != want {
			t.Errorf("literal(%v) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := literal(1.5); err == nil {
		t.Error("literal(1.5) succeeded")
	}
}
