package data

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateLockKey is the advisory lock that serializes migrations across nodes starting at once.
const migrateLockKey = 0x7469_6469_6e67_7301 // "tidings" + 1

type migration struct {
	version int
	name    string
	sql     string
}

// Migrate applies, in order, every migration in files (NNNN_name.sql) that the database has not
// recorded yet, each in its own transaction. Nodes starting at once are serialized by an
// advisory lock, so each migration runs exactly once. It logs each step and a summary.
func Migrate(ctx context.Context, pool *pgxpool.Pool, files fs.FS, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	all, err := readMigrations(files)
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLockKey)); err != nil {
		return fmt.Errorf("migrate: take lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must be released even when ctx was cancelled.
		unlockCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(unlockCtx, "SELECT pg_advisory_unlock($1)", int64(migrateLockKey)); err != nil {
			conn.Conn().Close(unlockCtx) // closing the session releases the lock too
		}
	}()
	// Created only when missing: CREATE TABLE IF NOT EXISTS needs the right to create in the
	// schema even when the table exists, and nodes that run as a role without it (the node
	// role of docs/operations.md, "Roles and grants") must get past this with nothing pending.
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('tidings_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("migrate: look for tidings_migrations: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS tidings_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("migrate: create tidings_migrations: %w", err)
		}
	}
	applied := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM tidings_migrations")
	if err != nil {
		return fmt.Errorf("migrate: read applied: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("migrate: read applied: %w", err)
	}
	for _, v := range versions {
		applied[int(v)] = true
	}
	var pending []migration
	for _, m := range all {
		if !applied[m.version] {
			pending = append(pending, m)
		}
	}
	start := time.Now()
	for i, m := range pending {
		log.Info("applying migration", "step", fmt.Sprintf("%d/%d", i+1, len(pending)), "version", m.version, "name", m.name)
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO tidings_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate: apply %04d_%s: %w", m.version, m.name, err)
		}
	}
	log.Info("migrations done", "applied", len(pending), "total", len(all), "elapsed", time.Since(start).Round(time.Millisecond))
	return checkSchemaNeeds(ctx, conn, all)
}

// ErrSchemaTooNew means the database's schema was contracted by a newer release than this
// binary: it no longer holds something this release uses.
var ErrSchemaTooNew = errors.New("the schema is too new for this release")

// checkSchemaNeeds refuses a schema whose tidings_schema.needs_migration (migration 0009) is a
// migration this binary does not have: a newer release removed something that this one uses.
// A schema with newer migrations that only expand it is fine (a rolling upgrade).
func checkSchemaNeeds(ctx context.Context, conn *pgxpool.Conn, known []migration) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('tidings_schema') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("migrate: look for tidings_schema: %w", err)
	}
	if !exists || len(known) == 0 {
		return nil // migrations without 0009 (tests of the runner itself)
	}
	var needs int
	if err := conn.QueryRow(ctx, "SELECT needs_migration FROM tidings_schema").Scan(&needs); err != nil {
		return fmt.Errorf("migrate: read tidings_schema: %w", err)
	}
	if latest := known[len(known)-1].version; needs > latest {
		return fmt.Errorf("migrate: %w: it needs a tidings that has migration %04d, and this one has up to %04d; "+
			"run the release that applied it (docs/operations.md, Upgrading)", ErrSchemaTooNew, needs, latest)
	}
	return nil
}

// readMigrations lists the *.sql files of files in version order and checks their names.
func readMigrations(files fs.FS) ([]migration, error) {
	names, err := fs.Glob(files, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrate: list files: %w", err)
	}
	var all []migration
	seen := map[int]string{}
	for _, name := range names {
		base := strings.TrimSuffix(path.Base(name), ".sql")
		num, rest, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil || version <= 0 || rest == "" {
			return nil, fmt.Errorf("migrate: file %q is not named NNNN_name.sql", name)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migrate: files %q and %q share version %d", other, name, version)
		}
		seen[version] = name
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, fmt.Errorf("migrate: read %s: %w", name, err)
		}
		all = append(all, migration{version: version, name: rest, sql: string(body)})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].version < all[j].version })
	return all, nil
}
