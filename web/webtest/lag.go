package webtest

import (
	"context"
	"sync"

	"tidings/data"
	"tidings/realtime"
)

// LagStore is the store of a hub that a test makes lag on purpose. It passes the streams' reads
// through to the store it wraps, so the node's streams and /api/last-event-id work as ever, but
// while it is held it swallows what the listener reports (notifications and reconnects): with
// the poll of webtest (an hour), the hub is not woken, and its head stays where it was however
// far the database moves on. So that a wake-up already pending when Hold is called changes
// nothing, the hub's own reads of the table (those made under the context of its Run) find
// nothing new while held. Release passes reports again and wakes the hub, which catches up.
//
// Start a node on one with Options.Lag; Node.Lag is then its LagStore.
type LagStore struct {
	realtime.Store // set at construction: the real store

	hub *realtime.Hub // set by Start before the hub runs

	mu       sync.Mutex
	held     bool                     // guarded by mu
	up       bool                     // guarded by mu: the listener's last report was not ListenerDown
	swallow  bool                     // guarded by mu: an up report was swallowed: the hub thinks the listener is down
	report   func(data.ListenerState) // guarded by mu: the hub's report, while Listen runs
	swallows int                      // guarded by mu: reports swallowed and hub reads found empty
}

// NewLagStore wraps store. It starts released.
func NewLagStore(store realtime.Store) *LagStore { return &LagStore{Store: store} }

// hubRead marks the context of the hub's Run, which its own reads of the table are made under.
type hubRead struct{}

// hubContext returns ctx for the hub's Run: the store tells its reads from the streams'.
func hubContext(ctx context.Context) context.Context { return context.WithValue(ctx, hubRead{}, true) }

// After reads the wrapped store, except that a read of the hub's own while held finds nothing.
func (l *LagStore) After(ctx context.Context, after int64, limit int) ([]data.Event, error) {
	if ctx.Value(hubRead{}) == nil {
		return l.Store.After(ctx, after, limit)
	}
	if l.swallowHubRead() {
		return nil, nil
	}
	evs, err := l.Store.After(ctx, after, limit)
	// A read that began before Hold but ends after it finds nothing either: from Hold on,
	// the hub's head does not move.
	if l.swallowHubRead() {
		return nil, nil
	}
	return evs, err
}

// swallowHubRead reports whether the store is held, counting a swallowed read if so.
func (l *LagStore) swallowHubRead() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held {
		l.swallows++
	}
	return l.held
}

// Listen runs the wrapped store's listener, passing its reports to report except, while the
// store is held, ListenerUp and ListenerNotified. ListenerDown always passes.
func (l *LagStore) Listen(ctx context.Context, cfg data.ListenerConfig, report func(data.ListenerState)) error {
	l.mu.Lock()
	l.report = report
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.report = nil
		l.mu.Unlock()
	}()
	return l.Store.Listen(ctx, cfg, func(s data.ListenerState) {
		// Under mu, so that Release's report and this one reach the hub in the order in which
		// they happened.
		l.mu.Lock()
		defer l.mu.Unlock()
		l.up = s != data.ListenerDown
		if l.held && s != data.ListenerDown {
			l.swallows++
			if s == data.ListenerUp {
				l.swallow = true
			}
			return
		}
		l.swallow = false
		report(s)
	})
}

// Hold makes the hub lag from now on: it hears of no new event until Release.
func (l *LagStore) Hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = true
}

// Release lets the hub hear of new events again and wakes it, so that it reads what it missed.
func (l *LagStore) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = false
	if l.swallow && l.up && l.report != nil {
		l.report(data.ListenerUp) // the listener came back while held: say so, which wakes the hub
	}
	l.swallow = false
	if l.hub != nil {
		l.hub.Wake()
	}
}

// Held reports whether the store is held.
func (l *LagStore) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Swallowed returns how many listener reports the store kept from the hub so far, and how many
// of the hub's reads it answered with nothing.
func (l *LagStore) Swallowed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.swallows
}
