package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	managedSuperuser = "tidings" // the cluster's superuser, made by initdb
	managedPort      = 5432      // only names the socket file: the cluster listens on no TCP port
	managedLogName   = "postgres.log"
	socketPathMax    = 107 // longest Unix socket path: sun_path is 108 bytes with its NUL
	readyTimeout     = 30 * time.Second
	killGrace        = 5 * time.Second // after SIGQUIT, before SIGKILL
	logRotateSize    = 16 << 20
)

// ManagedConfig configures a managed local PostgreSQL cluster. The zero value of each field
// means the documented default.
type ManagedConfig struct {
	// Dir is the cluster directory (PGDATA); required. It is created and initialized with
	// initdb on first use and reused afterwards. Postgres writes its log to Dir/postgres.log.
	// When this process runs as root the cluster runs as the "postgres" OS user, which must be
	// able to traverse every parent of Dir.
	Dir string
	// Logger receives start and stop messages. Nil discards them.
	Logger *slog.Logger
	// Ephemeral trades durability for speed (fsync, synchronous_commit and full_page_writes
	// off; initdb --no-sync). For tests: a machine crash can corrupt the cluster. False means
	// durable defaults.
	Ephemeral bool
	// Attach uses the cluster that another process (a running node) already runs on Dir,
	// through the socket its lock file names, instead of failing with ErrManagedRunning; Stop
	// then leaves that cluster running. False: StartManaged fails when the cluster runs.
	Attach bool

	// findBin returns the directory holding initdb and postgres. Nil means defaultFindBin.
	findBin func() (string, error)
}

// ErrManagedRunning is the cause of StartManaged's failure when another process already runs
// the cluster in the directory (without ManagedConfig.Attach), or when the cluster it would
// attach to does not answer yet: a failure that may pass once that process stops or is ready.
var ErrManagedRunning = errors.New("data: the managed cluster is run by another process")

// Managed is a running cluster owned by this process, or attached to (ManagedConfig.Attach).
// It listens only on a Unix socket whose directory is readable by its OS user alone, and trusts
// every local connection.
type Managed struct {
	// Set at construction.
	dir      string // absolute cluster directory
	sockDir  string // directory of the Unix socket
	port     int    // names the socket file
	attached bool   // another process runs the cluster: Stop leaves it alone
	tempSock bool   // sockDir was made by MkdirTemp; Stop removes it
	logPath  string
	logStart int64 // size of the log before this run: the tail read on failure starts here
	log      *slog.Logger
	proc     *os.Process

	// Written by the waiter goroutine before it closes exited; read only after exited is closed.
	exited  chan struct{}
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// StartManaged starts a PostgreSQL cluster in cfg.Dir, creating it first when needed, and waits
// until it accepts connections. The server dies with this process (it gets SIGQUIT when this
// process exits); Stop shuts it down cleanly.
func StartManaged(ctx context.Context, cfg ManagedConfig) (*Managed, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start postgres: ManagedConfig.Dir is empty")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	findBin := cfg.findBin
	if findBin == nil {
		findBin = defaultFindBin
	}
	bin, err := findBin()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	major, err := serverMajor(ctx, bin)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if major < 13 {
		return nil, fmt.Errorf("start postgres: %s holds PostgreSQL %d; tidings needs 13 or newer", bin, major)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	owner, err := lookupServerUser()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := prepareDir(dir, owner); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	unlock, err := lockStart(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	defer unlock()

	version, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("creating postgres cluster", "dir", dir, "bin", bin)
		if err := initdb(ctx, bin, dir, owner, cfg.Ephemeral); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("start postgres: %w", err)
	case strings.TrimSpace(string(version)) != strconv.Itoa(major):
		return nil, fmt.Errorf("start postgres: the cluster in %s was made by PostgreSQL %s but %s holds PostgreSQL %d: install PostgreSQL %[2]s or move the directory aside",
			dir, strings.TrimSpace(string(version)), bin, major)
	}
	if err := clearStaleLock(dir, log); err != nil {
		if cfg.Attach && errors.Is(err, ErrManagedRunning) {
			return attach(ctx, dir, log)
		}
		return nil, fmt.Errorf("start postgres: %w", err)
	}

	m := &Managed{dir: dir, sockDir: dir, port: managedPort, log: log, exited: make(chan struct{})}
	if len(socketPath(dir)) > socketPathMax {
		if m.sockDir, err = os.MkdirTemp("", "tidings-pg-"); err != nil {
			return nil, fmt.Errorf("start postgres: socket directory: %w", err)
		}
		m.tempSock = true
		if err := owner.chown(m.sockDir); err != nil {
			m.cleanup()
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		if len(socketPath(m.sockDir)) > socketPathMax {
			m.cleanup()
			return nil, fmt.Errorf("start postgres: socket path %s is longer than %d bytes: set TMPDIR to a shorter directory", socketPath(m.sockDir), socketPathMax)
		}
	}
	if err := m.start(ctx, bin, owner, cfg.Ephemeral); err != nil {
		m.cleanup()
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	return m, nil
}

// lockStart takes the lock that makes processes start the cluster in dir one at a time (a node
// and `tidings user create` run together): held from before initdb until the server answers,
// so that the second finds the cluster either absent or running, never half made. It waits
// while another process holds it, until ctx ends. The lock is dir + ".lock", beside the cluster
// (initdb wants the cluster's own directory empty); closing it, or the process ending, frees it.
func lockStart(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.OpenFile(dir+".lock", os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the start lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("take the start lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another process to start the cluster in %s: %w", dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// attach returns the cluster that another process runs on dir, reached through the socket
// directory and port its lock file names (lines 5 and 4 of postmaster.pid), once it answers.
func attach(ctx context.Context, dir string, log *slog.Logger) (*Managed, error) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return nil, fmt.Errorf("attach to postgres: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 || !filepath.IsAbs(strings.TrimSpace(lines[4])) {
		return nil, fmt.Errorf("attach to postgres: the lock file of %s names no socket directory yet: %w", dir, ErrManagedRunning)
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil {
		return nil, fmt.Errorf("attach to postgres: the lock file of %s names no port: %q", dir, lines[3])
	}
	m := &Managed{dir: dir, sockDir: strings.TrimSpace(lines[4]), port: port, attached: true, log: log, exited: make(chan struct{})}
	if err := ping(ctx, m.URL()); err != nil {
		return nil, fmt.Errorf("attach to postgres on %s: %w (%w)", m.sockDir, ErrManagedRunning, err)
	}
	log.Info("using the running postgres", "dir", dir, "socket", m.sockDir)
	return m, nil
}

// URL returns a pgx connection string for the "postgres" database over the Unix socket.
func (m *Managed) URL() string { return m.URLFor("postgres") }

// URLFor returns a pgx connection string for database over the Unix socket, as the superuser.
func (m *Managed) URLFor(database string) string {
	q := url.Values{"host": {m.sockDir}, "port": {strconv.Itoa(m.port)}, "sslmode": {"disable"}}
	u := url.URL{Scheme: "postgres", User: url.User(managedSuperuser), Path: "/" + database, RawQuery: q.Encode()}
	return u.String()
}

// Stop shuts the server down with a fast shutdown (SIGINT: open sessions are cancelled) and
// waits for it to exit. If ctx ends first it sends SIGQUIT, then SIGKILL to the server's
// process group after a grace period, and reports ctx's error. Later calls return the first
// call's result. An attached cluster is left running.
func (m *Managed) Stop(ctx context.Context) error {
	if m.attached {
		return nil
	}
	m.stopOnce.Do(func() { m.stopErr = m.stop(ctx) })
	return m.stopErr
}

func (m *Managed) stop(ctx context.Context) error {
	defer m.cleanup()
	select {
	case <-m.exited:
		if m.waitErr != nil {
			return fmt.Errorf("stop postgres: it had already exited: %w", m.waitErr)
		}
		return nil
	default:
	}
	start := time.Now()
	m.log.Info("stopping postgres", "pid", m.proc.Pid)
	_ = m.proc.Signal(syscall.SIGINT) // an error means it has just exited: exited tells
	select {
	case <-m.exited:
		m.log.Info("postgres stopped", "elapsed", time.Since(start).Round(time.Millisecond))
		if m.waitErr != nil {
			return fmt.Errorf("stop postgres: %w", m.waitErr)
		}
		return nil
	case <-ctx.Done():
	}
	m.log.Warn("postgres did not stop in time; killing it", "pid", m.proc.Pid)
	m.kill()
	return fmt.Errorf("stop postgres: fast shutdown did not finish: %w", ctx.Err())
}

// kill sends SIGQUIT (immediate shutdown), then SIGKILL to the whole process group, and waits
// for the server to exit.
func (m *Managed) kill() {
	_ = m.proc.Signal(syscall.SIGQUIT)
	grace := time.NewTimer(killGrace)
	defer grace.Stop()
	select {
	case <-m.exited:
		return
	case <-grace.C:
	}
	_ = syscall.Kill(-m.proc.Pid, syscall.SIGKILL) // Setpgid: the group id is the postmaster's pid
	<-m.exited
}

// cleanup removes what this run made outside Dir.
func (m *Managed) cleanup() {
	if m.tempSock {
		if err := os.RemoveAll(m.sockDir); err != nil {
			m.log.Warn("remove postgres socket directory", "dir", m.sockDir, "err", err)
		}
	}
}

// start runs postgres as a child and waits until it accepts connections.
func (m *Managed) start(ctx context.Context, bin string, owner serverUser, ephemeral bool) error {
	m.logPath = filepath.Join(m.dir, managedLogName)
	logFile, err := openLog(m.logPath, owner)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own copy
	if m.logStart, err = logFile.Seek(0, 2); err != nil {
		return fmt.Errorf("open log: %w", err)
	}

	args := []string{"-D", m.dir, "-k", m.sockDir, "-p", strconv.Itoa(managedPort),
		"-c", "listen_addresses=", "-c", "unix_socket_permissions=0700", "-c", "max_connections=200"}
	if ephemeral {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = m.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: owner.cred,
		Pdeathsig:  syscall.SIGQUIT, // immediate shutdown if this process dies
		Setpgid:    true,            // a terminal's Ctrl-C reaches us, not the server: we stop it in order
	}

	startedAt := time.Now()
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the OS thread that started the child exits, not the process. This
		// goroutine keeps its thread until the server has exited, and never unlocks it, so the
		// runtime retires the thread with the goroutine instead of reusing it.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		m.proc = cmd.Process
		started <- nil
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("run postgres: %w", err)
	}
	m.log.Info("postgres starting", "pid", m.proc.Pid, "dir", m.dir, "socket", m.sockDir, "ephemeral", ephemeral)
	if err := m.waitReady(ctx); err != nil {
		m.kill()
		return err
	}
	m.log.Info("postgres ready", "pid", m.proc.Pid, "elapsed", time.Since(startedAt).Round(time.Millisecond))
	return nil
}

// waitReady polls for a working connection until it gets one, the server exits, ctx ends or
// readyTimeout passes.
func (m *Managed) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(ctx, m.URL())
		if err == nil {
			return nil
		}
		select {
		case <-m.exited:
			return fmt.Errorf("postgres exited during startup (%v); last lines of %s:\n%s", m.waitErr, m.logPath, m.logTail())
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready (last attempt: %v): %w; last lines of %s:\n%s", err, ctx.Err(), m.logPath, m.logTail())
		case <-tick.C:
		}
	}
}

func ping(ctx context.Context, connString string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "SELECT 1")
	return err
}

// logTail returns the last lines this run wrote to the log.
func (m *Managed) logTail() string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	if m.logStart <= int64(len(b)) {
		b = b[m.logStart:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// openLog opens the server log for appending, first moving a large one to .1.
func openLog(path string, owner serverUser) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > logRotateSize {
		if err := os.Rename(path, path+".1"); err != nil {
			return nil, fmt.Errorf("rotate log: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	if err := owner.chown(path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func socketPath(dir string) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(managedPort))
}

// initdb creates the cluster in dir.
func initdb(ctx context.Context, bin, dir string, owner serverUser, ephemeral bool) error {
	args := []string{"-D", dir, "-U", managedSuperuser, "--auth-local=trust", "--auth-host=reject",
		"-E", "UTF8", "--locale=C", "--no-instructions"}
	if ephemeral {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner.cred}
	// SIGTERM lets initdb remove what it made, so a cancelled run leaves no half cluster.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w:\n%s", dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// serverUser is the OS user the server runs as.
type serverUser struct {
	name   string
	cred   *syscall.Credential // nil: this process's own user
	uid    int
	groups []int // primary group first
}

// lookupServerUser returns this process's user, or the "postgres" user when running as root:
// PostgreSQL refuses to run as root.
func lookupServerUser() (serverUser, error) {
	if os.Geteuid() != 0 {
		groups, _ := os.Getgroups()
		return serverUser{name: "current", uid: os.Geteuid(), groups: append([]int{os.Getegid()}, groups...)}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return serverUser{}, fmt.Errorf("PostgreSQL refuses to run as root and there is no postgres user to run it as (create one with `useradd --system postgres`, or run tidings as a non-root user): %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return serverUser{}, fmt.Errorf("postgres user: %w", err)
	}
	s := serverUser{name: "postgres", uid: uid, groups: []int{gid},
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if n, err := strconv.Atoi(g); err == nil && n != gid {
			s.groups = append(s.groups, n)
			s.cred.Groups = append(s.cred.Groups, uint32(n))
		}
	}
	return s, nil
}

// chown gives path to the server user; a no-op when it is this process's own user.
func (u serverUser) chown(path string) error {
	if u.cred == nil {
		return nil
	}
	if err := os.Chown(path, u.uid, u.groups[0]); err != nil {
		return fmt.Errorf("give %s to the %s user: %w", path, u.name, err)
	}
	return nil
}

// prepareDir creates dir, checks that the server user can reach it, and hands it over.
func prepareDir(dir string, owner serverUser) error {
	// Parents that we create must let the server's user through; the cluster itself is private.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create cluster directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cluster directory: %w", err)
	}
	if owner.cred != nil {
		for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err != nil {
				return fmt.Errorf("check cluster directory: %w", err)
			}
			if !owner.canTraverse(fi) {
				return fmt.Errorf("the %s user, which runs PostgreSQL, cannot traverse %s (mode %v, owner uid %d): chmod o+x it or choose a cluster directory elsewhere",
					owner.name, p, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
			}
			if p == filepath.Dir(p) {
				break
			}
		}
		fi, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("check cluster directory: %w", err)
		}
		if int(fi.Sys().(*syscall.Stat_t).Uid) != owner.uid {
			if err := owner.chown(dir); err != nil {
				return err
			}
		}
	}
	// The server refuses a data directory readable by others.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("cluster directory: %w", err)
	}
	return nil
}

// canTraverse reports whether the user may search the directory fi describes, by its mode bits.
func (u serverUser) canTraverse(fi fs.FileInfo) bool {
	st := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case int(st.Uid) == u.uid:
		return perm&0o100 != 0
	case slices.Contains(u.groups, int(st.Gid)):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// clearStaleLock refuses to go on when postmaster.pid names a live server of dir, and removes
// it (and the socket lock) when it names a dead one: a reused pid would make postgres refuse.
func clearStaleLock(dir string, log *slog.Logger) error {
	pidFile := filepath.Join(dir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lock file: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil {
		if pid < 0 {
			pid = -pid // a single-user backend writes its pid negated
		}
		if pid > 0 && servesDir(pid, dir) {
			return fmt.Errorf("another postgres (pid %d) is already running on %s: stop it first (this process will not kill it): %w", pid, dir, ErrManagedRunning)
		}
	}
	log.Info("removing stale postgres lock file", "file", pidFile)
	for _, f := range []string{pidFile, socketPath(dir) + ".lock", socketPath(dir)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale lock file: %w", err)
		}
	}
	return nil
}

// servesDir reports whether pid is a live postgres whose working directory is dir (the
// postmaster changes into its data directory). When that cannot be read it assumes so.
func servesDir(pid int, dir string) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
		return false
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if _, rest, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(rest, "Z") {
			return false // exited, not yet reaped
		}
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return true
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return true
	}
	return filepath.Clean(cwd) == real
}

func defaultFindBin() (string, error) {
	return findPostgresBin(exec.LookPath, "/usr/lib/postgresql/*/bin")
}

// findPostgresBin returns the directory holding initdb and postgres: initdb's on PATH (links
// resolved), else the newest match of libGlob (/usr/lib/postgresql/*/bin, where Debian puts
// them; the * is the version).
func findPostgresBin(lookPath func(string) (string, error), libGlob string) (string, error) {
	if p, err := lookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if isExecutable(filepath.Join(filepath.Dir(p), "postgres")) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob(libGlob)
	slices.SortFunc(dirs, func(a, b string) int { // newest first
		return versionNumber(filepath.Base(filepath.Dir(b))) - versionNumber(filepath.Base(filepath.Dir(a)))
	})
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: " +
		"install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL to an existing PostgreSQL 13 or newer")
}

// versionNumber turns "15" or "9.6" into a number that sorts like the version.
func versionNumber(s string) int {
	major, minor, _ := strings.Cut(s, ".")
	a, _ := strconv.Atoi(major)
	b, _ := strconv.Atoi(minor)
	return a*100 + b
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// serverMajor returns the major version of the postgres binary in bin.
func serverMajor(ctx context.Context, bin string) (int, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", filepath.Join(bin, "postgres"), err)
	}
	// "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
	fields := strings.Fields(string(out))
	if i := slices.Index(fields, "(PostgreSQL)"); i >= 0 && i+1 < len(fields) {
		major, _, _ := strings.Cut(fields[i+1], ".")
		if n, err := strconv.Atoi(major); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s --version: unexpected output %q", filepath.Join(bin, "postgres"), bytes.TrimSpace(out))
}
