package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
)

// userCreate makes a user of any type: `tidings user create --name N --password P [--type T]`.
// It takes the database flags of serve too.
func userCreate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, log *slog.Logger) error {
	var name, password, typ string
	rest := args[:0:0]
	for i := 0; i < len(args); i++ {
		flagName := args[i]
		value := func() (string, error) {
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
		case "--password", "-password":
			password, err = value()
		case "--type", "-type":
			typ, err = value()
		default:
			rest = append(rest, flagName)
		}
		if err != nil {
			return err
		}
	}
	if typ == "" {
		typ = string(data.UserRegular)
	}
	cfg, err := parseConfig("tidings user create", rest, getenv, stdout)
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
