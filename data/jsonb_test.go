package data_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
)

// jsonbCases are JSON values that encoding/json accepts, and whether PostgreSQL's jsonb does.
// The numbers sit on the edges of numeric's range.
var jsonbCases = []struct {
	data string
	ok   bool
}{
	{`{"text":"hi"}`, true},
	{`"\u0000"`, false},
	{`{"text":"a\u0000b"}`, false},
	{`{"\u0000":1}`, false},
	{`["x",{"k":["\u0000"]}]`, false},
	{`"\\u0000"`, true}, // a backslash, then the text u0000
	{`"\\\u0000"`, false},
	{`"\u0001\u001f"`, true},
	{`"\ud83d\ude00"`, true},
	{`"\uD83D\uDE00"`, true},
	{`"\ud800"`, false},
	{`"\udc00"`, false},
	{`"\ud800x"`, false},
	{`"\ud800\ud800"`, false},
	{`"\ud800\u0041"`, false},
	{`"\udbff\udfff"`, true},
	{`"\uffff\ufffe"`, true},
	{"\"caf\xc3\xa9\"", true},
	{"\"caf\xe9\"", false}, // not UTF-8
	{"\"\xed\xa0\x80\"", false},
	{`[1e131071, -9.9e131071, 0.1e131072, 0.01e131073]`, true},
	{`1e131072`, false},
	{`10e131071`, false},
	{`-1e131072`, false},
	{`0e1073741822`, true},
	{`0e1073741823`, false},
	{`1e99999999999999999999999`, false},
	{`[0e-16383, 0.5e-16382, 0.00e-16381, 1e-16383, 0.0]`, true},
	{`0e-16384`, false},
	{`0.5e-16383`, false},
	{`1e-16384`, false},
	{`1e-1073741822`, false},
	{`{"n":123456789012345678901234567890e-5,"m":-0,"k":1E+5,"z":0.000e2}`, true},
	{`[true,false,null,"-1e999999",{"1e999999":-1}]`, true},
	{`"` + strings.Repeat(`\"`, 100) + `"`, true},
	{`0.` + strings.Repeat("1", 16383), true},
	{`0.` + strings.Repeat("1", 16384), false},
	{`1` + strings.Repeat("0", 131071), true},
	{`1` + strings.Repeat("0", 131072), false},
	{strings.Repeat("[", 10000) + strings.Repeat("]", 10000), true},
}

// jsonbRefusal is PostgreSQL's error for d as jsonb, or nil when it takes it.
func jsonbRefusal(ctx context.Context, pool *pgxpool.Pool, d string) error {
	var ok bool
	return pool.QueryRow(ctx, "SELECT $1::text::jsonb IS NOT NULL", d).Scan(&ok)
}

// TestValidateAgreesWithJSONB checks that validation takes exactly the values of jsonbCases
// that PostgreSQL's jsonb takes, and that each case says so rightly.
func TestValidateAgreesWithJSONB(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	for _, c := range jsonbCases {
		if !json.Valid([]byte(c.data)) {
			t.Fatalf("%s: not JSON to encoding/json", shortCase(c.data))
		}
		pgErr := jsonbRefusal(ctx, pool, c.data)
		if (pgErr == nil) != c.ok {
			t.Errorf("%s: PostgreSQL says %v, the case says ok=%v", shortCase(c.data), pgErr, c.ok)
		}
		if pgErr != nil && !data.IsInvalidInput(pgErr) {
			t.Errorf("%s: PostgreSQL's refusal %v is not an invalid-input error", shortCase(c.data), pgErr)
		}
		err := data.NewEvent{Type: "t", Data: json.RawMessage(c.data)}.Validate()
		if (err == nil) != c.ok || err != nil && !errors.Is(err, data.ErrInvalidEvent) {
			t.Errorf("%s: validation says %v, want ok=%v", shortCase(c.data), err, c.ok)
		}
	}
	for _, typ := range []string{"a\x00b", "caf\xe9"} {
		if err := (data.NewEvent{Type: typ}).Validate(); !errors.Is(err, data.ErrInvalidEvent) {
			t.Errorf("type %q: got %v, want ErrInvalidEvent", typ, err)
		}
	}
}

func shortCase(s string) string {
	if len(s) > 60 {
		return s[:50] + "…"
	}
	return s
}

// TestPublishEventRefusesNUL checks what a caller of publish_event gets for U+0000 in data:
// PostgreSQL refuses the jsonb value itself before the function runs (SQLSTATE 22P05, an
// invalid-input error), in the caller's transaction, and nothing is stored.
func TestPublishEventRefusesNUL(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	for _, q := range []string{
		`SELECT publish_event('x', '{"text":"a\u0000b"}', NULL)`,
		`SELECT publish_event('x', $1::jsonb, NULL)`,
		`SELECT publish_event('x', $1, NULL)`,
	} {
		var args []any
		if strings.Contains(q, "$1") {
			args = append(args, `{"\u0000":1}`)
		}
		var id int64
		err := pool.QueryRow(ctx, q, args...).Scan(&id)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22P05" || !data.IsInvalidInput(err) {
			t.Errorf("%s: got %v, want SQLSTATE 22P05 (unsupported Unicode escape sequence)", q, err)
		}
	}
	if w, err := data.NewEvents(pool).Watermark(ctx); err != nil || w != 0 {
		t.Fatalf("watermark: got %d, %v; want 0", w, err)
	}
}

// TestPublisherRefusesNULBeforeTheBatch holds the counter row so that a batch of good calls
// waits, then publishes a call with U+0000 in its data: it is refused at once, while the
// counter is still held, so it never joined the batch; released, the good calls commit
// together in one transaction, not split apart to find the call at fault.
func TestPublisherRefusesNULBeforeTheBatch(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	p := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p.Close)
	release := holdCounter(t, pool)
	first := publishAsync(t, ctx, p, nil, ev("first"))
	waitCalls(t, p, "the first batch in flight", func(b, w int) bool { return b == 1 })
	var good []<-chan published
	for range 3 {
		good = append(good, publishAsync(t, ctx, p, nil, ev("good")))
	}
	waitCalls(t, p, "the good calls waiting", func(b, w int) bool { return w == 3 })
	bad := publishAsync(t, ctx, p, nil, ev("good"), data.NewEvent{Type: "bad", Data: json.RawMessage(`{"text":"a\u0000b"}`)})
	for range 3 {
		good = append(good, publishAsync(t, ctx, p, nil, ev("good")))
	}
	if r := within(t, 5*time.Second, "the call with U+0000, while the batch waits", bad); !errors.Is(r.err, data.ErrInvalidEvent) {
		t.Fatalf("call with U+0000: got %v, %v; want ErrInvalidEvent", r.ids, r.err)
	}
	waitCalls(t, p, "the good calls waiting", func(b, w int) bool { return w == 6 })
	release()
	within(t, 10*time.Second, "first", first)
	for i, c := range good {
		if r := within(t, 10*time.Second, "good call", c); r.err != nil {
			t.Fatalf("good call %d: %v", i, r.err)
		}
	}
	var txns, n int
	if err := pool.QueryRow(ctx, "SELECT count(DISTINCT xmin::text), count(*) FROM events WHERE type = 'good'").Scan(&txns, &n); err != nil {
		t.Fatal(err)
	}
	if txns != 1 || n != 6 {
		t.Fatalf("got %d good events in %d transactions, want 6 in 1", n, txns)
	}
	if n := countEvents(t, pool, "bad"); n != 0 {
		t.Fatalf("got %d events of the bad call stored, want none", n)
	}
}

// FuzzEventValidate checks that PostgreSQL stores every event that validation accepts: its
// type as text and its data as jsonb, appended as the publisher appends (in a transaction
// rolled back afterwards).
func FuzzEventValidate(f *testing.F) {
	for _, c := range jsonbCases {
		if len(c.data) < 1000 {
			f.Add("t", []byte(c.data))
		}
	}
	f.Add("a\x00", []byte(`1`))
	f.Add("\xff", []byte(`{"a":"\u00e9"}`))
	pool := datatest.NewPool(f)
	f.Fuzz(func(t *testing.T, typ string, d []byte) {
		e := data.NewEvent{Type: typ, Data: d}
		if e.Validate() != nil {
			return
		}
		ctx := context.Background()
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := data.AppendEvents(ctx, tx, []data.NewEvent{e}); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("type %q, data %q: validation accepts it, PostgreSQL refuses it: %v", typ, d, err)
		}
	})
}

var errRollback = errors.New("roll back")
