// Package pagetoken turns a GetOrders cursor into an opaque page token and
// back. A token is signed with a key shared by all replicas and bound to the
// user it was issued for, so it can be neither forged nor replayed against
// another user's list.
package pagetoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/acme/orders-service"
)

const (
	version = 1
	macLen  = 16
	bodyLen = 1 + 8 + 16 // version, created_at in Unix microseconds, order id
	// MaxLen bounds the token length accepted before any decoding work.
	MaxLen = 64
)

// ErrInvalid is returned for every token that is malformed, tampered with or
// issued for another user; callers answer INVALID_ARGUMENT.
var ErrInvalid = errors.New("invalid page token")

// Encode returns the token for cursor c in userID's list.
func Encode(key []byte, userID string, c orders.Cursor) string {
	id, err := uuid.Parse(c.ID)
	if err != nil {
		// Cursors come from stored orders, whose ids are UUIDs.
		panic("pagetoken: cursor id is not a UUID: " + c.ID)
	}
	buf := make([]byte, bodyLen, bodyLen+macLen)
	buf[0] = version
	binary.BigEndian.PutUint64(buf[1:9], uint64(c.CreatedAt.UnixMicro()))
	copy(buf[9:], id[:])
	buf = append(buf, sign(key, userID, buf)...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// Decode returns the cursor in token, which must have been issued by Encode
// with the same key for the same userID.
func Decode(key []byte, userID, token string) (orders.Cursor, error) {
	if len(token) > MaxLen || !urlSafe(token) {
		return orders.Cursor{}, ErrInvalid
	}
	buf, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(buf) != bodyLen+macLen || buf[0] != version {
		return orders.Cursor{}, ErrInvalid
	}
	if !hmac.Equal(buf[bodyLen:], sign(key, userID, buf[:bodyLen])) {
		return orders.Cursor{}, ErrInvalid
	}
	micros := int64(binary.BigEndian.Uint64(buf[1:9]))
	id, _ := uuid.FromBytes(buf[9:bodyLen])
	return orders.Cursor{CreatedAt: time.UnixMicro(micros).UTC(), ID: id.String()}, nil
}

func sign(key []byte, userID string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(userID))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)[:macLen]
}

// urlSafe reports whether s holds only the base64url alphabet; the decoder
// itself would skip line breaks, so one token would have many spellings.
func urlSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
