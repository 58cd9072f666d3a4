// Package pgdsn hides the secrets of PostgreSQL connection strings (DSNs),
// in URL form (postgres://user:password@host/db?sslpassword=...) and in
// keyword/value form (host=db password = 'x y'): in the DSN itself, for logs,
// and in the errors that code parsing or using the DSN returns.
//
// Both forms are read the way pgx reads them, so what pgx takes for a
// password is what is masked; a DSN this package cannot read is hidden whole.
package pgdsn

import (
	"errors"
	"net/url"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Mask replaces each secret.
const Mask = "xxxxx"

// Hidden stands for a DSN too malformed to mask piece by piece.
const Hidden = "(unparsable DSN hidden)"

// secretKey reports whether a DSN key holds a secret: any key containing
// "password" (password, sslpassword).
func secretKey(k string) bool { return strings.Contains(strings.ToLower(k), "password") }

// isURL reports whether pgx reads dsn as a URL.
func isURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Redact returns dsn with every secret masked: a URL's password and the value
// of every key secretKey names, in either form. A DSN that cannot be read is
// replaced by Hidden.
func Redact(dsn string) string {
	if isURL(dsn) || strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return Hidden
		}
		q := u.Query()
		masked := false
		for k := range q {
			if secretKey(k) {
				q[k] = []string{Mask}
				masked = true
			}
		}
		if masked {
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	pairs, err := keywordValues(dsn)
	if err != nil {
		return Hidden
	}
	var b strings.Builder
	last := 0
	for _, p := range pairs {
		if secretKey(p.key) {
			b.WriteString(dsn[last:p.start])
			b.WriteString(Mask)
			last = p.end
		}
	}
	b.WriteString(dsn[last:])
	return b.String()
}

// secrets returns the secret values of dsn, each as written and as read;
// ok is false when dsn cannot be read.
func secrets(dsn string) (s []string, ok bool) {
	add := func(v ...string) {
		for _, x := range v {
			if x != "" && !slices.Contains(s, x) {
				s = append(s, x)
			}
		}
	}
	if isURL(dsn) || strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, false
		}
		if pw, set := u.User.Password(); set {
			add(pw, rawURLPassword(dsn))
		}
		for _, kv := range strings.Split(u.RawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if dk, err := url.QueryUnescape(k); err == nil && secretKey(dk) || secretKey(k) {
				dv, _ := url.QueryUnescape(v)
				add(v, dv)
			}
		}
		return s, true
	}
	pairs, err := keywordValues(dsn)
	if err != nil {
		return nil, false
	}
	for _, p := range pairs {
		if secretKey(p.key) {
			add(p.value, dsn[p.start:p.end], strings.Trim(dsn[p.start:p.end], "'"))
		}
	}
	return s, true
}

// rawURLPassword is the password of a URL as written (still escaped), found
// as net/url finds it: the authority ends at the first '/' after the fragment
// and query are cut off, the user information at its last '@'.
func rawURLPassword(dsn string) string {
	_, rest, _ := strings.Cut(dsn, "://")
	rest, _, _ = strings.Cut(rest, "#")
	rest, _, _ = strings.Cut(rest, "?")
	rest, _, _ = strings.Cut(rest, "/")
	i := strings.LastIndex(rest, "@")
	if i < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:i], ":")
	return pw
}

// pair is one keyword/value setting; start:end is the value as written
// (quotes included).
type pair struct {
	key, value string
	start, end int
}

const space = " \t\n\r\v\f"

// keywordValues reads a keyword/value DSN as pgx's parseKeywordValueSettings
// does (libpq's rules: spaces around '=', single quotes, backslash escapes).
func keywordValues(dsn string) ([]pair, error) {
	var pairs []pair
	pos := len(dsn) - len(strings.TrimLeft(dsn, space))
	for pos < len(dsn) {
		eq := strings.IndexByte(dsn[pos:], '=')
		if eq < 0 {
			return nil, errors.New("invalid keyword/value")
		}
		key := strings.Trim(dsn[pos:pos+eq], space)
		if strings.ContainsAny(key, space) {
			return nil, errors.New(`missing "=" after a keyword`)
		}
		pos += eq + 1
		pos += len(dsn[pos:]) - len(strings.TrimLeft(dsn[pos:], space))
		p := pair{key: key, start: pos}
		switch {
		case pos == len(dsn):
			p.end = pos
		case dsn[pos] != '\'':
			end := pos
			for ; end < len(dsn); end++ {
				if strings.IndexByte(space, dsn[end]) >= 0 {
					break
				}
				if dsn[end] == '\\' {
					end++
					if end == len(dsn) {
						break
					}
				}
			}
			p.end, p.value = end, unescape(dsn[pos:end])
		default:
			end := pos + 1
			for ; end < len(dsn); end++ {
				if dsn[end] == '\'' {
					break
				}
				if dsn[end] == '\\' {
					end++
					if end == len(dsn) {
						break
					}
				}
			}
			if end >= len(dsn) {
				return nil, errors.New("unterminated quoted string")
			}
			p.end, p.value = end+1, unescape(dsn[pos+1:end])
		}
		pairs = append(pairs, p)
		pos = p.end
		pos += len(dsn[pos:]) - len(strings.TrimLeft(dsn[pos:], space))
	}
	return pairs, nil
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// maskedError is an error whose text has the DSN's secrets masked.
type maskedError struct {
	msg string
	err error // nil when the wrapped error carries the DSN itself
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

// Error returns err with the secrets of dsn masked in its text. errors.Is and
// errors.As still see err's chain, except a pgconn.ParseConfigError, which
// holds the DSN unmasked: its chain is cut off. A nil err stays nil.
func Error(err error, dsn string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	next := err
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		msg = parseErrorText(msg, pce, dsn)
		next = nil
	}
	s, ok := secrets(dsn)
	if !ok {
		if pce == nil {
			// An unreadable DSN cannot have connected: nothing but parsing
			// can fail, so this is not expected; hide the text to be safe.
			msg = "PostgreSQL connection string " + Hidden
		}
		return &maskedError{msg: msg, err: next}
	}
	slices.SortFunc(s, func(a, b string) int { return len(b) - len(a) })
	for _, x := range s {
		msg = strings.ReplaceAll(msg, x, Mask)
	}
	return &maskedError{msg: msg, err: next}
}

// parseErrorText rewrites the text of a pgx parse error: pgx masks the
// passwords it recognises, but misses some forms (password = x), so the DSN it
// shows is replaced by Redact's. The text has the form
// "<prefix>cannot parse `<dsn>`: <msg>[ (<cause>)]".
func parseErrorText(text string, pce *pgconn.ParseConfigError, dsn string) string {
	const open = "cannot parse `"
	i := strings.Index(text, open)
	if i < 0 {
		return "cannot parse the PostgreSQL connection string (details hidden: they may hold a password)"
	}
	prefix, rest := text[:i], text[i+len(open):]
	cause := ""
	if inner := pce.Unwrap(); inner != nil {
		cause = inner.Error()
		rest = strings.TrimSuffix(rest, " ("+cause+")")
	}
	j := strings.LastIndex(rest, "`: ")
	if j < 0 {
		return "cannot parse the PostgreSQL connection string (details hidden: they may hold a password)"
	}
	msg := prefix + open + Redact(dsn) + "`: " + rest[j+len("`: "):]
	if _, ok := secrets(dsn); ok && cause != "" {
		msg += " (" + cause + ")"
	}
	return msg
}
