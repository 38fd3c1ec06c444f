package data_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/migrations"
)

// loginRole makes, through admin, a login role with a random name (roles belong to the whole
// cluster, which parallel tests share), granted the roles in grants, and returns a pool
// connected as it to base's database. The role is dropped in t.Cleanup, after the
// pool is closed. It skips the test when the tests' server does not let its user create roles.
func loginRole(t *testing.T, admin *pgxpool.Pool, base *pgxpool.Config, grants ...string) *pgxpool.Pool {
	t.Helper()
	ctx := testCtx(t)
	b := make([]byte, 8)
	rand.Read(b)
	name := "tidings_test_" + hex.EncodeToString(b)
	password := hex.EncodeToString(b) + "-pw"
	_, err := admin.Exec(ctx, "CREATE ROLE "+name+" LOGIN PASSWORD '"+password+"'")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		t.Skipf("the tests' database user may not create roles: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP ROLE "+name); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	for _, g := range grants {
		if _, err := admin.Exec(ctx, "GRANT "+g+" TO "+name); err != nil {
			t.Fatal(err)
		}
	}
	cfg := base.Copy()
	cfg.ConnConfig.User, cfg.ConnConfig.Password = name, password
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// sqlState is the SQLSTATE of err, or "" when it is not PostgreSQL's.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestPublisherRole connects as a login role granted tidings_publisher and checks that it can
// publish through publish_event, in its own transaction, and that the event is stored and
// announced; that it can do nothing else: no table of tidings to read or write, none of the
// functions behind publish_event, no control event; that a temporary table of its own cannot
// stand in for the log; and that a role not granted tidings_publisher cannot publish at all.
func TestPublisherRole(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	connString := datatest.NewDatabase(t)
	owner := datatest.OpenPool(t, connString)
	pub := loginRole(t, owner, owner.Config(), "tidings_publisher")
	stranger := loginRole(t, owner, owner.Config())

	listener, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, "LISTEN "+data.EventsChannel); err != nil {
		t.Fatal(err)
	}

	// A service's transaction: its change, then its event. A temporary table named like the
	// log, which the caller's search_path would find first, changes nothing.
	var id int64
	err = pgx.BeginFunc(ctx, pub, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE events (id bigint, type text, data jsonb, audience jsonb, time timestamptz) ON COMMIT DROP"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE event_log_state (last_id bigint) ON COMMIT DROP"); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT publish_event('order-update', '{"id":42}', '{"kind":"signed-in"}')`).Scan(&id)
	})
	if err != nil || id != 1 {
		t.Fatalf("publish as tidings_publisher: got %d, %v; want id 1", id, err)
	}
	evs, err := data.NewEvents(owner).After(ctx, 0, 10)
	if err != nil || len(evs) != 1 || evs[0].ID != 1 || evs[0].Type != "order-update" || evs[0].Audience.Kind != data.AudienceSignedIn {
		t.Fatalf("the log after the publish: got %+v, %v", evs, err)
	}
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if n, err := listener.WaitForNotification(nctx); err != nil || n.Channel != data.EventsChannel || n.Payload != "1" {
		t.Fatalf("notification: got %+v, %v; want %s with payload 1", n, err, data.EventsChannel)
	}

	// Rolled back, it stores nothing.
	tx, err := pub.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT publish_event('rolled-back', 'null')"); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	if w, err := data.NewEvents(owner).Watermark(ctx); err != nil || w != 1 {
		t.Fatalf("watermark after a rolled-back publish: got %d, %v; want 1", w, err)
	}

	refused := []struct {
		sql   string
		state string
	}{
		{`SELECT publish_event('tidings.close-streams', '{"userIds":[1],"code":4003,"reason":"logout"}')`, "22023"},
		{`SELECT publish_event('x', '{}', '{"kind":"nobody"}')`, "22023"},
		{`INSERT INTO events (id, type) VALUES (100, 'forged')`, "42501"},
		{`UPDATE event_log_state SET last_id = last_id + 1`, "42501"},
		{`DELETE FROM events`, "42501"},
		{`SELECT count(*) FROM events`, "42501"},
		{`SELECT count(*) FROM sessions`, "42501"},
		{`SELECT count(*) FROM users`, "42501"},
		{`SELECT count(*) FROM login_failures`, "42501"},
		{`SELECT count(*) FROM publish_keys`, "42501"},
		{`SELECT key FROM ephemeral_key`, "42501"},
		{`UPDATE ephemeral_key SET key = '\x00'`, "42501"},
		{`INSERT INTO ephemeral_key (id, key) VALUES (1, '\x00')`, "42501"},
		{`SELECT count(*) FROM presence_nodes`, "42501"},
		{`INSERT INTO presence_nodes (node, seq, beat) VALUES ('forged', 1, now())`, "42501"},
		{`DELETE FROM presence_nodes`, "42501"},
		{`SELECT count(*) FROM presence_users`, "42501"},
		{`INSERT INTO presence_users (node, user_id) VALUES ('forged', 1)`, "42501"},
		{`DELETE FROM presence_users`, "42501"},
		{`SELECT tidings_append_events(ARRAY['tidings.close-streams'], ARRAY['{}'::jsonb], ARRAY[NULL::jsonb])`, "42501"},
		{`SELECT publish_events(ARRAY['x'], ARRAY['{}'::jsonb], ARRAY[NULL::jsonb])`, "42501"},
		{`SELECT tidings_audience('null')`, "42501"},
		{`SELECT * FROM tidings_publish_keyed(ARRAY['tidings.x'], ARRAY['{}'::jsonb], ARRAY[NULL::jsonb], ARRAY[1], ARRAY['s'], ARRAY['k'], ARRAY['\x00'::bytea], '1 day')`, "42501"},
	}
	for _, r := range refused {
		if _, err := pub.Exec(ctx, r.sql); sqlState(err) != r.state {
			t.Errorf("as tidings_publisher, %s: got %v, want SQLSTATE %s", r.sql, err, r.state)
		}
	}
	if _, err := stranger.Exec(ctx, "SELECT publish_event('x', '{}')"); sqlState(err) != "42501" {
		t.Errorf("a role without tidings_publisher: publish_event got %v, want SQLSTATE 42501", err)
	}
	if w, err := data.NewEvents(owner).Watermark(ctx); err != nil || w != 1 {
		t.Fatalf("watermark after the refusals: got %d, %v; want 1", w, err)
	}
}

// TestPublishPrivilegesMigrationReruns applies 0007 again on a database that has it, as a node
// finding the role made by another database of the cluster would: it succeeds, and the role
// still publishes. A role that held INSERT on events before 0007 (a service publishing as an
// invoker) may still call publish_event after it.
func TestPublishPrivilegesMigrationReruns(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	connString := datatest.NewDatabase(t)
	owner := datatest.OpenPool(t, connString)
	sql, err := fs.ReadFile(migrations.FS, "0007_publish_privileges.sql")
	if err != nil {
		t.Fatal(err)
	}
	legacy := loginRole(t, owner, owner.Config())
	var legacyName string
	if err := legacy.QueryRow(ctx, "SELECT current_user").Scan(&legacyName); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Exec(context.Background(), "DROP OWNED BY "+legacyName) }) // its grants, before the role goes
	if _, err := owner.Exec(ctx, "GRANT INSERT ON events TO "+legacyName+"; GRANT UPDATE ON event_log_state TO "+legacyName); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := owner.Exec(ctx, string(sql)); err != nil {
			t.Fatalf("0007 again: %v", err)
		}
	}
	pub := loginRole(t, owner, owner.Config(), "tidings_publisher")
	for i, p := range []*pgxpool.Pool{pub, legacy} {
		var id int64
		if err := p.QueryRow(ctx, "SELECT publish_event('again', '1')").Scan(&id); err != nil || id != int64(i+1) {
			t.Fatalf("publish after 0007 ran again, as %s: got %d, %v", []string{"tidings_publisher", "a role with INSERT on events"}[i], id, err)
		}
	}
}

// TestMigrateAsPlainOwner migrates a database owned by a role that is neither a superuser nor
// allowed to create roles, as in a production deployment, and publishes through it as a role
// granted tidings_publisher: publish_event then runs with the rights of that plain owner.
func TestMigrateAsPlainOwner(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	admin := datatest.OpenPool(t, datatest.AdminURL(t))
	var superuser bool
	if err := admin.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&superuser); err != nil || !superuser {
		t.Skipf("the tests' database user is not a superuser (%v): it cannot make a database for another owner", err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	name := "tidings_test_owner_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE ROLE "+name+" LOGIN NOCREATEROLE NOSUPERUSER PASSWORD 'owner-pw'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP ROLE "+name); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" OWNER "+name+" TEMPLATE template0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(datatest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database, cfg.ConnConfig.User, cfg.ConnConfig.Password = name, name, "owner-pw"
	owner, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if err := data.Migrate(ctx, owner, migrations.FS, nil); err != nil {
		t.Fatalf("migrate as a plain owner: %v", err)
	}
	pub := loginRole(t, admin, cfg, "tidings_publisher")
	var id int64
	if err := pub.QueryRow(ctx, `SELECT publish_event('shipped', '{"id":7}')`).Scan(&id); err != nil || id != 1 {
		t.Fatalf("publish through a plain owner's publish_event: got %d, %v", id, err)
	}
	if _, err := pub.Exec(ctx, "SELECT count(*) FROM events"); sqlState(err) != "42501" {
		t.Fatalf("read events as tidings_publisher: got %v, want SQLSTATE 42501", err)
	}
}

// presenceGrants lists the privileges on the tables of 0008 held by any role but their owner.
func presenceGrants(t *testing.T, ctx context.Context, db *pgxpool.Pool) []string {
	t.Helper()
	rows, err := db.Query(ctx, `
		SELECT c.relname || ': ' || a.privilege_type || ' to ' ||
		       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
		FROM pg_class c, aclexplode(c.relacl) a
		WHERE c.relnamespace = current_schema()::regnamespace
		  AND c.relname IN ('presence_nodes', 'presence_users', 'ephemeral_key')
		  AND a.grantee <> c.relowner
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	grants, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return grants
}

// TestPresenceTablesGrantNothing checks that the tables of presence and the key that signs its
// notifications grant nothing to PUBLIC or to tidings_publisher, even in a database whose
// default privileges would grant everything on new tables to both: 0008 revokes them.
func TestPresenceTablesGrantNothing(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	owner := datatest.OpenPool(t, datatest.NewDatabase(t))
	if g := presenceGrants(t, ctx, owner); len(g) != 0 {
		t.Fatalf("grants after the migrations: got %v, want none", g)
	}
	sql, err := fs.ReadFile(migrations.FS, "0008_presence.sql")
	if err != nil {
		t.Fatal(err)
	}
	// Default privileges belong to one database: this one, dropped when the test ends.
	_, err = owner.Exec(ctx, `ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC, tidings_publisher;
		DROP TABLE presence_users, presence_nodes, ephemeral_key`)
	if err != nil {
		t.Fatal(err)
	}
	// The defaults are at work: a new table gets them.
	if _, err := owner.Exec(ctx, "CREATE TABLE granted (id int)"); err != nil {
		t.Fatal(err)
	}
	if ok, err := hasSelect(ctx, owner, "granted"); err != nil || !ok {
		t.Fatalf("tidings_publisher on a table made under the default privileges: got SELECT %v, %v; want true", ok, err)
	}
	if _, err := owner.Exec(ctx, string(sql)); err != nil {
		t.Fatalf("0008 again: %v", err)
	}
	if g := presenceGrants(t, ctx, owner); len(g) != 0 {
		t.Fatalf("grants after 0008 under default privileges for all: got %v, want none", g)
	}
	pub := loginRole(t, owner, owner.Config(), "tidings_publisher")
	for _, table := range []string{"ephemeral_key", "presence_nodes", "presence_users"} {
		if _, err := pub.Exec(ctx, "SELECT * FROM "+table); sqlState(err) != "42501" {
			t.Errorf("as tidings_publisher, read %s: got %v, want SQLSTATE 42501", table, err)
		}
	}
}

// hasSelect reports whether tidings_publisher may read table.
func hasSelect(ctx context.Context, db *pgxpool.Pool, table string) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, "SELECT has_table_privilege('tidings_publisher', $1, 'SELECT')", table).Scan(&ok)
	return ok, err
}
