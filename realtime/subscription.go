package realtime

import (
	"slices"
	"sync"

	"github.com/coder/websocket"
)

// CloseReason is a close code with its reason text.
type CloseReason struct {
	Code   websocket.StatusCode
	Reason string
}

// The close reasons of docs/protocol.md section 2.
var (
	CloseGoingAway      = CloseReason{1001, "going-away"}
	ClosePolicy         = CloseReason{websocket.StatusPolicyViolation, "too many invalid frames"}
	CloseInternal       = CloseReason{websocket.StatusInternalError, ""}
	CloseSessionExpired = CloseReason{4001, "session-expired"}
	CloseSessionRotated = CloseReason{4002, "session-rotated"}
	CloseLogout         = CloseReason{4003, "logout"}
	CloseAccessChanged  = CloseReason{4003, "access-changed"}
	CloseUserDeleted    = CloseReason{4003, "user-deleted"}
	CloseSessionTaken   = CloseReason{4003, "session-taken"}
	CloseTooSlow        = CloseReason{4004, "too-slow"}
)

// Subscription is one stream's registration with the hub: the hub wakes it when the log grows,
// and anyone may ask it to close.
type Subscription struct {
	hub       *Hub
	stream    *stream       // the stream it serves; nil for a bare subscription
	wake      chan struct{} // capacity 1; nil for a stream's subscription
	sessionID int64         // 0: none
	userID    int64         // 0: none
	cutoff    int64         // control events up to it are reflected in the viewer already

	mu      sync.Mutex
	closeAs *CloseReason // guarded by mu: the first close asked for
}

// signal wakes the subscriber without blocking: a stream's drive, or a bare subscription's
// owner.
func (s *Subscription) signal() {
	if s.stream != nil {
		s.stream.kick()
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// closedBy returns the close that event e asks of this subscription, if it is a control event
// after the subscription's cut-off that names its session or user.
func (s *Subscription) closedBy(e *Event) *CloseReason {
	c := e.Close
	if c == nil || e.ID <= s.cutoff {
		return nil
	}
	if (s.sessionID != 0 && slices.Contains(c.SessionIDs, s.sessionID)) ||
		(s.userID != 0 && slices.Contains(c.UserIDs, s.userID)) {
		return &CloseReason{websocket.StatusCode(c.Code), c.Reason}
	}
	return nil
}

// Close asks the stream to close with r. The first reason asked for wins; it never blocks.
func (s *Subscription) Close(r CloseReason) {
	s.mu.Lock()
	if s.closeAs == nil {
		s.closeAs = &r
	}
	s.mu.Unlock()
	s.signal()
}

// closeReason returns the close asked for, if any.
func (s *Subscription) closeReason() *CloseReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeAs
}

// Unsubscribe removes the subscription from its hub.
func (s *Subscription) Unsubscribe() {
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	removeIndex(s.hub.bySession, s.sessionID, s)
	removeIndex(s.hub.byUser, s.userID, s)
	s.hub.mu.Unlock()
}
