package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
)

// userCreate makes a user of any type: `tidings user create --name N --password-file F
// [--type T]`, where F is a file holding the password, or - for standard input. A password is
// never a flag value: it would show in ps, shell history and pprof's cmdline. It takes the
// flags of serve too (the same parsing: --name=x works), and while a node runs the managed
// cluster of the same data directory, it uses that cluster.
func userCreate(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	for _, a := range args {
		if name := strings.TrimLeft(a, "-"); a != name && (name == "password" || strings.HasPrefix(name, "password=")) {
			return &usageError{err: errors.New("--password is not a flag: a password on the command line shows in ps and shell history; " +
				"use --password-file F, or --password-file - to read it from standard input"), usage: userUsage(getenv)}
		}
	}
	var u userFlags
	cfg, err := parseConfig("tidings user create", args, getenv, stdout, u.define)
	if err != nil {
		return err
	}
	for _, missing := range []struct{ flag, value, why string }{
		{"--name", u.name, "the new user's name"},
		{"--password-file", u.passwordFile, "a file holding the password, or - for standard input"},
	} {
		if missing.value == "" {
			return &usageError{err: fmt.Errorf("%s is needed: %s", missing.flag, missing.why), usage: userUsage(getenv)}
		}
	}
	if !data.UserType(u.typ).Valid() {
		return &usageError{err: fmt.Errorf("--type %q: want regular, crew or admin", u.typ), usage: userUsage(getenv)}
	}
	name, typ := u.name, u.typ
	password, err := readPassword(u.passwordFile, stdin)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	return logged(log, withDatabase(ctx, cfg, log, func(pool *pgxpool.Pool) error {
		u, err := newAuth(pool, cfg, log).CreateUser(ctx, name, password, data.UserType(typ))
		if err != nil {
			return fmt.Errorf("create user: %w", err)
		}
		fmt.Fprintf(stdout, "created user %d %q (%s)\n", u.ID, u.Name, u.Type)
		return nil
	}))
}

// userFlags are the flags of user create beside the settings.
type userFlags struct{ name, passwordFile, typ string }

func (u *userFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&u.name, "name", "", "the new user's name (1-64 ASCII letters, digits, '-', '_' or '.')")
	fs.StringVar(&u.passwordFile, "password-file", "", "a file whose first line is the password; - reads it from standard input")
	fs.StringVar(&u.typ, "type", string(data.UserRegular), "regular, crew or admin")
}

// userUsage is the usage of user create, with its flags.
func userUsage(getenv func(string) string) string {
	var b strings.Builder
	var u userFlags
	parseConfig("tidings user create", []string{"-h"}, getenv, &b, u.define)
	return b.String()
}

// maxPasswordLine bounds what readPassword reads: longer than any password accepted.
const maxPasswordLine = 64 << 10

// readPassword reads the password from the first line of the file path, or of stdin when path
// is "-", without its line ending.
func readPassword(path string, stdin io.Reader) (string, error) {
	in := stdin
	if path == "-" && in == nil {
		return "", errors.New("--password-file -: no standard input")
	}
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		defer f.Close()
		in = f
	}
	line, err := bufio.NewReader(io.LimitReader(in, maxPasswordLine)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("--password-file %s: %w", path, err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", fmt.Errorf("--password-file %s: no password in it", path)
	}
	return line, nil
}
