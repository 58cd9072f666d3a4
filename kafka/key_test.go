package kafka

import "testing"

func TestKeyText(t *testing.T) {
	for _, c := range []struct {
		key  []byte
		want string
	}{
		{nil, "(null)"},
		{[]byte{}, ""},
		{[]byte("0190a5b2-7c3e-7f00-8000-000000000001"), "0190a5b2-7c3e-7f00-8000-000000000001"},
		{[]byte("zürich"), "zürich"},
		{[]byte{0xff, 0x00, 0x01}, "0xff0001"},
		{[]byte("a\nb"), "0x610a62"},
	} {
		if got := KeyText(c.key); got != c.want {
			t.Errorf("KeyText(%#v) = %q, want %q", c.key, got, c.want)
		}
	}
}
