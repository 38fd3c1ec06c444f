package data

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// EventsChannel is the NOTIFY channel that every append (tidings_append_events) signals. Its
// payload is a hint only.
const EventsChannel = "events"

// ListenerConfig configures Listen. The zero value of each field means its default.
type ListenerConfig struct {
	// Check is how often an idle listener checks that its connection is alive (default 15s).
	Check time.Duration
	// MaxBackoff caps the wait between reconnection attempts (default 5s).
	MaxBackoff time.Duration
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
	// ListenerNotified: a NOTIFY arrived.
	ListenerNotified
	// ListenerDown: the connection was lost; the listener is reconnecting.
	ListenerDown
)

// Listen holds one dedicated connection (outside the pool) that LISTENs on EventsChannel, and
// calls report for every state change and notification until ctx ends. It reconnects with
// capped exponential backoff and jitter. report must not block for long.
func (s *Events) Listen(ctx context.Context, cfg ListenerConfig, report func(ListenerState)) error {
	if cfg.Check <= 0 {
		cfg.Check = 15 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 50 * time.Millisecond
	for {
		err := s.listenOnce(ctx, cfg.Check, report, func() { backoff = 50 * time.Millisecond })
		if ctx.Err() != nil {
			return nil
		}
		report(ListenerDown)
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("event listener lost its connection; reconnecting", "err", err, "retryIn", wait.Round(time.Millisecond))
		backoff = min(backoff*2, cfg.MaxBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// listenOnce connects, LISTENs and relays notifications until the connection fails.
func (s *Events) listenOnce(ctx context.Context, check time.Duration, report func(ListenerState), connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("listener connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{EventsChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	connected()
	report(ListenerUp)
	for {
		waitCtx, cancel := context.WithTimeout(ctx, check)
		_, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			report(ListenerNotified)
		case ctx.Err() != nil:
			return ctx.Err()
		case !conn.PgConn().IsClosed():
			// The wait timed out while idle: make sure the connection still works.
			if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
				return fmt.Errorf("listener check: %w", err)
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}
