package data_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/migrations"
)

// documentedSteps returns the SQL statements of the blocks of docs/operations.md that start
// with "-- step 1", "-- step 2" and "-- step 3" (section "Roles and grants"), comments dropped,
// with the role and database names replaced by names: the roles belong to the whole cluster,
// which parallel tests share.
func documentedSteps(t *testing.T, names map[string]string) [3][]string {
	t.Helper()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var steps [3][]string
	blocks := regexp.MustCompile("(?s)```sql\n(-- step ([123])[^\n]*\n.*?)```").FindAllStringSubmatch(string(doc), -1)
	for _, b := range blocks {
		i := int(b[2][0] - '1')
		if steps[i] != nil {
			t.Fatalf("docs/operations.md has two blocks of step %s", b[2])
		}
		var stmt strings.Builder
		for line := range strings.SplitSeq(b[1], "\n") {
			if c := strings.Index(line, "--"); c >= 0 {
				line = line[:c]
			}
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			stmt.WriteString(line)
			if strings.HasSuffix(line, ";") {
				s := stmt.String()
				for from, to := range names {
					s = regexp.MustCompile(`\b`+from+`\b`).ReplaceAllString(s, to)
				}
				steps[i] = append(steps[i], s)
				stmt.Reset()
			} else {
				stmt.WriteString(" ")
			}
		}
		if stmt.Len() > 0 {
			t.Fatalf("step %s of docs/operations.md ends without a semicolon: %q", b[2], stmt.String())
		}
	}
	for i, s := range steps {
		if len(s) == 0 {
			t.Fatalf("docs/operations.md has no block starting with -- step %d", i+1)
		}
	}
	return steps
}

// TestDocumentedRoles makes the roles and the database of docs/operations.md ("Roles and
// grants") with the SQL written there, migrates as the owner, and checks that the node role
// can do every kind of database work a node does (migrate with nothing pending, publish with
// and without a key, read and prune the log, users, sessions, login limits, devices, presence,
// LISTEN) and none of what it must not: change the schema or publish_event, record or apply a
// migration, make temporary tables, grant roles. A role granted tidings_publisher still
// publishes, and a role granted nothing cannot even connect.
func TestDocumentedRoles(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	admin := datatest.OpenPool(t, datatest.AdminURL(t))
	var superuser bool
	if err := admin.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&superuser); err != nil || !superuser {
		t.Skipf("the tests' database user is not a superuser (%v): it cannot run the documented steps", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	owner, node, db := "tidings_test_owner_"+suffix, "tidings_test_node_"+suffix, "tidings_test_db_"+suffix
	steps := documentedSteps(t, map[string]string{"tidings_owner": owner, "tidings_node": node, "DATABASE tidings": "DATABASE " + db})

	// Cleanups run last first: the database goes before the roles it grants to.
	for _, role := range []string{node, owner} {
		t.Cleanup(func() {
			if _, err := admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+role); err != nil {
				t.Errorf("drop role %s: %v", role, err)
			}
		})
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", db, err)
		}
	})
	for _, stmt := range steps[0] {
		_, err := admin.Exec(ctx, stmt)
		if sqlState(err) == "42710" && strings.HasPrefix(stmt, "CREATE ROLE tidings_publisher ") {
			continue // made by another database of the cluster, as the document says
		}
		if err != nil {
			t.Fatalf("step 1, %s: %v", stmt, err)
		}
	}
	for _, role := range []string{owner, node} { // what \password does
		if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" PASSWORD '"+role+"-pw'"); err != nil {
			t.Fatal(err)
		}
	}
	base, err := pgxpool.ParseConfig(datatest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	base.ConnConfig.Database = db
	as := func(role string) *pgxpool.Pool {
		cfg := base.Copy()
		if role != "" {
			cfg.ConnConfig.User, cfg.ConnConfig.Password = role, role+"-pw"
		}
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return pool
	}
	super := as("") // the superuser, in the new database
	for _, stmt := range steps[1] {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatalf("step 2, %s: %v", stmt, err)
		}
	}
	ownerPool := as(owner)
	if err := data.Migrate(ctx, ownerPool, migrations.FS, nil); err != nil {
		t.Fatalf("tidings migrate as the owner: %v", err)
	}
	for _, stmt := range steps[2] {
		if _, err := ownerPool.Exec(ctx, stmt); err != nil {
			t.Fatalf("step 3, %s: %v", stmt, err)
		}
	}

	nodePool := as(node)
	nodeCanServe(t, ctx, nodePool)

	refused := []string{
		`CREATE TABLE forged (id int)`,
		`CREATE FUNCTION forged() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
		`CREATE OR REPLACE FUNCTION publish_event(type text, data jsonb, audience jsonb DEFAULT NULL) RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint'`,
		`ALTER TABLE events ADD COLUMN forged int`,
		`DROP TABLE sessions`,
		`TRUNCATE events`,
		`INSERT INTO tidings_migrations (version, name) VALUES (9999, 'forged')`,
		`DELETE FROM tidings_migrations`,
		`UPDATE tidings_schema SET needs_migration = 0`,
		`CREATE TEMP TABLE forged (id int)`,
		`CREATE ROLE forged`,
		`GRANT tidings_publisher TO ` + node,
	}
	for _, stmt := range refused {
		if _, err := nodePool.Exec(ctx, stmt); sqlState(err) != "42501" {
			t.Errorf("as the node role, %s: got %v, want SQLSTATE 42501", stmt, err)
		}
	}
	// Without the grant option, a grant is a warning that grants nothing.
	if _, err := nodePool.Exec(ctx, "GRANT SELECT ON users, sessions TO PUBLIC"); err != nil {
		t.Fatal(err)
	}
	var public int
	err = ownerPool.QueryRow(ctx, `SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
		WHERE c.relname IN ('users', 'sessions') AND c.relnamespace = current_schema()::regnamespace AND a.grantee = 0`).Scan(&public)
	if err != nil || public != 0 {
		t.Errorf("the node role granted PUBLIC %d rights on users and sessions (%v); want none", public, err)
	}

	// A node of a newer release, started before the owner migrated: it applies nothing.
	newer := releaseWith(t, "9999_forged.sql", "CREATE TABLE forged (id int);")
	if err := data.Migrate(ctx, nodePool, newer, nil); err == nil || !strings.Contains(err.Error(), "9999_forged") {
		t.Errorf("a pending migration applied as the node role: got %v, want an error naming it", err)
	}
	var recorded int
	if err := ownerPool.QueryRow(ctx, "SELECT count(*) FROM tidings_migrations WHERE version = 9999").Scan(&recorded); err != nil || recorded != 0 {
		t.Errorf("migration 9999 after the node's attempt: recorded %d times, %v; want 0", recorded, err)
	}
	if err := ownerPool.QueryRow(ctx, "SELECT count(*) FROM pg_class WHERE relname = 'forged'").Scan(&recorded); err != nil || recorded != 0 {
		t.Errorf("a table made by the node's attempt: %d, %v; want none", recorded, err)
	}

	// Services: a role granted tidings_publisher publishes; a role granted nothing cannot
	// connect, since step 1 took CONNECT from PUBLIC.
	pub := loginRole(t, admin, base, "tidings_publisher")
	var id int64
	if err := pub.QueryRow(ctx, `SELECT publish_event('shipped', '{"id":7}')`).Scan(&id); err != nil || id <= 0 {
		t.Errorf("publish as a member of tidings_publisher: got %d, %v", id, err)
	}
	stranger := loginRole(t, admin, base)
	if _, err := stranger.Exec(ctx, "SELECT 1"); sqlState(err) != "42501" {
		t.Errorf("connect as a role granted nothing: got %v, want SQLSTATE 42501", err)
	}
}

// nodeCanServe does, as the node role on pool, each kind of database work a node does, and
// fails the test at the first that is refused.
func nodeCanServe(t *testing.T, ctx context.Context, pool *pgxpool.Pool) {
	t.Helper()
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("as the node role, %s: %v", what, err)
		}
	}
	check("migrate with nothing pending", data.Migrate(ctx, pool, migrations.FS, nil))

	// The listener, up before anything is published, then woken by the first publish.
	events := data.NewEvents(pool)
	listenCtx, stopListening := context.WithCancel(ctx)
	states := make(chan data.ListenerState, 16)
	listened := make(chan error, 1)
	go func() {
		listened <- events.Listen(listenCtx, data.ListenerConfig{}, func(s data.ListenerState) {
			select {
			case states <- s:
			default:
			}
		})
	}()
	defer func() {
		stopListening()
		<-listened
	}()
	waitState := func(want data.ListenerState) {
		t.Helper()
		for {
			select {
			case s := <-states:
				if s == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("as the node role, the listener never reached state %d", want)
			}
		}
	}
	waitState(data.ListenerUp)

	pub := data.NewPublisher(pool, data.PublisherConfig{})
	defer pub.Close()
	evs := []data.NewEvent{{Type: "message", Data: json.RawMessage(`{"text":"hi"}`)}}
	ids, err := pub.Publish(ctx, evs)
	check("publish", err)
	waitState(data.ListenerNotified)
	key := data.IdempotencyKey{Scope: "api", Key: "k1", Request: sha256.Sum256([]byte("k1"))}
	_, _, err = pub.PublishKeyed(ctx, key, evs)
	check("publish with a key", err)
	check("append a control event", data.AppendControl(ctx, pool, data.CloseStreams{UserIDs: []int64{1}, Code: 4003, Reason: "logout"}.Event()))
	_, err = events.After(ctx, 0, 10)
	check("read the log", err)
	_, err = events.Watermark(ctx)
	check("read the watermark", err)
	_, err = events.Bounds(ctx, ids[0])
	check("read the bounds", err)
	_, err = data.RecentEvents(ctx, pool, "message", ids[0]+10, 50, func(data.Audience) bool { return true })
	check("read the recent messages", err)

	u, err := data.CreateUser(ctx, pool, "alice", data.UserRegular, "hash")
	check("create a user", err)
	_, err = data.UserByName(ctx, pool, "alice")
	check("read a user", err)
	_, err = data.ListUsers(ctx, pool)
	check("list users", err)
	admin := data.UserAdmin
	check("change a user", pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := data.LockUserShared(ctx, tx, u.ID); err != nil {
			return err
		}
		_, _, err := data.UpdateUser(ctx, tx, u.ID, nil, &admin)
		return err
	}))

	now := time.Now()
	hash := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	row := data.SessionRow{UserID: u.ID, RotatesAt: now.Add(time.Hour), ExpiresAt: now.Add(24 * time.Hour), DiscardAt: now.Add(48 * time.Hour)}
	row.TokenHash = hash("first")
	first, err := data.InsertSession(ctx, pool, row)
	check("insert a session", err)
	row.TokenHash, row.PredecessorID = hash("second"), &first.ID
	second, err := data.InsertSession(ctx, pool, row)
	check("insert its successor", err)
	_, err = data.SessionByTokenHash(ctx, pool, hash("first"))
	check("read a session", err)
	check("rotate a session", pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := data.LockSessions(ctx, tx, []int64{first.ID, second.ID}); err != nil {
			return err
		}
		if _, err := data.SessionByID(ctx, tx, first.ID); err != nil {
			return err
		}
		if err := data.MarkSessionPresented(ctx, tx, first.ID, now); err != nil {
			return err
		}
		return data.SetSuccessor(ctx, tx, first.ID, second.ID, now)
	}))
	_, err = data.RevokeSessions(ctx, pool, []int64{first.ID, second.ID}, data.RevokedLogout, now)
	check("revoke sessions", err)
	_, err = data.DiscardOld(ctx, pool, now.Add(72*time.Hour), now)
	check("discard old sessions and login failures", err)

	_, _, err = data.ReserveLoginAttempt(ctx, pool, "name:alice", now, now.Add(-15*time.Minute), 10)
	check("reserve a login attempt", err)
	check("give a login attempt back", data.ReleaseLoginAttempt(ctx, pool, "name:alice", now))
	dev, err := data.InsertDevice(ctx, pool, hash("device"), u.ID, now.Add(time.Hour))
	check("insert a device", err)
	_, err = data.DeviceByTokenHash(ctx, pool, hash("device"))
	check("read a device", err)
	check("renew a device", data.RenewDevice(ctx, pool, dev, now.Add(2*time.Hour)))
	check("discard login state", data.DiscardLoginState(ctx, pool, now.Add(3*time.Hour), now, 5))

	presence, err := data.NewPresence(ctx, pool) // the first node makes the signing key
	check("start presence", err)
	check("write a node's set", presence.Replace(ctx, "node-a", 1, []int64{u.ID}))
	check("write a change", presence.Flush(ctx, "node-a", 2, nil, []int64{u.ID}))
	_, err = presence.Beat(ctx, "node-a", time.Minute)
	check("beat", err)
	_, err = presence.Online(ctx, time.Minute)
	check("read who is online", err)
	check("send a signal", presence.Signal(ctx, []byte(`{"typing":true}`)))
	check("leave", presence.Leave(ctx, "node-a", time.Minute, 0))

	_, err = pub.DiscardKeys(ctx)
	check("discard idempotency keys", err)
	_, err = events.PruneOlderThan(ctx, now.Add(time.Hour))
	check("prune the log", err)
	check("delete a user", data.DeleteUser(ctx, pool, u.ID))
}
