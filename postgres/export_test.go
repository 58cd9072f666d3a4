package postgres

// DecodeHeadersFast exposes the fast path of decodeHeaders to tests that
// need a database.
var DecodeHeadersFast = decodeHeadersFast

// HeaderList exposes headerList, as the claims scan it, to tests that need
// a database.
type HeaderList = headerList
