package web

import (
	"net/http"
	"sync"
)

// DefaultMaxStreamsPerSession is how many streams one session may hold open on a node when
// Config.MaxStreamsPerSession is 0: a few tabs and windows of one browser.
const DefaultMaxStreamsPerSession = 16

// DefaultMaxStreamsPerAddress is how many streams one client address may hold open on a node
// when Config.MaxStreamsPerAddress is 0 (docs/protocol.md section 5): a large office behind one
// NAT, far below what one node holds.
const DefaultMaxStreamsPerAddress = 1000

var errTooManyStreams = &apiError{http.StatusTooManyRequests, "too-many-streams", "too many streams are open for this session or address; close some"}

// streamCounts counts the open streams of each session and each client address.
type streamCounts struct {
	mu        sync.Mutex
	bySession map[int64]int  // guarded by mu
	byAddr    map[string]int // guarded by mu
}

// acquire counts a new stream of session (0: anonymous) from the client address addr (a key
// of clientAddr), unless that would pass a limit (a negative limit: none); release uncounts
// it. limitAddr false exempts the address from its limit (a loopback client); its streams
// are counted all the same.
func (c *streamCounts) acquire(addr string, limitAddr bool, session int64, maxSession, maxAddr int) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bySession == nil {
		c.bySession, c.byAddr = map[int64]int{}, map[string]int{}
	}
	if (session != 0 && maxSession > 0 && c.bySession[session] >= maxSession) ||
		(limitAddr && maxAddr > 0 && c.byAddr[addr] >= maxAddr) {
		return nil, false
	}
	if session != 0 {
		c.bySession[session]++
	}
	c.byAddr[addr]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if session != 0 {
			if c.bySession[session]--; c.bySession[session] <= 0 {
				delete(c.bySession, session)
			}
		}
		if c.byAddr[addr]--; c.byAddr[addr] <= 0 {
			delete(c.byAddr, addr)
		}
	}, true
}
