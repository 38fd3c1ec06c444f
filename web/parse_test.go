package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/realtime"
)

func TestParseLastEventID(t *testing.T) {
	t.Parallel()
	valid := map[string]int64{
		"lastEventId=0": 0, "lastEventId=57": 57, "lastEventId=007": 7, "x=1&lastEventId=9": 9,
		"lastEventId=9223372036854775807": 9223372036854775807, "lastEventId=%31%32": 12, "last%45ventId=5": 5,
	}
	for q, want := range valid {
		got, err := ParseLastEventID(q)
		if err != nil || got == nil || *got != want {
			t.Errorf("%q: got %v, %v; want %d", q, got, err, want)
		}
	}
	for _, q := range []string{"", "x=1", "lasteventid=5", "lastEventId2=3"} {
		if got, err := ParseLastEventID(q); got != nil || err != nil {
			t.Errorf("%q: got %v, %v; want absent", q, got, err)
		}
	}
	invalid := []string{
		"lastEventId", "lastEventId=", "lastEventId=abc", "lastEventId=-1", "lastEventId=+1",
		"lastEventId=1.5", "lastEventId=0x10", "lastEventId=1e3", "lastEventId=9223372036854775808",
		"lastEventId=99999999999999999999", "lastEventId=1&lastEventId=1", "lastEventId=1&lastEventId=2",
		"lastEventId=%zz", "lastEventId=1%20", "lastEventId= 1", "lastEventId=1;x=2", "lastEventId=%EF%BC%91",
	}
	for _, q := range invalid {
		if got, err := ParseLastEventID(q); err == nil {
			t.Errorf("%q: got %v, want an error", q, *got)
		}
	}
}

// FuzzParseLastEventID checks that the parser accepts exactly the decimal forms of int64 values
// from 0 and never panics.
func FuzzParseLastEventID(f *testing.F) {
	for _, s := range []string{"lastEventId=1", "lastEventId=", "lastEventId=-1", "lastEventId=1&lastEventId=2", "a=b&lastEventId=%31", "lastEventId=9223372036854775808"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got, err := ParseLastEventID(q)
		if err != nil {
			var e *apiError
			if !errors.As(err, &e) || e.status != 400 {
				t.Fatalf("%q: error %v is not a 400", q, err)
			}
			return
		}
		if got != nil && (*got < 0 || strconv.FormatInt(*got, 10) == "") {
			t.Fatalf("%q: got %d", q, *got)
		}
	})
}

func TestParsePublishBody(t *testing.T) {
	t.Parallel()
	evs, err := ParsePublishBody([]byte(`{"type":"note","data":{"a":1},"audience":{"kind":"signed-in"}}`))
	if err != nil || len(evs) != 1 || evs[0].Type != "note" || string(evs[0].Data) != `{"a":1}` || evs[0].Audience.Kind != "signed-in" {
		t.Fatalf("one object: got %+v, %v", evs, err)
	}
	evs, err = ParsePublishBody([]byte(` [{"type":"a"},{"type":"b","audience":null,"data":null}]`))
	if err != nil || len(evs) != 2 || evs[0].Type != "a" || evs[1].Type != "b" || !evs[1].Audience.Everyone() {
		t.Fatalf("array: got %+v, %v", evs, err)
	}
	if evs, err := ParsePublishBody([]byte(`[]`)); err != nil || len(evs) != 0 {
		t.Fatalf("empty array: got %+v, %v", evs, err)
	}
	for _, body := range []string{``, `null`, `"x"`, `{}`, `{"type":""}`, `{"type":5}`, `{"type":"a","extra":1}`,
		`{"type":"a"} {"type":"b"}`, `{"type":"a","audience":{"kind":"nobody"}}`, `[{"type":"a"},null]`, `[{"type":"a"}`,
		`{"type":"a","audience":{"kind":"user","userId":"1"}}`} {
		if _, err := ParsePublishBody([]byte(body)); err == nil {
			t.Errorf("%q: accepted", body)
		}
	}
}

// FuzzParsePublishBody checks that any body is either refused with a 400 or yields events that
// the store accepts: they pass validation, and PostgreSQL stores them (in a transaction rolled
// back afterwards).
func FuzzParsePublishBody(f *testing.F) {
	for _, s := range []string{`{"type":"a","data":1}`, `[{"type":"a"},{"type":"b","audience":{"kind":"user","userId":3}}]`, `[]`, `{`, `{"type":"a","audience":{"kind":"min-type","type":"crew"}}`,
		`{"type":"a","data":{"text":"\u0000"}}`, `{"type":"a","data":{"\u0000":1}}`, `{"type":"a\u0000"}`, `{"type":"a","data":"\ud800"}`, `{"type":"a","data":[1e999999]}`,
		"{\"type\":\"a\",\"data\":\"\xff\"}", `[{"type":"a","data":"\\u0000"},{"type":"b","data":"\ud83d\ude00"}]`} {
		f.Add([]byte(s))
	}
	pool := datatest.NewPool(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := ParsePublishBody(body)
		if err != nil {
			var e *apiError
			if !errors.As(err, &e) || e.status != 400 {
				t.Fatalf("%q: error %v is not a 400", body, err)
			}
			return
		}
		for _, e := range evs {
			if err := e.Validate(); err != nil {
				t.Fatalf("%q: parsed event %+v fails validation: %v", body, e, err)
			}
		}
		if err := storeAndRollBack(pool, evs); err != nil {
			t.Fatalf("%q: parsed events that PostgreSQL refuses: %v", body, err)
		}
	})
}

// storeAndRollBack appends evs as the publisher does, in a transaction that it rolls back, and
// returns PostgreSQL's refusal, if any.
func storeAndRollBack(pool *pgxpool.Pool, evs []data.NewEvent) error {
	ctx := context.Background()
	errRollback := errors.New("roll back")
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := data.AppendEvents(ctx, tx, evs); err != nil {
			return err
		}
		return errRollback
	})
	if errors.Is(err, errRollback) {
		return nil
	}
	return err
}

// FuzzMessageData checks that any data of a message publish is either refused as invalid or
// becomes data that the store accepts: it passes validation, and PostgreSQL stores it.
func FuzzMessageData(f *testing.F) {
	for _, s := range []string{`{"text":"hi"}`, `{"text":"  "}`, `{"text":"\u0000"}`, `{"text":" a\u0000 "}`, `{"text":"\ud800"}`,
		`{"text":"\\u0000"}`, `{"text":1}`, `null`, `{"text":"caf\u00e9 \ud83d\ude00"}`, "{\"text\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	pool := datatest.NewPool(f)
	f.Fuzz(func(t *testing.T, d []byte) {
		stored, err := messageData(d)
		if err != nil {
			var fe *realtime.FrameError
			if !errors.As(err, &fe) || fe.Code != realtime.CodeInvalid {
				t.Fatalf("%q: error %v is not invalid", d, err)
			}
			return
		}
		b, aud := stored(data.User{ID: 7, Name: "alice"})
		evs := []data.NewEvent{{Type: "message", Data: b, Audience: aud}}
		if err := evs[0].Validate(); err != nil {
			t.Fatalf("%q: message data %s fails validation: %v", d, b, err)
		}
		if err := storeAndRollBack(pool, evs); err != nil {
			t.Fatalf("%q: message data %s that PostgreSQL refuses: %v", d, b, err)
		}
	})
}

func TestOrigins(t *testing.T) {
	t.Parallel()
	cases := []struct {
		allowed []string
		host    string
		tls     bool
		origin  []string
		want    bool
	}{
		{nil, "localhost:8080", false, nil, true},
		{nil, "localhost:8080", false, []string{"http://localhost:8080"}, true},
		{nil, "LOCALHOST:8080", false, []string{"http://localhost:8080"}, true},
		{nil, "localhost:8080", false, []string{"https://localhost:8080"}, false},
		{nil, "localhost:8080", true, []string{"https://localhost:8080"}, true},
		{nil, "example.com", false, []string{"http://example.com:80"}, true},
		{nil, "localhost:8080", false, []string{"http://evil.example"}, false},
		{nil, "localhost:8080", false, []string{"null"}, false},
		{nil, "localhost:8080", false, []string{"http://localhost:8080", "http://localhost:8080"}, false},
		{[]string{"https://app.example"}, "internal:8080", false, []string{"https://app.example"}, true},
		{[]string{"https://app.example"}, "internal:8080", false, []string{"http://internal:8080"}, false},
		// Desktop wrappers: origins of other schemes, listed, match exactly as written.
		{[]string{"tauri://localhost", "app://main"}, "internal:8080", false, []string{"tauri://localhost"}, true},
		{[]string{"tauri://localhost", "app://main"}, "internal:8080", false, []string{"app://main"}, true},
		{[]string{"tauri://localhost"}, "internal:8080", false, []string{"TAURI://localhost"}, false},
		{[]string{"tauri://localhost"}, "internal:8080", false, []string{"tauri://localhost:1"}, false},
		{[]string{"tauri://localhost"}, "internal:8080", false, []string{"app://main"}, false},
		{[]string{"tauri://localhost"}, "internal:8080", false, []string{"http://internal:8080"}, false},
		{nil, "localhost:8080", false, []string{"tauri://localhost"}, false},
		{[]string{"null", "*"}, "localhost:8080", false, []string{"null"}, false},
	}
	for _, tc := range cases {
		r := originRequest("/api/events", tc.host, tc.tls, tc.origin)
		if got := newOrigins(tc.allowed).allow(r); got != tc.want {
			t.Errorf("allowed %v, host %s, tls %v, origin %v: got %v, want %v", tc.allowed, tc.host, tc.tls, tc.origin, got, tc.want)
		}
	}
}

func TestErrorBody(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	writeError(w, errBadOrigin)
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != 403 || body.Error.Code != "forbidden-origin" || body.Error.Message == "" {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
}
