package data

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// managedDir returns a cluster directory (not yet created) under t.TempDir. The temp
// directories are 0700; when running as root the postgres user must traverse them.
func managedDir(t *testing.T, name string) string {
	t.Helper()
	tmp := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{filepath.Dir(tmp), tmp} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatalf("chmod %s: %v", d, err)
			}
		}
	}
	return filepath.Join(tmp, name)
}

func startManaged(t *testing.T, cfg ManagedConfig) *Managed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := StartManaged(ctx, cfg)
	if err != nil {
		t.Fatalf("StartManaged: %v", err)
	}
	t.Cleanup(func() { m.Stop(context.Background()) })
	return m
}

func stopManaged(t *testing.T, m *Managed) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// queryInt runs query on database and returns its single integer.
func queryInt(t *testing.T, connString, query string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func exec1(t *testing.T, connString, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestManagedStartStopReuse(t *testing.T) {
	t.Parallel()
	cfg := ManagedConfig{Dir: managedDir(t, "pg"), Ephemeral: true}

	m := startManaged(t, cfg)
	if got := queryInt(t, m.URL(), "SELECT 1"); got != 1 {
		t.Fatalf("SELECT 1: got %d, want 1", got)
	}
	exec1(t, m.URL(), "CREATE DATABASE reuse")
	exec1(t, m.URLFor("reuse"), "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
	stopManaged(t, m)
	stopManaged(t, m) // a second Stop is a no-op
	if _, err := os.Stat(filepath.Join(cfg.Dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postmaster.pid after Stop: got err %v, want not exist", err)
	}

	m = startManaged(t, cfg)
	if got := queryInt(t, m.URLFor("reuse"), "SELECT n FROM kept"); got != 42 {
		t.Fatalf("row after restart: got %d, want 42", got)
	}
	stopManaged(t, m)
}

func TestManagedRefusesLiveServer(t *testing.T) {
	t.Parallel()
	cfg := ManagedConfig{Dir: managedDir(t, "pg"), Ephemeral: true}
	m := startManaged(t, cfg)

	_, err := StartManaged(context.Background(), cfg)
	if err == nil {
		t.Fatal("second StartManaged on a live cluster: got nil error")
	}
	if want := "pid " + strconv.Itoa(m.proc.Pid); !strings.Contains(err.Error(), want) || !errors.Is(err, ErrManagedRunning) {
		t.Fatalf("second StartManaged: got %q, want ErrManagedRunning and %q", err, want)
	}
	if got := queryInt(t, m.URL(), "SELECT 1"); got != 1 {
		t.Fatalf("first server after refused start: got %d, want 1", got)
	}
	stopManaged(t, m)
}

// TestManagedAttach: with Attach, a second StartManaged on a live cluster (a command run while
// a node runs) reaches that cluster through the socket its lock file names, even a temporary
// one, and its Stop leaves the cluster running; without a live cluster it starts its own.
func TestManagedAttach(t *testing.T) {
	t.Parallel()
	cfg := ManagedConfig{Dir: managedDir(t, strings.Repeat("a", 120)), Ephemeral: true} // a temporary socket directory
	m := startManaged(t, cfg)
	exec1(t, m.URL(), "CREATE DATABASE attach_mark")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	attachCfg := cfg
	attachCfg.Attach = true
	a, err := StartManaged(ctx, attachCfg)
	if err != nil {
		t.Fatalf("StartManaged with Attach on a live cluster: %v", err)
	}
	if a.URL() != m.URL() {
		t.Errorf("attached URL: got %s, want the running cluster's %s", a.URL(), m.URL())
	}
	if got := queryInt(t, a.URL(), "SELECT count(*) FROM pg_database WHERE datname = 'attach_mark'"); got != 1 {
		t.Fatalf("attached cluster: got %d attach_mark databases, want 1 (the running cluster's)", got)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("Stop of the attached cluster: %v", err)
	}
	if got := queryInt(t, m.URL(), "SELECT 1"); got != 1 {
		t.Fatalf("the running cluster after the attached Stop: got %d, want 1", got)
	}
	stopManaged(t, m)

	// Nothing runs now: Attach starts the cluster, and its Stop stops it.
	a = startManaged(t, attachCfg)
	if a.attached {
		t.Fatal("Attach with no live cluster: got an attached one, want one of its own")
	}
	stopManaged(t, a)
}

// TestManagedStartTogether: processes that start the same cluster at once (a node, and
// `tidings user create` run while it starts) take turns: one makes and starts it, the others
// wait for it and use it, and none fails.
func TestManagedStartTogether(t *testing.T) {
	t.Parallel()
	cfg := ManagedConfig{Dir: managedDir(t, "pg"), Ephemeral: true, Attach: true}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 3
	var got [n]*Managed
	var errs [n]error
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = StartManaged(ctx, cfg) })
	}
	wg.Wait()
	var owner *Managed
	for i, m := range got {
		if errs[i] != nil {
			t.Errorf("start %d: %v", i, errs[i])
			continue
		}
		if !m.attached {
			if owner != nil {
				t.Error("two starts own the cluster")
			}
			owner = m
		}
	}
	if t.Failed() || owner == nil {
		for _, m := range got {
			if m != nil {
				m.Stop(ctx)
			}
		}
		t.Fatalf("want every start to succeed, one of them owning the cluster (owner: %v)", owner != nil)
	}
	for i, m := range got {
		if m.URL() != owner.URL() || queryInt(t, m.URL(), "SELECT 1") != 1 {
			t.Errorf("start %d: URL %s, want the owner's %s, answering", i, m.URL(), owner.URL())
		}
		if m != owner {
			m.Stop(ctx)
		}
	}
	stopManaged(t, owner)
}

func TestManagedStaleLockFile(t *testing.T) {
	t.Parallel()
	cfg := ManagedConfig{Dir: managedDir(t, "pg"), Ephemeral: true}
	stopManaged(t, startManaged(t, cfg))

	// A crashed run left a lock file whose pid now belongs to another process (this one).
	lock := strconv.Itoa(os.Getpid()) + "\n" + cfg.Dir + "\n"
	if err := os.WriteFile(filepath.Join(cfg.Dir, "postmaster.pid"), []byte(lock), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startManaged(t, cfg)
	if got := queryInt(t, m.URL(), "SELECT 1"); got != 1 {
		t.Fatalf("SELECT 1: got %d, want 1", got)
	}
	stopManaged(t, m)
}

func TestManagedLongDir(t *testing.T) {
	t.Parallel()
	dir := managedDir(t, strings.Repeat("d", 120))
	m := startManaged(t, ManagedConfig{Dir: dir, Ephemeral: true})
	if !m.tempSock || len(socketPath(m.sockDir)) > socketPathMax {
		t.Fatalf("socket dir %q: want a short temporary one", m.sockDir)
	}
	if got := queryInt(t, m.URL(), "SELECT 1"); got != 1 {
		t.Fatalf("SELECT 1: got %d, want 1", got)
	}
	stopManaged(t, m)
	if _, err := os.Stat(m.sockDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket dir after Stop: got err %v, want not exist", err)
	}
}

func TestManagedStopKillsWhenContextEnds(t *testing.T) {
	t.Parallel()
	m := startManaged(t, ManagedConfig{Dir: managedDir(t, "pg"), Ephemeral: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop with a cancelled context: got %v, want context.Canceled", err)
	}
	select {
	case <-m.exited:
	default:
		t.Fatal("server still running after Stop returned")
	}
	if err := m.Stop(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("second Stop: got %v, want the first call's result", err)
	}
}

func TestManagedMissingBinaries(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	cfg := ManagedConfig{
		Dir: managedDir(t, "pg"),
		findBin: func() (string, error) {
			notFound := func(string) (string, error) { return "", exec.ErrNotFound }
			return findPostgresBin(notFound, filepath.Join(empty, "*", "bin"))
		},
	}
	_, err := StartManaged(context.Background(), cfg)
	if err == nil {
		t.Fatal("StartManaged without binaries: got nil error")
	}
	for _, want := range []string{"apt-get install postgresql", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("StartManaged without binaries: got %q, want it to contain %q", err, want)
		}
	}
}

func TestFindPostgresBinNewest(t *testing.T) {
	t.Parallel()
	lib := t.TempDir()
	for _, v := range []string{"9.6", "13", "15"} {
		bin := filepath.Join(lib, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"initdb", "postgres"} {
			if err := os.WriteFile(filepath.Join(bin, name), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	notFound := func(string) (string, error) { return "", exec.ErrNotFound }
	got, err := findPostgresBin(notFound, filepath.Join(lib, "*", "bin"))
	if want := filepath.Join(lib, "15", "bin"); err != nil || got != want {
		t.Fatalf("findPostgresBin: got %q, %v, want %q", got, err, want)
	}
}

func TestManagedUntraversableParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	t.Parallel()
	closed := filepath.Join(managedDir(t, "closed"))
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := StartManaged(context.Background(), ManagedConfig{Dir: filepath.Join(closed, "pg")})
	if err == nil || !strings.Contains(err.Error(), "cannot traverse "+closed) {
		t.Fatalf("StartManaged under a 0700 root directory: got %v, want a traversal error naming %s", err, closed)
	}
}
