package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/migrations"
)

// How a command waits for its database (TIDINGS_DB_WAIT): each try may take tryTimeout (a
// server that accepts and never answers is a failed try, not a hang); the pause between tries
// starts near firstBackoff and doubles up to maxBackoff, each drawn at random between half
// and all of it, so that nodes started together do not knock in step.
const (
	tryTimeout   = 5 * time.Second
	firstBackoff = 250 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// database is an open database: the pool, and the managed cluster when this process started
// or attached to one.
type database struct {
	pool    *pgxpool.Pool
	managed *data.Managed
}

// close closes the pool, then stops the managed cluster (an attached one is left running).
func (d *database) close() error {
	if d.pool != nil {
		d.pool.Close()
	}
	if d.managed == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.managed.Stop(ctx)
}

// openDatabase opens the database of cfg, waiting for it up to cfg.dbWait: DATABASE_URL, or
// with none the managed cluster in <data dir>/postgres, which it starts (or, with attach,
// uses where another process runs it). Each failed try is logged. The caller closes it.
func openDatabase(ctx context.Context, cfg config, log *slog.Logger, attach bool) (*database, error) {
	db := &database{}
	var dir string
	if cfg.databaseURL == "" {
		var err error
		if dir, err = filepath.Abs(filepath.Join(cfg.dataDir, "postgres")); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	err := retry(ctx, cfg.dbWait, log, func(ctx context.Context) (again bool, err error) {
		url := cfg.databaseURL
		if url == "" {
			if db.managed == nil {
				m, err := data.StartManaged(ctx, data.ManagedConfig{Dir: dir, Logger: log, Attach: attach})
				if err != nil {
					// Another process runs it (a user create, say) or is still starting it:
					// that passes. Anything else (no binaries, a bad directory) does not.
					return errors.Is(err, data.ErrManagedRunning), err
				}
				db.managed = m
			}
			url = db.managed.URL()
		}
		tryCtx, cancel := context.WithTimeout(ctx, tryTimeout)
		defer cancel()
		pool, err := data.OpenPool(tryCtx, url, 0)
		if err != nil {
			return true, err
		}
		db.pool = pool
		return false, nil
	})
	if err != nil {
		return nil, errors.Join(err, db.close())
	}
	return db, nil
}

// retry calls try until it succeeds, says not to try again, or wait has passed since the first
// try (0: one try), pausing between tries with backoff and jitter and logging each failure.
// It returns try's last error, saying how long it waited, or ctx's error when ctx ends.
func retry(ctx context.Context, wait time.Duration, log *slog.Logger, try func(context.Context) (again bool, err error)) error {
	start := time.Now()
	deadline := start.Add(wait)
	backoff := firstBackoff
	for n := 1; ; n++ {
		again, err := try(ctx)
		if err == nil {
			if n > 1 {
				log.Info("database reachable", "tries", n, "waited", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		left := time.Until(deadline)
		if !again || left <= 0 {
			if !again {
				return fmt.Errorf("database: %w", err)
			}
			return fmt.Errorf("database not reachable after %d tries in %s (TIDINGS_DB_WAIT=%s): %w",
				n, time.Since(start).Round(time.Millisecond), wait, err)
		}
		pause := min(backoff/2+rand.N(backoff/2+1), left)
		backoff = min(2*backoff, maxBackoff)
		log.Warn("database not reachable; trying again", "try", n, "in", pause.Round(time.Millisecond),
			"giveUpIn", left.Round(100*time.Millisecond), "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// withDatabase opens the database (attaching to the managed cluster that a running node owns,
// or starting it), applies the migrations, calls fn, and closes everything it opened.
func withDatabase(ctx context.Context, cfg config, log *slog.Logger, fn func(*pgxpool.Pool) error) (err error) {
	db, err := openDatabase(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.close()) }()
	if err := data.Migrate(ctx, db.pool, migrations.FS, log); err != nil {
		return err
	}
	return fn(db.pool)
}
