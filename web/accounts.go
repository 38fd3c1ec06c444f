package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"tidings/auth"
	"tidings/data"
)

// SignInBody is the body of register and login.
type SignInBody struct {
	Name, Password string
	// Bearer asks for a bearer session: its token in the answer, no session cookie.
	Bearer bool
}

// ParseSignIn reads the body of POST /api/auth/register and login: an object with string name
// and password, and an optional boolean bearer (null or absent: false); other fields are
// ignored.
func ParseSignIn(body []byte) (SignInBody, error) {
	var c struct {
		Name     *string `json:"name"`
		Password *string `json:"password"`
		Bearer   *bool   `json:"bearer"`
	}
	if json.Unmarshal(body, &c) != nil || c.Name == nil || c.Password == nil {
		return SignInBody{}, badRequest("invalid-body", `the body must be {"name":"…","password":"…","bearer"?:true|false}`)
	}
	return SignInBody{Name: *c.Name, Password: *c.Password, Bearer: c.Bearer != nil && *c.Bearer}, nil
}

// userPatch is the body of PATCH /api/users/:id.
type userPatch struct {
	Name *string        `json:"name"`
	Type *data.UserType `json:"type"`
}

// ParseUserPatch reads the body of PATCH /api/users/:id: an object with an optional string
// name and an optional string type, and nothing else.
func ParseUserPatch(body []byte) (auth.UserPatch, error) {
	var p userPatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	invalid := badRequest("invalid-body", `the body must be {"name"?:"…","type"?:"regular"|"crew"|"admin"}`)
	if err := dec.Decode(&p); err != nil || bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return auth.UserPatch{}, invalid
	}
	if _, err := dec.Token(); err != io.EOF {
		return auth.UserPatch{}, invalid
	}
	return auth.UserPatch{Name: p.Name, Type: p.Type}, nil
}

// readBody reads a request body within the 1 MiB limit.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, errTooLarge
	}
	if errors.Is(err, errBodyTimeout) {
		return nil, errBodyTimeout
	}
	if err != nil {
		return nil, badRequest("invalid-body", "the body could not be read")
	}
	return body, nil
}

// fail answers err: a refusal as it is, anything else logged and 500 (or 503 when it is the
// database).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if after, ok := auth.RetryAfter(err); ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(after.Seconds()))))
	}
	err = authError(err)
	var api *apiError
	if !errors.As(err, &api) {
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "requestId", requestID(r.Context()), "err", err)
		err = errUnavailable
	}
	writeError(w, err)
}

func (h *Handler) register(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	h.signIn(w, r, http.StatusCreated, h.deps.Auth.Register)
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	h.signIn(w, r, http.StatusOK, h.deps.Auth.Login)
}

// signInAnswer is the answer of register and login: the session, and for a bearer session
// its token.
type signInAnswer struct {
	*ApiSession
	Token string `json:"token,omitempty"`
}

// signIn reads credentials, opens a session with them, and answers status with the session and
// the device cookie, and the session's token: in its cookie, or for a bearer session in the
// answer. (The Origin was checked before: a mutation from an Origin not allowed is a 403, so
// bearer sessions go only to allowed origins and to clients that send none.)
func (h *Handler) signIn(w http.ResponseWriter, r *http.Request, status int, open func(context.Context, auth.Credentials) (auth.SignIn, error)) {
	body, err := readBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	in, err := ParseSignIn(body)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	opened, err := open(r.Context(), auth.Credentials{Name: in.Name, Password: in.Password, Addr: h.clientAddr(r), Device: h.deviceToken(r)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	answer := signInAnswer{ApiSession: newApiSession(opened.Session)}
	if in.Bearer {
		answer.Token = string(opened.Token)
	} else {
		h.setCookie(w, opened.Token, opened.Session.ExpiresAt)
	}
	h.setDeviceCookie(w, opened.Device, opened.DeviceExpires)
	writeJSON(w, status, answer)
}

// logout ends the session the request presents: its bearer token, or its cookie.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	cred, err := h.credential(r, false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.deps.Auth.Logout(r.Context(), cred.token); err != nil {
		h.fail(w, r, err)
		return
	}
	h.handOver(w, cred, auth.Resolution{ClearCookie: true})
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) session(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	res, err := h.resolve(w, r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newSessionBody(res))
}

// account resolves the request's session and answers 401 when there is none.
func (h *Handler) account(w http.ResponseWriter, r *http.Request) (data.User, bool) {
	res, err := h.resolve(w, r)
	if err != nil {
		h.fail(w, r, err)
		return data.User{}, false
	}
	if res.Session == nil {
		writeError(w, errUnauthenticated)
		return data.User{}, false
	}
	return res.Session.Account, true
}

// userTarget reads the signed-in account and the :id of a users route, answering 401 without
// a session and 404 for an id that is not a positive decimal number.
func (h *Handler) userTarget(w http.ResponseWriter, r *http.Request, ps httprouter.Params) (data.User, int64, bool) {
	account, ok := h.account(w, r)
	if !ok {
		return account, 0, false
	}
	raw := ps.ByName("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != raw {
		writeError(w, errNotFound)
		return account, 0, false
	}
	return account, id, true
}

func (h *Handler) listUsers(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if _, ok := h.account(w, r); !ok {
		return
	}
	users, err := h.deps.Auth.Users(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiUsers(users))
}

func (h *Handler) getUser(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	_, id, ok := h.userTarget(w, r, ps)
	if !ok {
		return
	}
	u, err := h.deps.Auth.User(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, auth.NewApiUser(u))
}

func (h *Handler) patchUser(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	account, id, ok := h.userTarget(w, r, ps)
	if !ok {
		return
	}
	body, err := readBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	patch, err := ParseUserPatch(body)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// Before the change touches the database: each one is an event for every signed-in stream.
	if wait, ok := h.patches.take(account.ID, patchLimitAddr(h.clientAddr(r)), time.Now()); !ok {
		w.Header().Set("Retry-After", retryAfter(wait))
		writeError(w, errTooManyChanges)
		return
	}
	u, err := h.deps.Auth.UpdateUser(r.Context(), account, id, patch)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, auth.NewApiUser(u))
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	account, id, ok := h.userTarget(w, r, ps)
	if !ok {
		return
	}
	if err := h.deps.Auth.DeleteUser(r.Context(), account, id); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
