package datatest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
)

// OpenPool opens a pool on connString (a database of NewDatabase, or a Proxy's), closed in
// t.Cleanup.
func OpenPool(t testing.TB, connString string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Append commits evs in one transaction of their own and returns their ids.
func Append(t testing.TB, pool *pgxpool.Pool, evs ...data.NewEvent) []int64 {
	t.Helper()
	ctx := context.Background()
	var ids []int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		ids, err = data.AppendEvents(ctx, tx, evs)
		return err
	})
	if err != nil {
		t.Fatalf("append events: %v", err)
	}
	return ids
}
