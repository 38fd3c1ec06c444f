package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"tidings/data"
)

// The checks of TestSoak, made once every stream has closed, against a copy of the log that
// holds every event ever committed (retention deletes from the table, not from the copy).

// mirrorEvent is one committed event as the copy keeps it.
type mirrorEvent struct {
	typ        string
	data       []byte // compact JSON
	aud        data.Audience
	time       time.Time
	tag        string // the soak's writers tag their events; messages carry a text instead
	text       string
	userID     int64 // a message's author
	rolledBack bool  // published in a transaction meant to roll back: must never be stored
}

// mirror is the copy of the log.
type mirror struct {
	events *data.Events

	mu  sync.Mutex
	evs []mirrorEvent // guarded by mu: evs[i] is the event i+1; the log has no holes
}

// catchUp copies every event committed since the last call and returns the copy's head.
func (m *mirror) catchUp(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	const page = 1000
	for {
		evs, err := m.events.After(ctx, int64(len(m.evs)), page)
		if err != nil {
			return 0, fmt.Errorf("copy the log: %w", err)
		}
		for _, e := range evs {
			if e.ID != int64(len(m.evs))+1 {
				return 0, fmt.Errorf("copy the log: after %d came %d: pruned before the copy read them", len(m.evs), e.ID)
			}
			me := mirrorEvent{typ: e.Type, aud: e.Audience, time: e.Time}
			var buf bytes.Buffer
			if err := json.Compact(&buf, e.Data); err != nil {
				return 0, fmt.Errorf("copy the log: event %d: %w", e.ID, err)
			}
			me.data = buf.Bytes()
			var d struct {
				Tag        string `json:"tag"`
				Text       string `json:"text"`
				UserID     int64  `json:"userId"`
				RolledBack bool   `json:"rolledBack"`
			}
			if json.Unmarshal(e.Data, &d) == nil {
				me.tag, me.text, me.userID, me.rolledBack = d.Tag, d.Text, d.UserID, d.RolledBack
			}
			m.evs = append(m.evs, me)
		}
		if len(evs) < page {
			return int64(len(m.evs)), nil
		}
	}
}

// get returns event id, which the copy must hold.
func (m *mirror) get(id int64) mirrorEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.evs[id-1]
}

// lookup returns event id and whether the copy holds it.
func (m *mirror) lookup(id int64) (mirrorEvent, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id < 1 || id > int64(len(m.evs)) {
		return mirrorEvent{}, false
	}
	return m.evs[id-1], true
}

func (m *mirror) head() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.evs))
}

// visible returns the ids in (after, through] that v may see, in order.
func (m *mirror) visible(v soakViewer, after, through int64) []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []int64
	for id := max(after+1, 1); id <= min(through, int64(len(m.evs))); id++ {
		if v.sees(m.evs[id-1]) {
			ids = append(ids, id)
		}
	}
	return ids
}

// lastVisible returns the largest id in (after, through] that v may see, or after when none.
func (m *mirror) lastVisible(v soakViewer, after, through int64) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := min(through, int64(len(m.evs))); id > after; id-- {
		if v.sees(m.evs[id-1]) {
			return id
		}
	}
	return after
}

// typeRank orders the account types (docs/protocol.md section 3: regular < crew < admin).
var typeRank = map[data.UserType]int{data.UserRegular: 1, data.UserCrew: 2, data.UserAdmin: 3}

// sees is the audience rule of docs/protocol.md section 3, written here again so that the server's
// own is not what judges it; control events reach no client.
func (v soakViewer) sees(e mirrorEvent) bool {
	if strings.HasPrefix(e.typ, data.ControlTypePrefix) {
		return false
	}
	switch e.aud.Kind {
	case "", data.AudienceEveryone:
		return true
	case data.AudienceSignedIn:
		return v.id != 0
	case data.AudienceMinType:
		return v.id != 0 && typeRank[v.typ] >= typeRank[e.aud.Type]
	case data.AudienceUser:
		return v.id != 0 && v.id == e.aud.UserID
	}
	return false
}

// soakReport counts what the checks saw and what broke.
type soakReport struct {
	counts     map[string]int
	violations map[string]int
	examples   map[string][]string
}

func (r *soakReport) count(what string, n int) { r.counts[what] += n }

// fail records a broken promise; the first few of each kind are kept as examples.
func (r *soakReport) fail(kind, format string, args ...any) {
	r.violations[kind]++
	if len(r.examples[kind]) < 3 {
		r.examples[kind] = append(r.examples[kind], fmt.Sprintf(format, args...))
	}
}

// verify checks the log's copy, the acknowledged publishes and every stream, and reports.
func (s *soak) verify(ctx context.Context) {
	t := s.t
	rep := &soakReport{counts: map[string]int{}, violations: map[string]int{}, examples: map[string][]string{}}
	head := s.mirror.head()
	for id := int64(1); id <= head; id++ {
		if s.mirror.get(id).rolledBack {
			rep.fail("rolled-back event stored", "event %d", id)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.acked {
		if e, ok := s.mirror.lookup(a.id); !ok || e.tag != a.tag {
			rep.fail("acknowledged publish not stored under its id", "id %d: want tag %q, the log has %q", a.id, a.tag, e.tag)
		}
	}
	closes := map[int]int{}
	for _, r := range s.streams {
		s.checkStream(r, rep)
		closes[r.closeCode]++
	}
	floor, err := s.floor(ctx)
	if err != nil {
		t.Error(err)
	}

	t.Logf("soak: %v, seed %d; final watermark %d, pruned floor %d", s.duration, s.seed, head, floor)
	t.Logf("writers: %d events over HTTP, %d by SQL committed, %d by SQL rolled back, %d socket publishes sent",
		s.httpEvents.Load(), s.sqlEvents.Load(), s.sqlRolledBack.Load(), s.published.Load())
	t.Logf("faults: %d holds of node %s's hub, %d listener kills, %d prunes deleting %d events",
		s.holds.Load(), soakNodes[len(soakNodes)-1], s.kills.Load(), s.prunes.Load(), s.pruned.Load())
	t.Logf("client close codes (-1: none): %v", closes)
	for _, k := range slices.Sorted(maps.Keys(rep.counts)) {
		t.Logf("checked: %s: %d", k, rep.counts[k])
	}
	if len(rep.violations) == 0 {
		t.Logf("no violation")
	}
	for _, k := range slices.Sorted(maps.Keys(rep.violations)) {
		t.Errorf("VIOLATION %s: %d times; e.g.\n\t%s", k, rep.violations[k], strings.Join(rep.examples[k], "\n\t"))
	}
}

// checkStream checks one stream's frames against docs/protocol.md section 2 and the log.
func (s *soak) checkStream(r *streamRec, rep *soakReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := fmt.Sprintf("%s on %s (lastEventId %s, w0 %d, floor %d)", r.client, r.node, describeAfter(r), r.w0, r.floorBefore)
	rep.count("streams opened", 1)
	rep.count("streams opened with lastEventId "+r.start, 1)
	if len(r.frames) == 0 {
		rep.count("streams closed before their first frame", 1)
		return
	}
	rep.count("frames", len(r.frames))
	if r.frames[0].Type != "session" {
		rep.fail("first frame is not session", "%s: first frame %q", name, r.frames[0].Type)
	}
	v := soakViewer{}
	if f := r.frames[0]; f.Session != nil && f.Session.Account != nil {
		v = soakViewer{id: f.Session.Account.ID, typ: f.Session.Account.Type}
	}
	if v != r.viewer {
		rep.fail("session frame is not the client's", "%s: session of %+v, want %+v", name, v, r.viewer)
	}

	start, known := int64(0), r.after != nil
	if known {
		start = *r.after
	}
	var reset, ready *soakFrame
	var got []int64
	last, beforeReady := int64(-1), int64(-1)
	for i := 1; i < len(r.frames); i++ {
		f := &r.frames[i]
		switch f.Type {
		case "session":
			rep.fail("a second session frame", "%s: frame %d", name, i)
		case "reset":
			rep.count("resets", 1)
			if reset != nil || ready != nil || len(got) > 0 {
				rep.fail("reset after the replay began", "%s: reset %d at frame %d", name, f.LastEventID, i)
				continue
			}
			reset = f
			s.checkReset(r, f, name, rep)
			start, known = f.LastEventID, true
		case "ready":
			rep.count("readies", 1)
			if ready != nil {
				rep.fail("a second ready", "%s: ready %d after ready %d", name, f.LastEventID, ready.LastEventID)
				continue
			}
			ready = f
			if f.LastEventID < r.w0 {
				rep.fail("ready before the watermark read at open", "%s: ready %d < w0 %d", name, f.LastEventID, r.w0)
			}
			if f.w1 >= 0 && f.LastEventID > f.w1 {
				rep.fail("ready above the watermark read after it", "%s: ready %d > %d", name, f.LastEventID, f.w1)
			}
			if reset != nil && f.LastEventID != reset.LastEventID {
				rep.fail("ready after reset with another id", "%s: reset %d, ready %d", name, reset.LastEventID, f.LastEventID)
			}
			if beforeReady > f.LastEventID {
				rep.fail("event above the ready id arrived before ready", "%s: event %d before ready %d", name, beforeReady, f.LastEventID)
			}
			if !known {
				start, known = f.LastEventID, true
			}
		case "event":
			rep.count("events delivered", 1)
			if f.ID <= last {
				rep.fail("event ids not strictly increasing", "%s: event %d after %d", name, f.ID, last)
			}
			switch {
			case ready == nil && r.after == nil:
				rep.fail("event before ready on a stream started live", "%s: event %d", name, f.ID)
			case ready == nil:
				beforeReady = max(beforeReady, f.ID)
			case f.ID <= ready.LastEventID:
				rep.fail("event at or below the ready id after ready", "%s: event %d after ready %d", name, f.ID, ready.LastEventID)
			}
			s.checkContent(f, v, name, rep)
			last = max(last, f.ID)
			got = append(got, f.ID)
		case "ack":
			s.checkAck(r, f, v, name, rep)
		case "error":
			if f.Code != "rate-limited" {
				rep.fail("publish refused", "%s: error %q", name, f.Code)
			}
			rep.count("publishes refused as rate-limited", 1)
		}
	}

	if r.after != nil && reset == nil && (ready != nil || len(got) > 0) {
		if *r.after+1 <= r.floorBefore {
			rep.fail("replay instead of reset though the next event was pruned before open",
				"%s: next event %d was pruned (floor %d); got %d events from %v, ready %v", name, *r.after+1, r.floorBefore, len(got), firstOf(got), readyID(ready))
		}
		if ready != nil && ready.w1 >= 0 && *r.after > ready.w1 {
			rep.fail("no reset though lastEventId was above the watermark", "%s: ready %d, watermark after it %d", name, ready.LastEventID, ready.w1)
		}
	}
	if r.final && ready == nil {
		rep.fail("final stream got no ready", "%s: %d frames, close %d", name, len(r.frames), r.closeCode)
	}
	if !known {
		return // closed before ready on a live start: nothing to compare
	}
	through := last
	if ready != nil {
		through = max(through, ready.LastEventID)
	}
	if r.final {
		through = max(through, s.wEnd)
	}
	want := s.mirror.visible(v, start, through)
	rep.count("streams compared with the log", 1)
	rep.count("visible events expected and compared", len(want))
	if missing, extra := diffIDs(want, got); len(missing) > 0 || len(extra) > 0 {
		rep.fail("stream did not get exactly the visible events of its range",
			"%s: range (%d, %d], reset %v, ready %v: %d missing %v, %d extra %v", name, start, through,
			readyID(reset), readyID(ready), len(missing), firstOf(missing), len(extra), firstOf(extra))
		rep.count("visible events missed", len(missing))
		rep.count("events delivered out of their range or twice", len(extra))
	}
}

// checkReset checks that a reset had a cause and carried a watermark the database had.
func (s *soak) checkReset(r *streamRec, f *soakFrame, name string, rep *soakReport) {
	if f.LastEventID < r.w0 {
		rep.fail("reset below the watermark read at open", "%s: reset %d < w0 %d", name, f.LastEventID, r.w0)
	}
	if f.w1 >= 0 && f.LastEventID > f.w1 {
		rep.fail("reset above the watermark read after it", "%s: reset %d > %d", name, f.LastEventID, f.w1)
	}
	switch {
	case r.after == nil:
		rep.fail("reset on a live start", "%s: reset %d", name, f.LastEventID)
	case *r.after > r.w0:
		rep.count("resets for a lastEventId above the watermark", 1)
	case *r.after+1 <= f.floor:
		rep.count("resets for a pruned lastEventId", 1)
	default:
		rep.fail("reset without cause", "%s: reset %d; the next event %d was still there (floor %d after the reset)",
			name, f.LastEventID, *r.after+1, f.floor)
	}
}

// checkContent checks that a delivered event is the log's event of that id, committed, and
// one the viewer may see.
func (s *soak) checkContent(f *soakFrame, v soakViewer, name string, rep *soakReport) {
	var d struct {
		RolledBack bool `json:"rolledBack"`
	}
	if json.Unmarshal(f.Event.Data, &d) == nil && d.RolledBack {
		rep.fail("rolled-back event delivered", "%s: event %d %s", name, f.ID, f.Event.Data)
	}
	e, ok := s.mirror.lookup(f.ID)
	if !ok {
		rep.fail("event delivered that the log does not have", "%s: event %d", name, f.ID)
		return
	}
	var buf bytes.Buffer
	if json.Compact(&buf, f.Event.Data) != nil || f.Event.Type != e.typ || !bytes.Equal(buf.Bytes(), e.data) {
		rep.fail("event delivered is not the log's", "%s: event %d: got %s %s, the log has %s %s", name, f.ID, f.Event.Type, f.Event.Data, e.typ, e.data)
	}
	if !v.sees(e) {
		rep.fail("event delivered to a viewer who may not see it", "%s: event %d with audience %+v to %+v", name, f.ID, e.aud, v)
	}
	rep.count("events checked against the log", 1)
}

// checkAck checks that an acknowledged socket publish is stored under its id, as a message of
// the viewer's with the text that was sent.
func (s *soak) checkAck(r *streamRec, f *soakFrame, v soakViewer, name string, rep *soakReport) {
	rep.count("socket publishes acknowledged", 1)
	text := ""
	if f.Ref != nil {
		text = r.texts[*f.Ref]
	}
	e, ok := s.mirror.lookup(f.ID)
	if text == "" || !ok || e.typ != "message" || e.text != text || e.userID != v.id {
		rep.fail("acknowledged socket publish not stored under its id", "%s: ack %d for %q: the log has %s %s", name, f.ID, text, e.typ, e.data)
	}
}

// diffIDs returns the ids of want that got lacks, and those of got that want lacks or that
// got has more than once; both are in order.
func diffIDs(want, got []int64) (missing, extra []int64) {
	seen := map[int64]int{}
	for _, id := range got {
		seen[id]++
	}
	wanted := map[int64]bool{}
	for _, id := range want {
		wanted[id] = true
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	for _, id := range got {
		if !wanted[id] || seen[id] > 1 {
			extra = append(extra, id)
			seen[id] = 1 // report a duplicate once
		}
	}
	return missing, extra
}

func describeAfter(r *streamRec) string {
	if r.after == nil {
		return "none"
	}
	return fmt.Sprintf("%d, %s", *r.after, r.start)
}

func readyID(f *soakFrame) any {
	if f == nil {
		return "none"
	}
	return f.LastEventID
}

// firstOf returns the first few ids, for messages.
func firstOf(ids []int64) []int64 { return ids[:min(len(ids), 8)] }
