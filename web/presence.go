package web

import (
	"context"
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// presence serves GET /api/presence (docs/protocol.md section 8): who is online, for a signed-in
// session.
func (h *Handler) presence(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if _, ok := h.account(w, r); !ok {
		return
	}
	online, err := h.online(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Online []int64 `json:"online"`
	}{online})
}

// online reads who is online on any node from the database, never from this node's view,
// which may lag it: an empty list when the node keeps no presence.
func (h *Handler) online(ctx context.Context) ([]int64, error) {
	if h.deps.Presence == nil {
		return []int64{}, nil
	}
	online, err := h.deps.Presence.Online(ctx)
	if online == nil {
		online = []int64{}
	}
	return online, err
}
