package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"tidings/data"
	"tidings/realtime"
)

// maxMessageRunes is the longest message text, in code points, after trimming.
const maxMessageRunes = 4000

// clientTypes are the event types that clients may publish over a socket, each with the rule
// that checks what the client sent and returns how to make what is stored. The rule reads
// nothing from the database, so that a refusal costs none; the server fills in who sent it and
// the audience, a client cannot.
var clientTypes = map[string]func(d json.RawMessage) (clientEvent, error){
	"message": messageData,
}

// clientEvent makes the stored data and audience of a checked publish, for the sender as it is
// at that moment.
type clientEvent func(sender data.User) (json.RawMessage, data.Audience)

// messageData checks a message: data {"text":…} whose text, trimmed of Unicode white space, is
// 1 to 4,000 code points without U+0000 (PostgreSQL cannot store it). The stored data names
// the sender.
func messageData(d json.RawMessage) (clientEvent, error) {
	var in struct {
		Text *string `json:"text"`
	}
	dec := json.NewDecoder(bytes.NewReader(d))
	if len(d) == 0 || dec.Decode(&in) != nil || in.Text == nil {
		return nil, &realtime.FrameError{Code: realtime.CodeInvalid, Message: `a message needs data {"text":"…"}`}
	}
	text := strings.TrimFunc(*in.Text, unicode.IsSpace)
	if n := utf8.RuneCountInString(text); n < 1 || n > maxMessageRunes {
		return nil, &realtime.FrameError{Code: realtime.CodeInvalid, Message: "a message text is 1 to 4000 characters"}
	}
	if strings.IndexByte(text, 0) >= 0 {
		return nil, &realtime.FrameError{Code: realtime.CodeInvalid, Message: "a message text may not hold U+0000"}
	}
	return func(sender data.User) (json.RawMessage, data.Audience) {
		b, _ := json.Marshal(struct {
			UserID   int64  `json:"userId"`
			UserName string `json:"userName"`
			Text     string `json:"text"`
		}{sender.ID, sender.Name, text})
		return b, data.Audience{Kind: data.AudienceSignedIn}
	}, nil
}

// publisherFor returns the publish function of a signed-in account's streams. What the client
// sent is checked before anything is read from the database.
func (h *Handler) publisherFor(account data.User) realtime.PublishFunc {
	return func(ctx context.Context, ev realtime.ClientEvent) (int64, error) {
		rule, ok := clientTypes[ev.Type]
		if !ok {
			return 0, &realtime.FrameError{Code: realtime.CodeForbidden, Message: "clients may not publish events of type " + ev.Type}
		}
		stored, err := rule(ev.Data)
		if err != nil {
			return 0, err
		}
		// The account as it is now: a rename since the stream opened shows in the message.
		current, err := h.deps.Auth.User(ctx, account.ID)
		if err != nil {
			return 0, err
		}
		d, aud := stored(current)
		evs := []data.NewEvent{{Type: ev.Type, Data: d, Audience: aud}}
		var ids []int64
		if ev.Key == "" {
			ids, err = h.deps.Publisher.Publish(ctx, evs)
		} else {
			// The digest is of what the client sent: a retry after a rename is the same request.
			k := data.IdempotencyKey{Scope: accountScope(account.ID), Key: ev.Key, Request: requestDigest(struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}{ev.Type, ev.Data})}
			ids, _, err = h.deps.Publisher.PublishKeyed(ctx, k, evs)
		}
		if err != nil {
			return 0, socketPublishError(err)
		}
		return ids[0], nil
	}
}

// accountScope is the scope of the idempotency keys of an account's socket publishes.
func accountScope(id int64) string { return "user:" + strconv.FormatInt(id, 10) }

// socketPublishError maps the errors of a socket publish to error frames, in one table;
// anything else is sent as internal (nothing stored).
func socketPublishError(err error) error {
	for _, m := range []struct {
		err  error
		code string
	}{
		{data.ErrOutcomeUnknown, realtime.CodeOutcomeUnknown},
		{data.ErrKeyReused, realtime.CodeKeyReused},
		{data.ErrInvalidEvent, realtime.CodeInvalid},
		{data.ErrTooLarge, realtime.CodeInvalid},
	} {
		if errors.Is(err, m.err) {
			message := err.Error()
			switch m.code {
			case realtime.CodeOutcomeUnknown:
				message = "the event was sent to the database but its answer was lost: it may or may not be stored; publish again with the same key"
			case realtime.CodeKeyReused:
				message = "this key was used for another event"
			}
			return &realtime.FrameError{Code: m.code, Message: message}
		}
	}
	return err
}
