package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// UserType is the access level of a user, ordered regular < crew < admin.
type UserType string

// The user types, lowest rights first.
const (
	UserRegular UserType = "regular"
	UserCrew    UserType = "crew"
	UserAdmin   UserType = "admin"
)

// Rank orders user types: 1 for regular, 2 for crew, 3 for admin, 0 for anything else.
func (t UserType) Rank() int {
	switch t {
	case UserRegular:
		return 1
	case UserCrew:
		return 2
	case UserAdmin:
		return 3
	}
	return 0
}

// Valid reports whether t is one of the three user types.
func (t UserType) Valid() bool { return t.Rank() > 0 }

// AudienceKind names who may see an event.
type AudienceKind string

// The audience kinds of docs/protocol.md section 3.
const (
	AudienceEveryone AudienceKind = "everyone"
	AudienceSignedIn AudienceKind = "signed-in"
	AudienceMinType  AudienceKind = "min-type"
	AudienceUser     AudienceKind = "user"
)

// Audience says who may see an event. The zero value is everyone. Type is set only for
// AudienceMinType and UserID only for AudienceUser.
type Audience struct {
	Kind   AudienceKind
	Type   UserType
	UserID int64
}

// ErrInvalidAudience is returned for an audience of any shape other than the four of the protocol.
var ErrInvalidAudience = errors.New("data: invalid audience")

// Everyone reports whether the audience is every stream, anonymous ones included.
func (a Audience) Everyone() bool { return a.Kind == "" || a.Kind == AudienceEveryone }

// MarshalJSON writes the canonical form of the audience.
func (a Audience) MarshalJSON() ([]byte, error) {
	switch {
	case a.Everyone():
		return []byte(`{"kind":"everyone"}`), nil
	case a.Kind == AudienceSignedIn:
		return []byte(`{"kind":"signed-in"}`), nil
	case a.Kind == AudienceMinType && a.Type.Valid():
		return fmt.Appendf(nil, `{"kind":"min-type","type":%q}`, a.Type), nil
	case a.Kind == AudienceUser && a.UserID > 0:
		return fmt.Appendf(nil, `{"kind":"user","userId":%d}`, a.UserID), nil
	}
	return nil, fmt.Errorf("%w: %+v", ErrInvalidAudience, a)
}

// UnmarshalJSON accepts exactly the audience shapes of the protocol: JSON null or
// {"kind":"everyone"}, {"kind":"signed-in"}, {"kind":"min-type","type":T} with T one of the
// user types, or {"kind":"user","userId":N} with N a positive integer. Anything else, an extra
// field included, is ErrInvalidAudience.
func (a *Audience) UnmarshalJSON(b []byte) error {
	*a = Audience{}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return fmt.Errorf("%w: want an object", ErrInvalidAudience)
	}
	var kind string
	if err := json.Unmarshal(raw["kind"], &kind); err != nil || raw["kind"] == nil {
		return fmt.Errorf("%w: want a string \"kind\"", ErrInvalidAudience)
	}
	want := map[AudienceKind]string{AudienceEveryone: "", AudienceSignedIn: "", AudienceMinType: "type", AudienceUser: "userId"}
	field, known := want[AudienceKind(kind)]
	if !known {
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidAudience, kind)
	}
	if (field == "" && len(raw) != 1) || (field != "" && (len(raw) != 2 || raw[field] == nil)) {
		return fmt.Errorf("%w: kind %q takes exactly the fields of the protocol", ErrInvalidAudience, kind)
	}
	a.Kind = AudienceKind(kind)
	switch a.Kind {
	case AudienceEveryone:
		a.Kind = ""
	case AudienceMinType:
		var t string
		if err := json.Unmarshal(raw["type"], &t); err != nil || !UserType(t).Valid() {
			return fmt.Errorf("%w: type must be regular, crew or admin", ErrInvalidAudience)
		}
		a.Type = UserType(t)
	case AudienceUser:
		id, err := strconv.ParseInt(string(bytes.TrimSpace(raw["userId"])), 10, 64)
		if err != nil || id <= 0 {
			return fmt.Errorf("%w: userId must be a positive integer", ErrInvalidAudience)
		}
		a.UserID = id
	}
	return nil
}

// sqlValue is the audience as the events table stores it: nil for everyone, else canonical JSON.
func (a Audience) sqlValue() (*string, error) {
	if a.Everyone() {
		return nil, nil
	}
	b, err := a.MarshalJSON()
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}
