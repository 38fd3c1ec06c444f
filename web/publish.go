package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

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
// Each needs a non-empty string type; data is any JSON (missing: null); audience is one of the
// protocol's shapes (missing or null: everyone). Unknown fields are refused.
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
		evs = append(evs, data.NewEvent{Type: *b.Type, Data: b.Data, Audience: aud})
	}
	return evs, nil
}

func eventAt(i, n int) string {
	if n == 1 {
		return "the event "
	}
	return "event " + strconv.Itoa(i) + " "
}

// publish stores events from a backend (PROTOCOL.md section 3), all in one transaction.
func (h *Handler) publish(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if h.cfg.APIKey == "" {
		writeError(w, errNoAPIKey)
		return
	}
	if !h.bearerOK(r) {
		writeError(w, errBadAPIKey)
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
	ids, err := h.deps.Publisher.Publish(r.Context(), evs)
	if err != nil {
		if data.IsInvalidInput(err) || errors.Is(err, data.ErrInvalidEvent) {
			writeError(w, badRequest("invalid-event", err.Error()))
			return
		}
		h.log.Error("publish", "requestId", requestID(r.Context()), "err", err)
		writeError(w, errUnavailable)
		return
	}
	if ids == nil {
		ids = []int64{}
	}
	writeJSON(w, http.StatusOK, map[string][]int64{"ids": ids})
}
