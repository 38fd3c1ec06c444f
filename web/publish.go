package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"

	"tidings/data"
)

// publishBody is one event of POST /api/publish.
type publishBody struct {
	Type     *string         `json:"type"`
	Data     json.RawMessage `json:"data"`
	Audience json.RawMessage `json:"audience"`
}

// ParsePublishBody reads the body of POST /api/publish: one event object or an array of them.
// Each needs a non-empty string type; data is any JSON (missing: null) that the store takes
// (data.NewEvent.Validate: no U+0000, for one); audience is one of the protocol's shapes
// (missing or null: everyone). Unknown fields are refused.
func ParsePublishBody(body []byte) ([]data.NewEvent, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	var items []json.RawMessage
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(body, &items); err != nil {
			return nil, badRequest("invalid-body", "the body must be an event object or an array of them")
		}
	} else {
		items = []json.RawMessage{body}
	}
	evs := make([]data.NewEvent, 0, len(items))
	for i, item := range items {
		var b publishBody
		dec := json.NewDecoder(bytes.NewReader(item))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil {
			return nil, badRequest("invalid-body", eventAt(i, len(items))+"must be an object with type, data and audience")
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, badRequest("invalid-body", eventAt(i, len(items))+"has trailing data")
		}
		if b.Type == nil || *b.Type == "" || len(*b.Type) > data.MaxTypeLen {
			return nil, badRequest("invalid-event", eventAt(i, len(items))+"needs a type of 1 to 200 bytes")
		}
		var aud data.Audience
		if len(b.Audience) > 0 {
			if err := json.Unmarshal(b.Audience, &aud); err != nil {
				return nil, badRequest("invalid-audience", eventAt(i, len(items))+err.Error())
			}
		}
		e := data.NewEvent{Type: *b.Type, Data: b.Data, Audience: aud}
		// What the store refuses is refused here, before any database work.
		if err := e.Validate(); err != nil {
			return nil, badRequest("invalid-event", eventAt(i, len(items))+"is refused: "+strings.TrimPrefix(err.Error(), data.ErrInvalidEvent.Error()+": "))
		}
		evs = append(evs, e)
	}
	return evs, nil
}

func eventAt(i, n int) string {
	if n == 1 {
		return "the event "
	}
	return "event " + strconv.Itoa(i) + " "
}

// ParseIdempotencyKey reads the Idempotency-Key header of POST /api/publish from its values:
// none, or one key (data.ValidKey), bare or as a quoted string ("k" is k). Given twice, empty,
// or with another character, it is refused with a 400.
func ParseIdempotencyKey(values []string) (string, error) {
	if len(values) == 0 {
		return "", nil
	}
	if len(values) > 1 {
		return "", errBadKey
	}
	key := strings.Trim(values[0], " \t")
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1]
	}
	if !data.ValidKey(key) {
		return "", errBadKey
	}
	return key, nil
}

// apiKeyScope is the scope of the idempotency keys of POST /api/publish: the API key's. tidings
// has one API key, so every backend shares it.
const apiKeyScope = "api"

// requestDigest is what an idempotency key is stored with: a digest of v's JSON, in which
// data is compacted and audiences are canonical, so that the same request sent again with other
// white space is the same request.
func requestDigest(v any) [32]byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("web: digest of a request that does not encode: " + err.Error()) // parsed JSON always does
	}
	return sha256.Sum256(b)
}

// publish stores events from a backend (docs/protocol.md section 3), all in one transaction. With
// an Idempotency-Key it is safe to retry: a request with the key of one stored within the key
// window returns the first request's ids, marked with Idempotent-Replayed: true.
func (h *Handler) publish(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if h.cfg.APIKey == "" {
		writeError(w, errNoAPIKey)
		return
	}
	if !h.bearerOK(r) {
		writeError(w, errBadAPIKey)
		return
	}
	key, err := ParseIdempotencyKey(r.Header.Values("Idempotency-Key"))
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, errTooLarge)
			return
		}
		writeError(w, badRequest("invalid-body", "the body could not be read"))
		return
	}
	evs, err := ParsePublishBody(body)
	if err != nil {
		writeError(w, err)
		return
	}
	var ids []int64
	var replayed bool
	if key == "" {
		ids, err = h.deps.Publisher.Publish(r.Context(), evs)
	} else {
		k := data.IdempotencyKey{Scope: apiKeyScope, Key: key, Request: requestDigest(evs)}
		ids, replayed, err = h.deps.Publisher.PublishKeyed(r.Context(), k, evs)
	}
	if err != nil {
		e := publishError(err)
		switch e {
		case errUnavailable:
			h.log.Error("publish", "requestId", requestID(r.Context()), "err", err)
		case errOutcomeUnknown:
			h.log.Warn("publish: outcome unknown", "requestId", requestID(r.Context()), "keyed", key != "", "err", err)
		}
		writeError(w, e)
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if ids == nil {
		ids = []int64{}
	}
	writeJSON(w, http.StatusOK, map[string][]int64{"ids": ids})
}
