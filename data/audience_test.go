package data

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestAudienceParse(t *testing.T) {
	t.Parallel()
	valid := []struct {
		in   string
		want Audience
	}{
		{`null`, Audience{}},
		{`{"kind":"everyone"}`, Audience{}},
		{`{"kind":"signed-in"}`, Audience{Kind: AudienceSignedIn}},
		{`{"kind":"min-type","type":"crew"}`, Audience{Kind: AudienceMinType, Type: UserCrew}},
		{`{"type":"admin","kind":"min-type"}`, Audience{Kind: AudienceMinType, Type: UserAdmin}},
		{`{"kind":"user","userId":7}`, Audience{Kind: AudienceUser, UserID: 7}},
		{`{"kind":"user","userId":9223372036854775807}`, Audience{Kind: AudienceUser, UserID: 9223372036854775807}},
	}
	for _, tc := range valid {
		var got Audience
		if err := json.Unmarshal([]byte(tc.in), &got); err != nil {
			t.Errorf("parse %s: %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("parse %s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
	invalid := []string{
		`{}`, `[]`, `"everyone"`, `1`, `{"kind":"Everyone"}`, `{"kind":"nobody"}`, `{"kind":1}`,
		`{"kind":"everyone","x":1}`, `{"kind":"signed-in","type":"crew"}`, `{"kind":"min-type"}`,
		`{"kind":"min-type","type":"boss"}`, `{"kind":"min-type","type":"Crew"}`, `{"kind":"min-type","type":2}`,
		`{"kind":"user"}`, `{"kind":"user","userId":"7"}`, `{"kind":"user","userId":7.5}`,
		`{"kind":"user","userId":1e3}`, `{"kind":"user","userId":0}`, `{"kind":"user","userId":-1}`,
		`{"kind":"user","userId":9223372036854775808}`, `{"kind":"user","userId":7,"type":"crew"}`,
		`{"kind":null}`,
	}
	for _, in := range invalid {
		var got Audience
		if err := json.Unmarshal([]byte(in), &got); !errors.Is(err, ErrInvalidAudience) {
			t.Errorf("parse %s: got %v, want ErrInvalidAudience", in, err)
		}
	}
}

func TestAudienceRoundTrip(t *testing.T) {
	t.Parallel()
	for _, a := range []Audience{{}, {Kind: AudienceSignedIn}, {Kind: AudienceMinType, Type: UserRegular}, {Kind: AudienceUser, UserID: 42}} {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("marshal %+v: %v", a, err)
		}
		var back Audience
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("round trip %+v: got %+v, %v", a, back, err)
		}
	}
}

// FuzzAudience checks that any input either parses into an audience that encodes and parses
// back to itself, or is refused with ErrInvalidAudience, and never panics.
func FuzzAudience(f *testing.F) {
	for _, s := range []string{`null`, `{"kind":"everyone"}`, `{"kind":"signed-in"}`, `{"kind":"min-type","type":"crew"}`,
		`{"kind":"user","userId":7}`, `{"kind":"user","userId":"7"}`, `{}`, `[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var a Audience
		err := a.UnmarshalJSON(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidAudience) {
				t.Fatalf("parse %q: error %v is not ErrInvalidAudience", in, err)
			}
			return
		}
		b, err := a.MarshalJSON()
		if err != nil {
			t.Fatalf("parsed %q into %+v, which does not encode: %v", in, a, err)
		}
		var back Audience
		if err := back.UnmarshalJSON(b); err != nil || back != a {
			t.Fatalf("%q: got %+v after a round trip, want %+v (%v)", in, back, a, err)
		}
	})
}
