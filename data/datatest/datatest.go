// Package datatest gives each test its own PostgreSQL database with every migration applied.
//
// A test binary calls Main from TestMain. The server is TIDINGS_TEST_DATABASE_URL when set (its
// user must be allowed to create databases), otherwise an ephemeral managed cluster in a temp
// directory, started on first use and stopped when the tests end. Migrations run once per test
// binary into a template database; each test database is a copy of it, so making one is cheap.
package datatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/migrations"
)

const (
	setupTimeout = 2 * time.Minute  // starting the cluster and migrating the template
	closeTimeout = 10 * time.Second // closing a test's pool
)

// current is this test binary's environment. It is package state because the helpers receive
// only a testing.TB: Main sets it before running the tests and clears it after.
var current *environment

// environment is the server and template shared by one test binary's tests.
type environment struct {
	// Set by Main.
	externalURL string // TIDINGS_TEST_DATABASE_URL; empty: start a managed cluster

	// Guarded by setupMu; set by the first setup call.
	setupMu  sync.Mutex
	setupErr error // setup failed: every later test fails with it at once
	ready    bool
	dir      string // temp directory of the managed cluster
	managed  *data.Managed
	adminURL string
	admin    *pgxpool.Pool // on the maintenance database
	template string

	// Held while a database is copied from the template: PostgreSQL refuses concurrent copies.
	createMu sync.Mutex
}

// Main runs a test binary's tests against a real PostgreSQL: it uses TIDINGS_TEST_DATABASE_URL
// when set, otherwise starts an Ephemeral managed cluster in a temp dir for this binary and
// stops it after m.Run. Call it from TestMain: func TestMain(m *testing.M) { datatest.Main(m) }
// (it calls os.Exit). When every test passed, it also fails the run if a goroutine of tidings,
// of a WebSocket or of a database connection outlived the tests.
func Main(m *testing.M) {
	current = &environment{externalURL: os.Getenv("TIDINGS_TEST_DATABASE_URL")}
	code := m.Run()
	if err := current.close(); err != nil {
		fmt.Fprintf(os.Stderr, "datatest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		// No goroutine, socket or database session may outlive the tests that made it.
		if err := checkGoroutines(5 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "datatest: %v\n", err)
			code = 1
		}
	}
	current = nil
	os.Exit(code)
}

// NewDatabase creates a fresh database for this test, with every migration applied, drops it
// (WITH (FORCE)) in t.Cleanup, and returns its connection string.
func NewDatabase(t testing.TB) string {
	t.Helper()
	e := setup(t)
	name, connString, err := e.createDatabase()
	if err != nil {
		t.Fatalf("datatest: %v", err)
	}
	t.Cleanup(func() {
		if err := e.dropDatabase(name); err != nil {
			t.Errorf("datatest: %v", err)
		}
	})
	return connString
}

// NewPool returns a pgxpool.Pool on a fresh database (NewDatabase), closed in t.Cleanup.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, cleanup, err := CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	})
	return pool
}

// CreateDatabase is NewPool for code that has no testing.TB, such as an Example function: it
// creates a fresh database with every migration applied and returns a pool on it, and a
// cleanup that closes the pool and drops the database (WITH (FORCE)). Call cleanup once, after
// everything that uses the pool has stopped. Like the other helpers, it needs Main.
func CreateDatabase(ctx context.Context) (pool *pgxpool.Pool, cleanup func() error, err error) {
	e, err := current.ensureSetup()
	if err != nil {
		return nil, nil, fmt.Errorf("datatest: %w", err)
	}
	name, connString, err := e.createDatabase()
	if err != nil {
		return nil, nil, fmt.Errorf("datatest: %w", err)
	}
	drop := func() error {
		if err := e.dropDatabase(name); err != nil {
			return fmt.Errorf("datatest: %w", err)
		}
		return nil
	}
	pool, err = pgxpool.New(ctx, connString)
	if err == nil {
		err = pool.Ping(ctx)
		if err != nil {
			pool.Close()
		}
	}
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("datatest: open pool: %w", err), drop())
	}
	cleanup = func() error {
		var closeErr error
		if err := closePool(pool); err != nil {
			closeErr = fmt.Errorf("datatest: %w", err)
		}
		return errors.Join(closeErr, drop())
	}
	return pool, cleanup, nil
}

// createDatabase copies the template into a database with a fresh name.
func (e *environment) createDatabase() (name, connString string, err error) {
	name = randomName("tidings_test_")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.createMu.Lock()
	_, err = e.admin.Exec(ctx, "CREATE DATABASE "+quote(name)+" TEMPLATE "+quote(e.template))
	e.createMu.Unlock()
	if err != nil {
		return "", "", fmt.Errorf("create database %s: %w", name, err)
	}
	connString, err = withDatabase(e.adminURL, name)
	if err != nil {
		return "", "", errors.Join(err, e.dropDatabase(name))
	}
	return name, connString, nil
}

// dropDatabase drops a database made by createDatabase, ending its sessions.
func (e *environment) dropDatabase(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// closePool closes pool. Close waits for every acquired connection: a caller that failed
// holding one would hang, so give up after closeTimeout and say so; the drop then ends it.
func closePool(pool *pgxpool.Pool) error {
	closed := make(chan struct{})
	go func() {
		pool.Close()
		close(closed)
	}()
	select {
	case <-closed:
		return nil
	case <-time.After(closeTimeout):
		return fmt.Errorf("pool still open after %v: %d connections not released (a Rows, Tx or Conn left open)",
			closeTimeout, pool.Stat().AcquiredConns())
	}
}

// AdminURL returns the connection string of the maintenance database (for tests that need
// pg_terminate_backend etc.).
func AdminURL(t testing.TB) string {
	t.Helper()
	return setup(t).adminURL
}

// setup returns the environment, starting the server and migrating the template on first use.
func setup(t testing.TB) *environment {
	t.Helper()
	e, err := current.ensureSetup()
	if err != nil {
		t.Fatalf("datatest: %v", err)
	}
	return e
}

// ensureSetup returns e once its server runs and its template is migrated, setting both up on
// first use; e is nil when Main was not called.
func (e *environment) ensureSetup() (*environment, error) {
	if e == nil {
		return nil, errors.New("Main was not called: add func TestMain(m *testing.M) { datatest.Main(m) }")
	}
	e.setupMu.Lock()
	defer e.setupMu.Unlock()
	if !e.ready && e.setupErr == nil {
		e.setupErr = e.setupLocked()
		e.ready = e.setupErr == nil
	}
	if e.setupErr != nil {
		return nil, e.setupErr
	}
	return e, nil
}

func (e *environment) setupLocked() error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	e.adminURL = e.externalURL
	if e.adminURL == "" {
		dir, err := os.MkdirTemp("", "tidings-test-")
		if err != nil {
			return fmt.Errorf("temp dir: %w", err)
		}
		e.dir = dir
		// When running as root the cluster runs as the postgres user, which must traverse it.
		if err := os.Chmod(dir, 0o711); err != nil {
			return fmt.Errorf("temp dir: %w", err)
		}
		e.managed, err = data.StartManaged(ctx, data.ManagedConfig{Dir: filepath.Join(dir, "pg"), Ephemeral: true})
		if err != nil {
			return err
		}
		e.adminURL = e.managed.URL()
	}
	admin, err := pgxpool.New(ctx, e.adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(e.adminURL), err)
	}
	e.admin = admin
	name := randomName("tidings_tmpl_")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+quote(name)); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	e.template = name // close drops it even if migrating fails
	tmplURL, err := withDatabase(e.adminURL, name)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, tmplURL)
	if err != nil {
		return fmt.Errorf("connect to template database: %w", err)
	}
	err = data.Migrate(ctx, pool, migrations.FS, nil)
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate template database: %w", err)
	}
	// No stray session may hold the template while it is copied.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+quote(name)+" WITH ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("close template database: %w", err)
	}
	return nil
}

// close drops the template, closes the admin pool, and stops and removes the managed cluster.
func (e *environment) close() error {
	e.setupMu.Lock()
	defer e.setupMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if e.admin != nil {
		// A managed cluster is deleted whole; a shared server keeps nothing of ours.
		if e.template != "" && e.managed == nil {
			if _, err := e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+quote(e.template)+" WITH (FORCE)"); err != nil {
				errs = append(errs, fmt.Errorf("drop template database: %w", err))
			}
		}
		e.admin.Close()
	}
	if e.managed != nil {
		if err := e.managed.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if e.dir != "" {
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove temp dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// withDatabase returns connString (a URL or keyword/value string) naming database instead.
func withDatabase(connString, database string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", fmt.Errorf("parse connection string: %w", err)
		}
		u.Path, u.RawPath = "/"+database, ""
		if q := u.Query(); q.Has("dbname") {
			q.Del("dbname")
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	return connString + " dbname=" + database, nil // the last keyword wins
}

// redact hides the password of a URL connection string, for error messages.
func redact(connString string) string {
	if u, err := url.Parse(connString); err == nil && u.User != nil {
		return u.Redacted()
	}
	return "TIDINGS_TEST_DATABASE_URL"
}

func quote(name string) string { return pgx.Identifier{name}.Sanitize() }

// randomName returns prefix and 12 random hex digits: unique across test binaries sharing a
// server.
func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b) // never fails
	return prefix + hex.EncodeToString(b)
}
