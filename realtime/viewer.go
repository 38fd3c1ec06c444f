package realtime

import "tidings/data"

// Viewer is who a stream delivers to: anonymous (the zero value), or a signed-in account.
// The web layer decides it from the session; the stream only applies it.
type Viewer struct {
	SessionID int64         // 0 when anonymous
	UserID    int64         // 0 when anonymous
	Type      data.UserType // the account's type; empty when anonymous
}

// SignedIn reports whether the viewer is an account.
func (v Viewer) SignedIn() bool { return v.UserID != 0 }

// CanSee reports whether an event with audience a may be sent to v (docs/protocol.md section 3).
func (v Viewer) CanSee(a data.Audience) bool {
	switch a.Kind {
	case "", data.AudienceEveryone:
		return true
	case data.AudienceSignedIn:
		return v.SignedIn()
	case data.AudienceMinType:
		return v.SignedIn() && v.Type.Rank() >= a.Type.Rank()
	case data.AudienceUser:
		return v.SignedIn() && v.UserID == a.UserID
	}
	return false
}

// canSeeEvent is the one rule of what a stream sends: never a control event, and an event
// only to a viewer its audience admits.
func (v Viewer) canSeeEvent(typ string, a data.Audience) bool {
	return !data.IsControl(typ) && v.CanSee(a)
}
