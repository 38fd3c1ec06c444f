package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"tidings/auth"
	"tidings/data"
	"tidings/data/datatest"
)

// isBadRequest reports whether err is the API's 400.
func isBadRequest(err error) bool {
	var e *apiError
	return errors.As(err, &e) && e.status == http.StatusBadRequest
}

// isObject reports whether body is exactly one JSON object, with only keys that match one of
// keys regardless of case (as encoding/json matches fields) when keys is not nil.
func isObject(body []byte, keys ...string) bool {
	if !json.Valid(body) {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil || m == nil {
		return false
	}
	for k := range m {
		if keys != nil && !containsFold(keys, k) {
			return false
		}
	}
	return true
}

func containsFold(keys []string, k string) bool {
	for _, x := range keys {
		if strings.EqualFold(x, k) {
			return true
		}
	}
	return false
}

var credentialBodies = []struct {
	body           string
	name, password string
	bearer         bool
	ok             bool
}{
	{`{"name":"alice","password":"secret-password"}`, "alice", "secret-password", false, true},
	{` {"password":"p","name":"n","extra":[1,2]} `, "n", "p", false, true},
	{`{"name":"","password":""}`, "", "", false, true}, // validated by auth, not here
	{`{"name":"\u00e9\n","password":"a\"b"}`, "é\n", `a"b`, false, true},
	{`{"name":"alice","password":"secret-password","bearer":true}`, "alice", "secret-password", true, true},
	{`{"bearer":false,"name":"alice","password":"secret-password"}`, "alice", "secret-password", false, true},
	{`{"name":"alice","password":"secret-password","bearer":null}`, "alice", "secret-password", false, true},
	{`{"name":"alice","password":"secret-password","bearer":"true"}`, "", "", false, false},
	{`{"name":"alice","password":"secret-password","bearer":1}`, "", "", false, false},
	{``, "", "", false, false},
	{`null`, "", "", false, false},
	{`{}`, "", "", false, false},
	{`[]`, "", "", false, false},
	{`"alice"`, "", "", false, false},
	{`{"name":"alice"}`, "", "", false, false},
	{`{"password":"secret-password"}`, "", "", false, false},
	{`{"name":null,"password":"secret-password"}`, "", "", false, false},
	{`{"name":"alice","password":null}`, "", "", false, false},
	{`{"name":1,"password":"secret-password"}`, "", "", false, false},
	{`{"name":"alice","password":["x"]}`, "", "", false, false},
	{`{"name":"alice","password":"secret-password"`, "", "", false, false},
	{`{"name":"alice","password":"secret-password"}}`, "", "", false, false},
	{`{"name":"alice","password":"secret-password"} {}`, "", "", false, false},
	{"{\"name\":\"alice\",\"password\":\"secret\xff\"}x", "", "", false, false},
}

func TestParseSignIn(t *testing.T) {
	t.Parallel()
	for _, c := range credentialBodies {
		got, err := ParseSignIn([]byte(c.body))
		if c.ok {
			if want := (SignInBody{c.name, c.password, c.bearer}); err != nil || got != want {
				t.Errorf("%q: got %+v, %v; want %+v, nil", c.body, got, err, want)
			}
			continue
		}
		if !isBadRequest(err) || got != (SignInBody{}) {
			t.Errorf("%q: got %+v, %v; want a 400", c.body, got, err)
		}
	}
}

// FuzzParseSignIn checks that any body is either refused with a 400 or is a JSON object whose
// name, password and bearer survive a round trip.
func FuzzParseSignIn(f *testing.F) {
	for _, c := range credentialBodies {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := ParseSignIn(body)
		if err != nil {
			if !isBadRequest(err) {
				t.Fatalf("%q: got error %v, want a 400", body, err)
			}
			return
		}
		if !isObject(body) {
			t.Fatalf("%q: got accepted, want a 400 for anything but a JSON object", body)
		}
		again, _ := json.Marshal(map[string]any{"name": in.Name, "password": in.Password, "bearer": in.Bearer})
		if back, err := ParseSignIn(again); err != nil || back != in {
			t.Fatalf("%q: round trip of %+v got %+v, %v", body, in, back, err)
		}
	})
}

var patchBodies = []struct {
	body      string
	name, typ string // "-" for absent
	ok        bool
}{
	{`{}`, "-", "-", true},
	{`{"name":"bob"}`, "bob", "-", true},
	{`{"type":"crew"}`, "-", "crew", true},
	{" \n{\"name\":\"bob\",\"type\":\"admin\"}\t", "bob", "admin", true},
	{`{"name":null,"type":null}`, "-", "-", true},
	{`{"name":""}`, "", "-", true},         // validated by auth, not here
	{`{"type":"boss"}`, "-", "boss", true}, // validated by auth, not here
	{``, "", "", false},
	{`   `, "", "", false},
	{`null`, "", "", false},
	{` null `, "", "", false},
	{`[]`, "", "", false},
	{`[{}]`, "", "", false},
	{`"bob"`, "", "", false},
	{`1`, "", "", false},
	{`true`, "", "", false},
	{`{`, "", "", false},
	{`{"name":1}`, "", "", false},
	{`{"type":5}`, "", "", false},
	{`{"name":["bob"]}`, "", "", false},
	{`{"id":3}`, "", "", false},
	{`{"name":"bob","password":"x"}`, "", "", false},
	{`{"name":"bob"} {}`, "", "", false},
	{`{"name":"bob"}x`, "", "", false},
	{`{"name":"bob"}}`, "", "", false},
	{`{}]`, "", "", false},
	{`null}`, "", "", false},
}

func TestParseUserPatch(t *testing.T) {
	t.Parallel()
	show := func(p auth.UserPatch) (name, typ string) {
		name, typ = "-", "-"
		if p.Name != nil {
			name = *p.Name
		}
		if p.Type != nil {
			typ = string(*p.Type)
		}
		return name, typ
	}
	for _, c := range patchBodies {
		p, err := ParseUserPatch([]byte(c.body))
		name, typ := show(p)
		if c.ok {
			if err != nil || name != c.name || typ != c.typ {
				t.Errorf("%q: got name %q, type %q, %v; want %q, %q, nil", c.body, name, typ, err, c.name, c.typ)
			}
			continue
		}
		if !isBadRequest(err) || p.Name != nil || p.Type != nil {
			t.Errorf("%q: got name %q, type %q, %v; want a 400", c.body, name, typ, err)
		}
	}
}

// FuzzParseUserPatch checks that any body is either refused with a 400 or is one JSON object
// with no fields but name and type, whose patch survives a round trip.
func FuzzParseUserPatch(f *testing.F) {
	for _, c := range patchBodies {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParseUserPatch(body)
		if err != nil {
			if !isBadRequest(err) {
				t.Fatalf("%q: got error %v, want a 400", body, err)
			}
			return
		}
		if !isObject(body, "name", "type") {
			t.Fatalf("%q: got accepted, want a 400 for anything but one object of name and type", body)
		}
		again, _ := json.Marshal(userPatch{Name: p.Name, Type: p.Type})
		p2, err := ParseUserPatch(again)
		if err != nil || (p.Name == nil) != (p2.Name == nil) || (p.Type == nil) != (p2.Type == nil) ||
			p.Name != nil && *p.Name != *p2.Name || p.Type != nil && *p.Type != *p2.Type {
			t.Fatalf("%q: round trip through %s got %+v, %v; want %+v", body, again, p2, err, p)
		}
	})
}

// FuzzSessionCookie sends any cookie value to GET /api/session: the answer is always 200 with
// no session, and a value that is not a live session is cleared.
func FuzzSessionCookie(f *testing.F) {
	for _, s := range []string{"", "x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "%00", "a b", strings.Repeat("z", 5000)} {
		f.Add(s)
	}
	pool := datatest.NewPool(f)
	h := NewHandler(Deps{Pool: pool, Auth: auth.NewManager(pool, auth.Config{})}, Config{Dev: true})
	f.Fuzz(func(t *testing.T, value string) {
		req := httptest.NewRequest("GET", "/api/session", nil)
		req.Header.Set("Cookie", "tidings-session="+value)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"session":null`) {
			t.Fatalf("cookie %q: got %d %s", value, w.Code, w.Body)
		}
	})
}

func TestParseIdempotencyKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		values []string
		want   string
	}{
		{nil, ""}, {[]string{"k1"}, "k1"}, {[]string{`"k1"`}, "k1"}, {[]string{" \tk1 "}, "k1"},
		{[]string{"0b9c1d2e-7f3a-4e5b-8c6d-1a2b3c4d5e6f"}, "0b9c1d2e-7f3a-4e5b-8c6d-1a2b3c4d5e6f"},
	} {
		if got, err := ParseIdempotencyKey(c.values); err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.values, got, err, c.want)
		}
	}
	for _, values := range [][]string{{""}, {`""`}, {`"`}, {"a b"}, {"a,b"}, {`"k1`}, {`'k1'`}, {"k1", "k1"}, {"é"}, {strings.Repeat("k", 256)}} {
		if _, err := ParseIdempotencyKey(values); !isBadRequest(err) {
			t.Errorf("%q: got %v, want a 400", values, err)
		}
	}
}

// FuzzParseIdempotencyKey checks that any header value is either refused with a 400 or yields a
// key that the store accepts, taken from the value itself, which reads the same bare, quoted
// or padded.
func FuzzParseIdempotencyKey(f *testing.F) {
	for _, s := range []string{"k1", `"k1"`, " k1\t", "", "a b", `"`, strings.Repeat("k", 255), "é"} {
		f.Add(s, false)
	}
	f.Add("k1", true)
	f.Fuzz(func(t *testing.T, value string, twice bool) {
		values := []string{value}
		if twice {
			values = append(values, value)
		}
		key, err := ParseIdempotencyKey(values)
		if err != nil {
			if !isBadRequest(err) {
				t.Fatalf("%q: error %v is not a 400", values, err)
			}
			return
		}
		if twice || !data.ValidKey(key) || !strings.Contains(value, key) {
			t.Fatalf("%q: accepted key %q", values, key)
		}
		for _, v := range []string{key, `"` + key + `"`, " " + key + "\t"} {
			if again, err := ParseIdempotencyKey([]string{v}); err != nil || again != key {
				t.Fatalf("%q: key %q written as %q reads %q, %v", values, key, v, again, err)
			}
		}
	})
}
