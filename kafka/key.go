package kafka

import (
	"encoding/hex"
	"unicode"
	"unicode/utf8"
)

// KeyText renders a record key for logs and listings: a text key as it is
// (an order id), a null key as (null), and any other bytes, such as a key
// that is not UTF-8 or holds control characters, as 0x and their hex digits.
func KeyText(key []byte) string {
	if key == nil {
		return "(null)"
	}
	if utf8.Valid(key) {
		printable := true
		for _, r := range string(key) {
			if !unicode.IsPrint(r) {
				printable = false
				break
			}
		}
		if printable {
			return string(key)
		}
	}
	return "0x" + hex.EncodeToString(key)
}
