package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"tidings/auth"
	"tidings/data"
)

// apiError is a refusal as the API sends it.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// The refusals of the API, in one table.
var (
	errNotFound         = &apiError{http.StatusNotFound, "not-found", "no such resource"}
	errMethod           = &apiError{http.StatusMethodNotAllowed, "method-not-allowed", "method not allowed here"}
	errBadOrigin        = &apiError{http.StatusForbidden, "forbidden-origin", "the Origin of this request is not allowed"}
	errUnsupportedMedia = &apiError{http.StatusUnsupportedMediaType, "unsupported-media-type", "the body must be application/json"}
	errTooLarge         = &apiError{http.StatusRequestEntityTooLarge, "too-large", "the body is larger than 1 MiB"}
	errBodyTimeout      = &apiError{http.StatusRequestTimeout, "request-timeout", "the body did not arrive in time"}
	errMisdirected      = &apiError{http.StatusMisdirectedRequest, "misdirected-request", "this node does not answer for that Host"}
	errNoAPIKey         = &apiError{http.StatusNotFound, "not-found", "backend publishing is disabled: no API key is configured"}
	errBadAPIKey        = &apiError{http.StatusUnauthorized, "unauthorized", "a valid bearer API key is required"}
	errUnavailable      = &apiError{http.StatusServiceUnavailable, "unavailable", "the database is unavailable; nothing was stored, try again"}
	errInternal         = &apiError{http.StatusInternalServerError, "internal", "internal error"}
	errUnauthenticated  = &apiError{http.StatusUnauthorized, "unauthenticated", "sign in first"}
	errBadLogin         = &apiError{http.StatusUnauthorized, "bad-login", "wrong name or password"}
	errRateLimited      = &apiError{http.StatusTooManyRequests, "rate-limited", "too many failed logins; try again later"}
	errRegisterLimited  = &apiError{http.StatusTooManyRequests, "rate-limited", "too many registrations from this address; try again later"}
	errHashingBusy      = &apiError{http.StatusServiceUnavailable, "busy", "the server is checking too many passwords at once; try again shortly"}
	errTooManyChanges   = &apiError{http.StatusTooManyRequests, "rate-limited", "too many changes to users; try again after Retry-After seconds"}
	errForbidden        = &apiError{http.StatusForbidden, "forbidden", "your account may not do this"}
	errNameTaken        = &apiError{http.StatusConflict, "name-taken", "that name is taken"}
	errOutcomeUnknown   = &apiError{http.StatusServiceUnavailable, "outcome-unknown", "the events were sent to the database but its answer was lost: they may or may not be stored; retry with the same Idempotency-Key"}
	errKeyReused        = &apiError{http.StatusUnprocessableEntity, "idempotency-key-reused", "this Idempotency-Key was used for another request"}
	errBadKey           = badRequest("invalid-idempotency-key", "Idempotency-Key must be given once, 1 to 255 characters of ASCII letters, digits and -._~:+/=, bare or in double quotes")
	errEventsTooLarge   = &apiError{http.StatusRequestEntityTooLarge, "too-large", "the events are more than the database takes in one transaction"}
)

// publishError maps the errors of a publish to the API's refusals, in one table. Anything else
// is a database failure after which nothing was stored.
func publishError(err error) *apiError {
	for _, m := range []struct {
		err error
		api *apiError
	}{
		{data.ErrOutcomeUnknown, errOutcomeUnknown},
		{data.ErrKeyReused, errKeyReused},
		{data.ErrInvalidKey, errBadKey},
		{data.ErrTooLarge, errEventsTooLarge},
	} {
		if errors.Is(err, m.err) {
			return m.api
		}
	}
	if data.IsInvalidInput(err) || errors.Is(err, data.ErrInvalidEvent) {
		return badRequest("invalid-event", err.Error())
	}
	return errUnavailable
}

// authError maps the errors of package auth to the API's refusals, in one table.
func authError(err error) error {
	for _, m := range []struct {
		err error
		api *apiError
	}{
		{auth.ErrBadLogin, errBadLogin},
		{auth.ErrRateLimited, errRateLimited},
		{auth.ErrRegisterLimited, errRegisterLimited},
		{auth.ErrBusy, errHashingBusy},
		{auth.ErrForbidden, errForbidden},
		{auth.ErrNameTaken, errNameTaken},
		{auth.ErrNotFound, errNotFound},
	} {
		if errors.Is(err, m.err) {
			return m.api
		}
	}
	if errors.Is(err, auth.ErrInvalid) {
		return badRequest("invalid", strings.TrimPrefix(err.Error(), auth.ErrInvalid.Error()+": "))
	}
	return err
}

// badRequest is a 400 with a message that says what is wrong.
func badRequest(code, message string) *apiError {
	return &apiError{http.StatusBadRequest, code, message}
}

// writeJSON sends v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError sends err as the API's error body; anything that is not an *apiError is a 500.
func writeError(w http.ResponseWriter, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = errInternal
	}
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	writeJSON(w, e.status, struct {
		Error body `json:"error"`
	}{body{e.code, e.message}})
}
