package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Bearer sessions (docs/protocol.md, "Bearer sessions"): for a program that keeps the session's
// token itself instead of a cookie jar, such as a desktop wrapper or a backend acting for a user.

// TokenHeader is the response header that hands a bearer client its successor token; empty, it
// tells the client to forget its token.
const TokenHeader = "Tidings-Session-Token"

// SignIn is a bearer session that Register or Login opened.
type SignIn struct {
	// Token is the session's secret: whoever holds it acts as the user until it is rotated.
	// Keep it where the program keeps secrets, and give it to Config.Token.
	Token string
	// Session is the ApiSession object (docs/protocol.md section 4).
	Session json.RawMessage
}

// APIError is the server's refusal of an HTTP call: its status and the error body's code and
// message (docs/protocol.md), and for 429 and 503 the Retry-After it gave.
type APIError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *APIError) Error() string { return "tidings: " + e.statusText() }

// statusText is the status with the code and message, or with the status's name when the
// answer held no error body (a proxy's, say).
func (e *APIError) statusText() string {
	if e.Code == "" && e.Message == "" {
		return fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

// Register creates a user on the server at baseURL (http(s)://host:port) and opens a bearer
// session for it (POST /api/auth/register with "bearer": true). hc makes the request (nil:
// http.DefaultClient); its cookie jar, if any, receives only the device cookie. A refusal is an
// *APIError: 400 invalid, 409 name-taken, 429 or 503 with RetryAfter, 403 from an Origin that
// is not allowed.
func Register(ctx context.Context, hc *http.Client, baseURL, name, password string) (SignIn, error) {
	return signIn(ctx, hc, baseURL, "/api/auth/register", name, password)
}

// Login opens a bearer session for an existing user (POST /api/auth/login with "bearer": true),
// as Register does. A wrong name or password is an *APIError with status 401.
func Login(ctx context.Context, hc *http.Client, baseURL, name, password string) (SignIn, error) {
	return signIn(ctx, hc, baseURL, "/api/auth/login", name, password)
}

func signIn(ctx context.Context, hc *http.Client, baseURL, path, name, password string) (SignIn, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	body, _ := json.Marshal(map[string]any{"name": name, "password": password, "bearer": true})
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(baseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return SignIn{}, fmt.Errorf("tidings: sign in: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return SignIn{}, fmt.Errorf("tidings: sign in: %w", err)
	}
	b, err := readAnswer(resp)
	if err != nil {
		return SignIn{}, err
	}
	var in struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &in); err != nil || in.Token == "" {
		return SignIn{}, errors.New("tidings: sign in: the answer holds no bearer token")
	}
	// The session is the answer without its token.
	var session map[string]json.RawMessage
	json.Unmarshal(b, &session)
	delete(session, "token")
	s, _ := json.Marshal(session)
	return SignIn{Token: in.Token, Session: s}, nil
}

// readAnswer reads a response's body (at most 1 MiB) and closes it; a status of 400 or more is
// an *APIError.
func readAnswer(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("tidings: read the answer: %w", err)
	}
	if resp.StatusCode < 400 {
		return b, nil
	}
	return nil, apiError(resp, b)
}

// apiError is the refusal that resp, with body, holds: its status, the code and message of
// its error body ({"error":{"code","message"}}) if it has one, and its Retry-After.
func apiError(resp *http.Response, body []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header, time.Now())}
	var b struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &b) == nil {
		e.Code, e.Message = b.Error.Code, b.Error.Message
	}
	return e
}

// Token returns the bearer session's token as the client holds it now: Config.Token, or the
// latest successor; "" once the server said it names no session.
func (c *Client) Token() string { return *c.token.Load() }

// bearer reports whether the client holds a bearer session (it began with Config.Token); it
// sends its token, never the cookie jar's session, from then on.
func (c *Client) bearer() bool { return c.cfg.Token != "" }

// swapToken replaces the token sent as old with next, and reports it to OnToken, if the client
// still holds old: a successor or a clear meant for an older token is stale. Changes and their
// reports are made one at a time, in order.
func (c *Client) swapToken(old, next string) {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	if old == next || *c.token.Load() != old {
		return
	}
	c.token.Store(&next)
	if c.cfg.OnToken != nil {
		c.cfg.OnToken(next)
	}
}

// Do sends an API request of the client's server as the client's session: with a bearer
// session, its token as Authorization: Bearer, and the successor or the clear that the
// response hands over (Tidings-Session-Token) is kept and reported to OnToken; otherwise as
// Config.HTTPClient sends it (its cookie jar). The caller closes the response's body.
func (c *Client) Do(req *http.Request) (*http.Response, error) {
	sent := ""
	if c.bearer() {
		sent = c.Token()
		req.Header.Del("Authorization")
		if sent != "" {
			req.Header.Set("Authorization", "Bearer "+sent)
		}
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	if v, ok := resp.Header[TokenHeader]; ok && c.bearer() && sent != "" && len(v) == 1 {
		c.swapToken(sent, v[0])
	}
	return resp, nil
}

// api makes a call of the client's server and returns its answer's body.
func (c *Client) api(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.cfg.URL, "/")+path, r)
	if err != nil {
		return nil, fmt.Errorf("tidings: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tidings: %s %s: %w", method, path, err)
	}
	return readAnswer(resp)
}

// Session asks the server for the client's session (GET /api/session), which rotates a due
// session (the successor is kept, and reported to OnToken) and clears a dead one. A notice in
// the answer (session-taken) is reported to OnNotice too.
func (c *Client) Session(ctx context.Context) (Session, error) {
	b, err := c.api(ctx, "GET", "/api/session", nil)
	if err != nil {
		return Session{}, err
	}
	var a struct {
		Session json.RawMessage `json:"session"`
		Notice  *string         `json:"notice"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return Session{}, fmt.Errorf("tidings: GET /api/session: %w", err)
	}
	s := Session{Session: a.Session}
	if a.Notice != nil {
		s.Notice = *a.Notice
		c.notice(s.Notice)
	}
	return s, nil
}

// Logout ends the client's session (POST /api/auth/logout): its streams close with 4003
// logout, on every node. A bearer client forgets its token (OnToken is called with "").
func (c *Client) Logout(ctx context.Context) error {
	sent := c.Token()
	if _, err := c.api(ctx, "POST", "/api/auth/logout", nil); err != nil {
		return err
	}
	if c.bearer() {
		c.swapToken(sent, "")
	}
	return nil
}

// notice reports a notice of the server to OnNotice.
func (c *Client) notice(n string) {
	if n != "" && c.cfg.OnNotice != nil {
		c.cfg.OnNotice(n)
	}
}
