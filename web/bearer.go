package web

import (
	"net/http"
	"strings"

	"tidings/auth"
)

// Bearer sessions (docs/protocol.md section 4.5): the session of section 4
// with its token carried by the client instead of a cookie, for apps that the cookie does not
// reach (another origin, a desktop wrapper, a backend acting for a user).
const (
	// TokenHeader carries a bearer session's successor token in a response that rotated it;
	// empty, it tells the client to forget its token (it names no live session).
	TokenHeader = "Tidings-Session-Token"
	// BearerSubprotocol prefixes the subprotocol that carries a bearer token on the stream's
	// upgrade, where browsers cannot set headers: "tidings-bearer.<token>".
	BearerSubprotocol = "tidings-bearer."
	// SubprotocolShort is the subprotocol that a client offering its token beside it is
	// answered with: the same protocol as Subprotocol, never the token.
	SubprotocolShort = "tidings"
)

// Bounds on what a stranger may offer, checked before anything else is done with it.
const (
	// maxTokenLen is the longest bearer token read; tidings' own are 43 characters.
	maxTokenLen = 256
	// maxSubprotocols is the most subprotocols an upgrade may offer.
	maxSubprotocols = 16
)

var (
	errBadAuthorization = badRequest("invalid-authorization",
		"Authorization must be given once, as Bearer followed by a session token (base64url, at most 256 characters)")
	errBadSubprotocol = badRequest("invalid-subprotocol",
		"offer at most 16 subprotocols, tidings-bearer.<token> at most once with a session token (base64url, at most 256 characters), and tidings beside it")
	errTwoTokens = badRequest("invalid-authorization",
		"the Authorization header and the tidings-bearer subprotocol name different tokens")
)

// validToken reports whether s can be a session token: 1 to 256 characters of base64url
// without padding (RFC 4648 section 5), so that it is a valid subprotocol too.
func validToken(s string) bool {
	if len(s) == 0 || len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ParseAuthorization reads the Authorization header lines of a request for a bearer session
// token. No header, or a scheme other than Bearer (a proxy's Basic, say), is no token and no
// error. A Bearer header must be given once and hold one valid token.
func ParseAuthorization(values []string) (auth.Token, error) {
	var token string
	for _, v := range values {
		end := strings.IndexAny(v, " \t")
		if end < 0 {
			end = len(v)
		}
		if !strings.EqualFold(v[:end], "Bearer") {
			continue
		}
		token = strings.TrimLeft(v[end:], " ")
		if len(values) > 1 || !validToken(token) {
			return "", errBadAuthorization
		}
	}
	return auth.Token(token), nil
}

// ParseSubprotocols reads the Sec-WebSocket-Protocol lines of a stream's upgrade for a bearer
// token offered as tidings-bearer.<token>: "" when none is offered. At most maxSubprotocols may
// be offered; the token at most once, valid, and with tidings or tidings.v1 beside it, so that
// the server has one to select (it never selects the token's).
func ParseSubprotocols(values []string) (auth.Token, error) {
	var token string
	found, short, n := false, false, 0
	for _, v := range values {
		for p := range strings.SplitSeq(v, ",") {
			if n++; n > maxSubprotocols {
				return "", errBadSubprotocol
			}
			p = strings.TrimSpace(p)
			t, ok := strings.CutPrefix(p, BearerSubprotocol)
			switch {
			case ok && (found || !validToken(t)):
				return "", errBadSubprotocol
			case ok:
				token, found = t, true
			case strings.EqualFold(p, SubprotocolShort), strings.EqualFold(p, Subprotocol):
				short = true
			}
		}
	}
	if found && !short {
		return "", errBadSubprotocol
	}
	return auth.Token(token), nil
}

// credential is the session token a request presents, and whether it came as a bearer token.
type credential struct {
	token  auth.Token
	bearer bool
}

// credential reads the session token of r: Authorization: Bearer first (it takes precedence
// over the cookie), then on the stream's upgrade the tidings-bearer subprotocol (the two must
// agree when both are sent), then the cookie. A bearer token from an Origin that is present and
// not allowed is refused with 403, as a mutation from it is.
func (h *Handler) credential(r *http.Request, upgrade bool) (credential, error) {
	token, err := ParseAuthorization(r.Header.Values("Authorization"))
	if err != nil {
		return credential{}, err
	}
	if upgrade {
		offered, err := ParseSubprotocols(r.Header.Values("Sec-WebSocket-Protocol"))
		if err != nil {
			return credential{}, err
		}
		if token != "" && offered != "" && token != offered {
			return credential{}, errTwoTokens
		}
		if token == "" {
			token = offered
		}
	}
	if token == "" {
		return credential{token: h.token(r)}, nil
	}
	if !h.origins.allow(r) {
		return credential{}, errBadOrigin
	}
	return credential{token: token, bearer: true}, nil
}

// tokenFrame encodes the stream frame that hands a bearer client its successor token.
func tokenFrame(t auth.Token) []byte {
	return []byte(`{"type":"token","token":"` + string(t) + `"}`) // base64url: nothing to escape
}
