package data

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EventsChannel is the NOTIFY channel that every append (tidings_append_events) signals. Its
// payload is a hint only.
const EventsChannel = "events"

// ListenerConfig configures Events.Listen and Presence.Listen. The zero value of each field means its default.
type ListenerConfig struct {
	// Check is how often an idle listener checks that its connection is alive (default 15s).
	Check time.Duration
	// MaxBackoff caps the wait between reconnection attempts (default 5s).
	MaxBackoff time.Duration
	// Timeout bounds each database call of the listener: connecting, LISTEN, and the idle
	// check (default 5s). A call that does not answer in time (a connection black-holed by a
	// failover, which no RST ends) tears the connection down, and the listener reconnects.
	Timeout time.Duration
	// Logger receives connection losses and recoveries; nil discards them.
	Logger *slog.Logger
}

// ListenerState is what Listen reports to its caller.
type ListenerState int

// The listener states.
const (
	// ListenerUp: the listener has (re)connected and is LISTENing; anything committed before
	// this moment may have been missed, so the caller catches up from the table.
	ListenerUp ListenerState = iota + 1
	// ListenerNotified: a NOTIFY arrived (for Presence.Listen, one that carried a valid
	// signature).
	ListenerNotified
	// ListenerDown: the connection was lost; the listener is reconnecting.
	ListenerDown
)

// Listen holds one dedicated connection (outside the pool) that LISTENs on EventsChannel, and
// calls report for every state change and notification until ctx ends. It reconnects with
// capped exponential backoff and jitter. report must not block for long.
func (s *Events) Listen(ctx context.Context, cfg ListenerConfig, report func(ListenerState)) error {
	return listen(ctx, s.pool, cfg, "event", []string{EventsChannel}, func(st ListenerState, _ *pgconn.Notification) {
		report(st)
	})
}

// listen is the reconnecting loop behind every listener: it holds one dedicated connection
// (outside pool) that LISTENs on channels, and calls report for every state change, with each
// notification (nil for ListenerUp and ListenerDown), until ctx ends. It reconnects with
// capped exponential backoff and jitter. name says which listener it is in the logs.
func listen(ctx context.Context, pool *pgxpool.Pool, cfg ListenerConfig, name string, channels []string,
	report func(ListenerState, *pgconn.Notification)) error {
	if cfg.Check <= 0 {
		cfg.Check = 15 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stmt := make([]string, len(channels))
	for i, c := range channels {
		stmt[i] = "LISTEN " + pgx.Identifier{c}.Sanitize()
	}
	l := listener{pool: pool, cfg: cfg, listen: strings.Join(stmt, "; "), report: report}
	backoff := 50 * time.Millisecond
	for {
		err := l.once(ctx, func() { backoff = 50 * time.Millisecond })
		if ctx.Err() != nil {
			return nil
		}
		report(ListenerDown, nil)
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn(name+" listener lost its connection; reconnecting", "err", err, "retryIn", wait.Round(time.Millisecond))
		backoff = min(backoff*2, cfg.MaxBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// listener is one run of listen: set at its start, never changed.
type listener struct {
	pool   *pgxpool.Pool
	cfg    ListenerConfig // defaults applied
	listen string         // the LISTEN statements
	report func(ListenerState, *pgconn.Notification)
}

// once connects, LISTENs and relays notifications until the connection fails. Every call but
// the wait for a notification ends within cfg.Timeout: pgx's default context watcher sets a
// past deadline on the socket when the context ends, so even a read that no packet will ever
// answer returns (and pgx closes that connection).
func (l *listener) once(ctx context.Context, connected func()) error {
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, l.cfg.Timeout) }
	callCtx, cancel := call()
	conn, err := pgx.ConnectConfig(callCtx, l.pool.Config().ConnConfig.Copy())
	cancel()
	if err != nil {
		return fmt.Errorf("listener connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	callCtx, cancel = call()
	_, err = conn.Exec(callCtx, l.listen)
	cancel()
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	connected()
	l.report(ListenerUp, nil)
	for {
		waitCtx, cancel := context.WithTimeout(ctx, l.cfg.Check)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			l.report(ListenerNotified, n)
		case ctx.Err() != nil:
			return ctx.Err()
		case !conn.PgConn().IsClosed():
			// The wait timed out while idle: make sure the connection still works.
			callCtx, cancel := call()
			_, err := conn.Exec(callCtx, "SELECT 1")
			cancel()
			if err != nil {
				return fmt.Errorf("listener check: %w", err)
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}
