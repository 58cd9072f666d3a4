// Package ratelimit limits requests per user with token buckets, tracking a
// bounded number of users.
package ratelimit

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxUsers is the number of users tracked when New is given none.
const DefaultMaxUsers = 10_000

// Limiter holds one token bucket per user. Memory is bounded: at most
// maxUsers buckets exist, and a new user takes the place of the least
// recently seen one. A dropped bucket that was idle for burst/rate seconds
// was full anyway, so nothing is lost; under heavier churn the dropped user
// merely starts again with a full burst. A nil Limiter allows everything.
type Limiter struct {
	limit    rate.Limit
	burst    int
	maxUsers int
	now      func() time.Time

	mu    sync.Mutex
	users map[string]*list.Element // values are *bucket
	lru   list.List                // front: most recently seen
}

type bucket struct {
	user string
	lim  *rate.Limiter
}

// New returns a Limiter allowing each user perSecond requests on average
// and up to burst at once, tracking at most maxUsers users. perSecond <= 0
// disables limiting; burst < 1 means 1; maxUsers < 1 means DefaultMaxUsers.
func New(perSecond float64, burst, maxUsers int) *Limiter {
	if maxUsers < 1 {
		maxUsers = DefaultMaxUsers
	}
	return &Limiter{
		limit:    rate.Limit(perSecond),
		burst:    max(burst, 1),
		maxUsers: maxUsers,
		now:      time.Now,
		users:    make(map[string]*list.Element),
	}
}

// Enabled reports whether l limits anything.
func (l *Limiter) Enabled() bool { return l != nil && l.limit > 0 }

// Allow reports whether user may make a request now, and if so takes a
// token from the user's bucket. It is safe for concurrent use.
func (l *Limiter) Allow(user string) bool {
	if !l.Enabled() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bucket(user).AllowN(l.now(), 1)
}

// bucket returns user's bucket, creating it (and dropping the least recently
// seen one when full) as needed. l.mu must be held.
func (l *Limiter) bucket(user string) *rate.Limiter {
	if e, ok := l.users[user]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*bucket).lim
	}
	if len(l.users) >= l.maxUsers {
		oldest := l.lru.Back()
		delete(l.users, oldest.Value.(*bucket).user)
		l.lru.Remove(oldest)
	}
	b := &bucket{user: user, lim: rate.NewLimiter(l.limit, l.burst)}
	l.users[user] = l.lru.PushFront(b)
	return b.lim
}

// Len returns the number of users tracked now.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.users)
}
