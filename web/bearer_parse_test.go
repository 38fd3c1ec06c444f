package web

import (
	"strings"
	"testing"

	"tidings/auth"
)

const goodToken = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde" // 43 characters, as tidings makes them

func TestParseAuthorization(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		values []string
		want   auth.Token
		ok     bool
	}{
		{nil, "", true},
		{[]string{"Bearer " + goodToken}, goodToken, true},
		{[]string{"bearer " + goodToken}, goodToken, true},
		{[]string{"BEARER   " + goodToken}, goodToken, true},
		{[]string{"Basic dXNlcjpwYXNz"}, "", true}, // a proxy's: not ours
		{[]string{"Basic a", "Basic b"}, "", true},
		{[]string{"Bearer x"}, "x", true},
		{[]string{"Bearer " + strings.Repeat("a", 256)}, auth.Token(strings.Repeat("a", 256)), true},
		{[]string{"Bearer"}, "", false},
		{[]string{"Bearer "}, "", false},
		{[]string{"Bearer " + strings.Repeat("a", 257)}, "", false},
		{[]string{"Bearer " + strings.Repeat("a", 1<<20)}, "", false},
		{[]string{"Bearer a+b/c="}, "", false}, // base64, not base64url
		{[]string{"Bearer " + goodToken + " x"}, "", false},
		{[]string{"Bearer\t" + goodToken}, "", false},
		{[]string{"Bearer " + goodToken, "Bearer " + goodToken}, "", false},
		{[]string{"Basic a", "Bearer " + goodToken}, "", false},
	} {
		got, err := ParseAuthorization(tc.values)
		if tc.ok && (err != nil || got != tc.want) || !tc.ok && (err != errBadAuthorization || got != "") {
			t.Errorf("%.80q: got %q, %v; want %q, ok %v", tc.values, string(got), err, string(tc.want), tc.ok)
		}
	}
}

func TestParseSubprotocols(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		values []string
		want   auth.Token
		ok     bool
	}{
		{nil, "", true},
		{[]string{"tidings.v1"}, "", true},
		{[]string{"tidings"}, "", true},
		{[]string{"tidings, tidings-bearer." + goodToken}, goodToken, true},
		{[]string{"tidings-bearer." + goodToken + ",tidings"}, goodToken, true},
		{[]string{"tidings.v1", "tidings-bearer." + goodToken}, goodToken, true},
		{[]string{"TIDINGS , tidings-bearer." + goodToken}, goodToken, true},
		{[]string{"other, tidings.v1"}, "", true},
		{[]string{"tidings-bearer." + goodToken}, "", false}, // nothing the server could select
		{[]string{"tidings, tidings-bearer."}, "", false},
		{[]string{"tidings, tidings-bearer.a=b"}, "", false},
		{[]string{"tidings, tidings-bearer.a, tidings-bearer.a"}, "", false},
		{[]string{"tidings, tidings-bearer." + strings.Repeat("a", 257)}, "", false},
		{[]string{strings.Repeat("x,", 16) + "tidings"}, "", false},
		{[]string{strings.Repeat(",", 1<<20)}, "", false},
	} {
		got, err := ParseSubprotocols(tc.values)
		if tc.ok && (err != nil || got != tc.want) || !tc.ok && (err != errBadSubprotocol || got != "") {
			t.Errorf("%.80q: got %q, %v; want %q, ok %v", tc.values, string(got), err, string(tc.want), tc.ok)
		}
	}
}

// FuzzParseAuthorization: any Authorization lines (split at newlines) give no token, a valid
// token taken from the one Bearer line, or the fixed 400, whose message never echoes them.
func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{"", "Bearer " + goodToken, "Basic x", "Bearer", "bearer  a-b_c", "Bearer a\nBearer a", "Bearer é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		values := strings.Split(s, "\n")
		got, err := ParseAuthorization(values)
		if err != nil {
			if err != errBadAuthorization || got != "" {
				t.Fatalf("%q: got %q, %v; want the fixed 400", s, string(got), err)
			}
			return
		}
		if got == "" {
			return
		}
		if !validToken(string(got)) || len(values) != 1 || !strings.EqualFold(values[0][:6], "bearer") || !strings.HasSuffix(values[0], " "+string(got)) {
			t.Fatalf("%q: got token %q", s, string(got))
		}
	})
}

// FuzzParseSubprotocols: any Sec-WebSocket-Protocol lines (split at newlines) give no token, a
// valid token offered once beside tidings or tidings.v1, or the fixed 400.
func FuzzParseSubprotocols(f *testing.F) {
	for _, s := range []string{"", "tidings", "tidings, tidings-bearer." + goodToken, "tidings-bearer.x", "a,b\ntidings.v1,tidings-bearer.y", ",,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSubprotocols(strings.Split(s, "\n"))
		if err != nil {
			if err != errBadSubprotocol || got != "" {
				t.Fatalf("%q: got %q, %v; want the fixed 400", s, string(got), err)
			}
			return
		}
		if got == "" {
			return
		}
		offered := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' })
		bearer, short := 0, false
		for _, p := range offered {
			p = strings.TrimSpace(p)
			bearer += strings.Count(p, "tidings-bearer.")
			short = short || strings.EqualFold(p, "tidings") || strings.EqualFold(p, "tidings.v1")
		}
		if !validToken(string(got)) || bearer != 1 || !short || !strings.Contains(s, "tidings-bearer."+string(got)) {
			t.Fatalf("%q: got token %q", s, string(got))
		}
	})
}
