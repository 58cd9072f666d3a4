package postgres

// DecodeHeadersFast exposes the fast path of decodeHeaders to tests that
// need a database.
var DecodeHeadersFast = decodeHeadersFast
