// Command tidings is the tidings server: `tidings serve` runs a node, `tidings migrate` brings
// the database schema up to date, `tidings user create` makes a user, `tidings version` says
// which build this is. Its settings are docs/protocol.md section 5.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli runs the program and returns its exit code: 0 on success (and for -h and --help, whose
// usage goes to stdout), 2 for a command line that cannot be parsed (its usage goes to stderr),
// 1 for anything else, whose error goes to stderr unless the log already said it.
func cli(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := run(ctx, args, getenv, stdin, stdout, stderr)
	var usage *usageError
	var logged *loggedError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "tidings: %v\n\n%s", usage.err, usage.usage)
		return 2
	case errors.As(err, &logged):
		return 1
	default:
		fmt.Fprintln(stderr, "tidings:", err)
		return 1
	}
}

// loggedError is an error that the command's log has already reported.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

const usage = `usage: tidings <command> [flags]

commands:
  serve         run a node
  migrate       apply pending database migrations
  user create   make a user (the first admin, say):
                tidings user create --name N --password-file F [--type admin]
                F is a file holding the password, - reads it from standard input
  version       print the version, commit and build time (also: tidings -version)

Each command's flags: tidings <command> -h. Every flag defaults to an environment
variable (docs/protocol.md section 5).
`

// run is the whole program: it parses args, reads the environment only through getenv and
// standard input only through stdin, writes results and usage to stdout and its log to
// stderr. It returns when ctx ends and everything it started has stopped.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		return &usageError{err: errors.New("no command"), usage: usage}
	}
	switch args[1] {
	case "serve":
		cfg, err := parseConfig("tidings serve", args[2:], getenv, stdout)
		if err != nil {
			return err
		}
		log := newLogger(cfg, stderr)
		return logged(log, serve(ctx, cfg, log))
	case "migrate":
		cfg, err := parseConfig("tidings migrate", args[2:], getenv, stdout)
		if err != nil {
			return err
		}
		log := newLogger(cfg, stderr)
		return logged(log, withDatabase(ctx, cfg, log, func(pool *pgxpool.Pool) error { return nil }))
	case "user":
		if len(args) > 2 && isHelp(args[2]) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		if len(args) < 3 || args[2] != "create" {
			return &usageError{err: errors.New(`"tidings user" needs a subcommand: create`), usage: usage}
		}
		return userCreate(ctx, args[3:], getenv, stdin, stdout, stderr)
	case "version", "-version", "--version":
		if len(args) > 2 {
			return &usageError{err: fmt.Errorf("unexpected arguments: %v", args[2:]), usage: usage}
		}
		fmt.Fprintln(stdout, readBuild())
		return nil
	}
	if isHelp(args[1]) {
		fmt.Fprint(stdout, usage)
		return nil
	}
	return &usageError{err: fmt.Errorf("unknown command %q", args[1]), usage: usage}
}

// isHelp reports whether arg asks for the usage.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// newLogger is the log of every command: slog lines on w, as text or JSON, from cfg's level.
func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logged reports err, if any, through log, so that a shipped log holds why the process ended,
// and marks it as reported.
func logged(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	log.Error("exiting", "err", err)
	return &loggedError{err}
}
