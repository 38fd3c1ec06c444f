// Command tidings is the tidings server: `tidings serve` runs a node, `tidings migrate` brings
// the database schema up to date.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/migrations"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdin, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, errUsage) {
		fmt.Fprintln(os.Stderr, "tidings:", err)
	}
	if err != nil {
		os.Exit(1)
	}
}

// errUsage means the usage was already printed.
var errUsage = errors.New("usage")

const usage = `usage:
  tidings serve   [flags]   run a node (flags: tidings serve -h)
  tidings migrate [flags]   apply pending database migrations
  tidings user create --name N --password-file F [--type admin] [flags]
                            make a user (the first admin, say); F holds the
                            password, - reads it from standard input
`

// run is the whole program: it parses args, reads the environment only through getenv and
// standard input only through stdin, and writes only to stdout. It returns when ctx ends and
// everything it started has stopped.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stdout, usage)
		return errUsage
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	switch args[1] {
	case "serve":
		cfg, err := parseConfig("tidings serve", args[2:], getenv, stdout)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, log, stdout)
	case "migrate":
		cfg, err := parseConfig("tidings migrate", args[2:], getenv, stdout)
		if err != nil {
			return err
		}
		return withDatabase(ctx, cfg, log, func(pool *pgxpool.Pool) error { return nil })
	case "user":
		if len(args) < 3 || args[2] != "create" {
			fmt.Fprint(stdout, usage)
			return errUsage
		}
		return userCreate(ctx, args[3:], getenv, stdin, stdout, log)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stdout, "unknown command %q\n%s", args[1], usage)
	return errUsage
}

// withDatabase opens the database (starting the managed one when no URL is set), applies the
// migrations, calls fn, and stops everything it started, in reverse order.
func withDatabase(ctx context.Context, cfg config, log *slog.Logger, fn func(*pgxpool.Pool) error) (err error) {
	url := cfg.databaseURL
	if url == "" {
		dir, err := filepath.Abs(filepath.Join(cfg.dataDir, "postgres"))
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		managed, err := data.StartManaged(ctx, data.ManagedConfig{Dir: dir, Logger: log})
		if err != nil {
			return err
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = errors.Join(err, managed.Stop(stopCtx))
		}()
		url = managed.URL()
	}
	pool, err := data.OpenPool(ctx, url, 0)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := data.Migrate(ctx, pool, migrations.FS, log); err != nil {
		return err
	}
	return fn(pool)
}
