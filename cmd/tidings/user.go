package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
)

// userCreate makes a user of any type: `tidings user create --name N --password-file F
// [--type T]`, where F is a file holding the password, or - for standard input. A password is
// never a flag value: it would show in ps, shell history and pprof's cmdline. It takes the
// database flags of serve too.
func userCreate(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	var name, passwordFile, typ string
	rest := args[:0:0]
	for i := 0; i < len(args); i++ {
		flagName, inline, hasInline := strings.Cut(args[i], "=")
		value := func() (string, error) {
			if hasInline {
				return inline, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", flagName)
			}
			i++
			return args[i], nil
		}
		var err error
		switch flagName {
		case "--name", "-name":
			name, err = value()
		case "--password-file", "-password-file":
			passwordFile, err = value()
		case "--password", "-password":
			return errors.New("--password is not a flag: a password on the command line shows in ps and shell history; " +
				"use --password-file F, or --password-file - to read it from standard input")
		case "--type", "-type":
			typ, err = value()
		default:
			rest = append(rest, args[i])
		}
		if err != nil {
			return err
		}
	}
	if passwordFile == "" {
		return errors.New("--password-file is needed: a file holding the password, or - for standard input")
	}
	if typ == "" {
		typ = string(data.UserRegular)
	}
	cfg, err := parseConfig("tidings user create", rest, getenv, stdout)
	if err != nil {
		return err
	}
	password, err := readPassword(passwordFile, stdin)
	if err != nil {
		return err
	}
	return withDatabase(ctx, cfg, log, func(pool *pgxpool.Pool) error {
		u, err := newAuth(pool, cfg, log).CreateUser(ctx, name, password, data.UserType(typ))
		if err != nil {
			return fmt.Errorf("create user: %w", err)
		}
		fmt.Fprintf(stdout, "created user %d %q (%s)\n", u.ID, u.Name, u.Type)
		return nil
	})
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
