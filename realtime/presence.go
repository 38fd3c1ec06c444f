package realtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"tidings/data"
)

// PresenceStore is what nodes share presence and signals through; *data.Presence implements
// it. Nothing of it touches the event log.
type PresenceStore interface {
	Replace(ctx context.Context, node string, seq int64, users []int64) error
	Flush(ctx context.Context, node string, seq int64, on, off []int64) error
	Beat(ctx context.Context, node string, reapAfter time.Duration) ([]string, error)
	Leave(ctx context.Context, node string, reapAfter, linger time.Duration) error
	Nodes(ctx context.Context, reapAfter time.Duration) ([]data.PresenceNode, error)
	BoundsAndMarks(ctx context.Context, reapAfter time.Duration) (data.Bounds, []data.PresenceMark, error)
	Online(ctx context.Context, reapAfter time.Duration) ([]int64, error)
	Signal(ctx context.Context, body []byte) error
	Listen(ctx context.Context, cfg data.ListenerConfig, report func(data.ListenerState, *data.PresenceMessage)) error
}

// PresenceConfig configures a node's presence. The zero value of each field means its default.
type PresenceConfig struct {
	// Grace is how long a user stays online after their last stream on this node closed
	// (default 5s): a reload or a reconnect within it changes nothing.
	Grace time.Duration
	// Timeout bounds how long the streams of a node that died without closing them still
	// count (default 15s). The node beats every Timeout/5; a node without a beat for
	// 3*Timeout/5 is removed by the next node to beat.
	Timeout time.Duration
	// FlushEvery is how often at most the node writes its changes (default 250ms): the node's
	// presence work is bounded per second, whatever the rate of opens and closes.
	FlushEvery time.Duration
	// SignalDelay is how long the node gathers signals into one notification (default 20ms).
	SignalDelay time.Duration
	// CallTimeout bounds each database call (default 5s).
	CallTimeout time.Duration
	// Listener configures the LISTEN connection of the ephemeral channels.
	Listener data.ListenerConfig
	// Logger receives troubles; nil discards them.
	Logger *slog.Logger
	// Metrics counts presence work; nil counts nothing.
	Metrics *Metrics
}

func (c PresenceConfig) withDefaults() PresenceConfig {
	if c.Grace <= 0 {
		c.Grace = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 15 * time.Second
	}
	if c.FlushEvery <= 0 {
		c.FlushEvery = 250 * time.Millisecond
	}
	if c.SignalDelay <= 0 {
		c.SignalDelay = 20 * time.Millisecond
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Listener.Logger == nil {
		c.Listener.Logger = c.Logger
	}
	return c
}

// Presence is one node's part of who is online (docs/protocol.md section 8). It counts the
// signed-in streams of each user on this node, writes the node's set to the store at most every
// FlushEvery (a user whose last stream closed stays in it for the grace), learns every node's
// set from the store's notifications, and turns the union into the presence frames of this
// node's streams. Signals go through it too (signals.go).
type Presence struct {
	// Set at construction.
	hub       *Hub
	store     PresenceStore
	cfg       PresenceConfig
	log       *slog.Logger
	node      string        // this node's id in the store
	reapAfter time.Duration // a node without a beat for this long is removed
	beatEvery time.Duration
	ready     chan struct{} // closed once the node's view was read for the first time

	// Lock order: lmu, then mu.
	lmu       sync.Mutex
	counts    map[int64]int       // guarded by lmu: open signed-in streams of each user on this node
	leftAt    map[int64]time.Time // guarded by lmu: users with none, since when
	published map[int64]bool      // owned by the writer: this node's set as the store holds it

	msgs    chan *data.PresenceMessage // from the listener to the receiver
	resync  atomic.Bool                // the receiver must read every node's set again
	kick    chan struct{}              // capacity 1: the receiver has work
	pump    chan struct{}              // capacity 1: the ring grew
	signals chan []byte                // signal frames waiting to be sent

	mu      sync.Mutex
	self    map[int64]bool       // guarded by mu and lmu: this node's set (in the view at once, not through the store)
	nodes   map[string]*nodeView // guarded by mu: each other live node's set, as last heard
	count   map[int64]int        // guarded by mu: how many live nodes list each user
	deleted map[int64]bool       // guarded by mu: users deleted while listed somewhere
	online  int                  // guarded by mu: users online in the view
	snap    []byte               // guarded by mu: the presence frame of the view; nil when stale
	begun   int64                // guarded by mu: the reads of every node's set begun (readAll)
	read    int64                // guarded by mu: the number of the last one that succeeded
	wasRead chan struct{}        // guarded by mu: closed, and replaced, when a read succeeds
	ring    ephRing              // guarded by mu (seq readable without it)
}

// nodeView is one node's set as this node last heard it.
type nodeView struct {
	seq   int64
	users map[int64]bool
}

// NewPresence returns the presence of hub's node, shared through store, and attaches it to
// hub: the hub's signed-in streams then send presence frames after ready and accept signals.
// Call it before hub.Run, and Run it.
func NewPresence(hub *Hub, store PresenceStore, cfg PresenceConfig) *Presence {
	cfg = cfg.withDefaults()
	var id [16]byte
	rand.Read(id[:])
	p := &Presence{
		hub:       hub,
		store:     store,
		cfg:       cfg,
		log:       cfg.Logger,
		node:      hex.EncodeToString(id[:]),
		reapAfter: cfg.Timeout * 3 / 5,
		beatEvery: cfg.Timeout / 5,
		ready:     make(chan struct{}),
		counts:    map[int64]int{},
		leftAt:    map[int64]time.Time{},
		published: map[int64]bool{},
		msgs:      make(chan *data.PresenceMessage, 4096),
		kick:      make(chan struct{}, 1),
		pump:      make(chan struct{}, 1),
		signals:   make(chan []byte, maxQueuedSignals),
		self:      map[int64]bool{},
		nodes:     map[string]*nodeView{},
		count:     map[int64]int{},
		deleted:   map[int64]bool{},
		ring:      newEphRing(),
		wasRead:   make(chan struct{}),
	}
	hub.presence = p
	return p
}

// Ready is closed once the node has read every node's set for the first time.
func (p *Presence) Ready() <-chan struct{} { return p.ready }

// Node returns this node's id in the presence tables.
func (p *Presence) Node() string { return p.node }

// Run keeps the node's presence until ctx ends: it registers the node, listens to the other
// nodes, writes this node's changes and beats, sends signals, and writes the frames to streams.
// When ctx ends it lets the node's users count for the grace more (clients moving to another
// node cause no change), and returns once every goroutine it started has finished.
func (p *Presence) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() {
		p.store.Listen(ctx, p.cfg.Listener, p.heard)
	})
	wg.Go(func() { p.receive(ctx) })
	wg.Go(func() { p.sendSignals(ctx) })
	wg.Go(func() { p.runPump(ctx) })
	p.write(ctx)
	wg.Wait()
	lctx, cancel := context.WithTimeout(context.Background(), p.cfg.CallTimeout)
	defer cancel()
	if err := p.store.Leave(lctx, p.node, p.reapAfter, p.cfg.Grace); err != nil {
		return fmt.Errorf("presence leave: %w", err)
	}
	return nil
}

// Online returns who is online on any node, read from the store (the database decides): what
// GET /api/presence and the page answer.
func (p *Presence) Online(ctx context.Context) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	online, err := p.store.Online(ctx, p.reapAfter)
	if err != nil {
		return nil, fmt.Errorf("read presence: %w", err)
	}
	return online, nil
}

// opened counts a signed-in stream of user on this node. The user is in this node's view at
// once, so that the stream's presence frame holds its own viewer; the other nodes hear of it
// with the next write.
func (p *Presence) opened(user int64) {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	p.counts[user]++
	delete(p.leftAt, user)
	p.mu.Lock()
	if !p.self[user] {
		p.self[user] = true
		p.incLocked(user)
	}
	p.mu.Unlock()
}

// closed counts the end of a signed-in stream of user on this node.
func (p *Presence) closed(user int64) {
	p.lmu.Lock()
	if p.counts[user]--; p.counts[user] <= 0 {
		delete(p.counts, user)
		p.leftAt[user] = time.Now()
	}
	p.lmu.Unlock()
}

// write registers the node, then writes its changes every FlushEvery and beats every
// beatEvery, until ctx ends.
func (p *Presence) write(ctx context.Context) {
	tick := time.NewTicker(p.cfg.FlushEvery)
	defer tick.Stop()
	var seq int64
	replace, lastBeat := true, time.Time{}
	for {
		var err error
		switch {
		case replace:
			seq++
			if err = p.replace(ctx, seq); err == nil {
				replace, lastBeat = false, time.Now()
			}
		case time.Since(lastBeat) >= p.beatEvery:
			if err = p.beat(ctx); err == nil {
				lastBeat = time.Now()
			}
		}
		if err == nil && !replace {
			var wrote bool
			if wrote, err = p.flush(ctx, seq+1); wrote {
				seq++
			}
		}
		if err != nil && ctx.Err() == nil {
			// The store may hold this write or not, or lost the node: write the whole set.
			replace = true
			if !errors.Is(err, data.ErrNodeGone) {
				p.log.Warn("presence write failed; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// localSet returns the users this node lists now: those with a stream, and those whose last
// one closed less than the grace ago. Those whose grace is over leave the view.
func (p *Presence) localSet(now time.Time) map[int64]bool {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	set := make(map[int64]bool, len(p.counts)+len(p.leftAt))
	for u := range p.counts {
		set[u] = true
	}
	var gone []int64
	for u, at := range p.leftAt {
		if now.Sub(at) < p.cfg.Grace {
			set[u] = true
		} else {
			delete(p.leftAt, u)
			gone = append(gone, u)
		}
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		p.mu.Lock()
		for _, u := range gone {
			if p.self[u] {
				delete(p.self, u)
				p.decLocked(u)
			}
		}
		p.mu.Unlock()
	}
	return set
}

// replace writes the node's whole set.
func (p *Presence) replace(ctx context.Context, seq int64) error {
	set := p.localSet(time.Now())
	users := slices.Sorted(maps.Keys(set))
	cctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	err := p.store.Replace(cctx, p.node, seq, users)
	cancel()
	p.cfg.Metrics.presenceWrite(len(users), true, err == nil)
	if err != nil {
		return fmt.Errorf("presence replace: %w", err)
	}
	p.published = set
	return nil
}

// flush writes what changed since the last write, if anything did, as write seq.
func (p *Presence) flush(ctx context.Context, seq int64) (bool, error) {
	set := p.localSet(time.Now())
	var on, off []int64
	for u := range set {
		if !p.published[u] {
			on = append(on, u)
		}
	}
	for u := range p.published {
		if !set[u] {
			off = append(off, u)
		}
	}
	if len(on) == 0 && len(off) == 0 {
		return false, nil
	}
	slices.Sort(on)
	slices.Sort(off)
	cctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	err := p.store.Flush(cctx, p.node, seq, on, off)
	cancel()
	p.cfg.Metrics.presenceWrite(len(on)+len(off), true, err == nil)
	if err != nil {
		return false, fmt.Errorf("presence flush: %w", err)
	}
	p.published = set
	return true, nil
}

// beat renews the node's beat, and removes the nodes that stopped beating.
func (p *Presence) beat(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	gone, err := p.store.Beat(cctx, p.node, p.reapAfter)
	cancel()
	p.cfg.Metrics.presenceWrite(0, len(gone) > 0, err == nil)
	if err != nil {
		return fmt.Errorf("presence beat: %w", err)
	}
	if len(gone) > 0 {
		p.log.Info("removed the presence of nodes that stopped beating", "nodes", gone)
	}
	return nil
}

// heard is the listener's report. It never blocks: a presence message the receiver has no
// room for makes it read every node's set again.
func (p *Presence) heard(s data.ListenerState, m *data.PresenceMessage) {
	switch {
	case s == data.ListenerUp: // notifications may have been missed
		p.resync.Store(true)
	case s != data.ListenerNotified || m == nil:
		return
	case m.Channel == data.SignalsChannel:
		p.received(m.Body)
		return
	default:
		select {
		case p.msgs <- m:
		default:
			p.resync.Store(true)
		}
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// receive applies the other nodes' changes to the view, until ctx ends.
func (p *Presence) receive(ctx context.Context) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-p.msgs:
			if !p.resync.Load() && p.apply(m) {
				continue
			}
			p.resync.Store(true)
		case <-p.kick:
		case <-retry.C:
		}
		if !p.resync.Swap(false) {
			continue
		}
		// Messages queued until now are in what the read returns.
		for len(p.msgs) > 0 {
			<-p.msgs
		}
		if err := p.readAll(ctx); err != nil {
			if ctx.Err() == nil {
				p.log.Warn("read presence; retrying", "err", err)
			}
			p.resync.Store(true)
			retry.Reset(time.Second)
		}
	}
}

// readAll replaces the view with every live node's set, read from the store.
func (p *Presence) readAll(ctx context.Context) error {
	p.mu.Lock()
	p.begun++
	this := p.begun
	p.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	nodes, err := p.store.Nodes(cctx, p.reapAfter)
	cancel()
	if err != nil {
		return fmt.Errorf("presence nodes: %w", err)
	}
	view := make(map[string]*nodeView, len(nodes))
	for _, n := range nodes {
		if n.ID == p.node {
			continue
		}
		nv := &nodeView{seq: n.Seq, users: make(map[int64]bool, len(n.Users))}
		for _, u := range n.Users {
			nv.users[u] = true
		}
		view[n.ID] = nv
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.nodes {
		if view[id] == nil {
			p.dropNodeLocked(id)
		}
	}
	for id, nv := range view {
		old := p.nodes[id]
		if old == nil {
			old = &nodeView{users: map[int64]bool{}}
			p.nodes[id] = old
		}
		old.seq = nv.seq
		for u := range old.users {
			if !nv.users[u] {
				delete(old.users, u)
				p.decLocked(u)
			}
		}
		for u := range nv.users {
			if !old.users[u] {
				old.users[u] = true
				p.incLocked(u)
			}
		}
	}
	p.read = this
	close(p.wasRead)
	p.wasRead = make(chan struct{})
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
	return nil
}

// apply applies one node's change to the view. It reports false when the message does not
// follow what the view holds of that node (a write missed, or a node unknown): the caller
// reads every node's set again.
func (p *Presence) apply(m *data.PresenceMessage) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(m.Gone) > 0 {
		// Read what is left from the tables rather than believe the message: a signed one can be
		// sent again by any role that may LISTEN, to take a live node out of the views.
		return false
	}
	if m.Node == p.node {
		return true // this node's own write: in the view already
	}
	nv := p.nodes[m.Node]
	switch {
	case nv != nil && !m.Full && m.Seq <= nv.seq:
		return true // already in the view
	case nv == nil || m.Full || m.Seq != nv.seq+1:
		return false
	}
	nv.seq = m.Seq
	for _, u := range m.On {
		if !nv.users[u] {
			nv.users[u] = true
			p.incLocked(u)
		}
	}
	for _, u := range m.Off {
		if nv.users[u] {
			delete(nv.users, u)
			p.decLocked(u)
		}
	}
	return true
}

// dropNodeLocked removes a node and its users from the view.
func (p *Presence) dropNodeLocked(id string) {
	nv := p.nodes[id]
	if nv == nil {
		return
	}
	delete(p.nodes, id)
	for _, u := range slices.Sorted(maps.Keys(nv.users)) {
		p.decLocked(u)
	}
}

func (p *Presence) incLocked(u int64) {
	if p.count[u]++; p.count[u] == 1 && !p.deleted[u] {
		p.changeLocked(u, true)
	}
}

func (p *Presence) decLocked(u int64) {
	if p.count[u]--; p.count[u] > 0 {
		return
	}
	delete(p.count, u)
	if p.deleted[u] {
		delete(p.deleted, u) // no node lists the user any more
		return
	}
	p.changeLocked(u, false)
}

// usersDeleted takes deleted users out of the view at once, whatever the nodes still list
// (their streams are closing, and their nodes will drop them after the grace). The hub calls it
// when it reads the control event of a deletion.
func (p *Presence) usersDeleted(ids []int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range ids {
		if p.deleted[u] {
			continue
		}
		p.deleted[u] = true // also when no node lists the user yet: a late write may
		if p.count[u] > 0 {
			p.changeLocked(u, false)
		}
	}
}

// changeLocked adds a presence change to the ring.
func (p *Presence) changeLocked(u int64, online bool) {
	b := append([]byte(`{"type":"presence-change","userId":`), strconv.FormatInt(u, 10)...)
	b = append(b, `,"online":`...)
	b = strconv.AppendBool(b, online)
	p.addLocked(ephFrame{payload: append(b, '}'), presence: true})
	if online {
		p.online++
	} else {
		p.online--
	}
	p.cfg.Metrics.presenceChanged(p.online)
}

// addLocked adds a frame to the ring and wakes the pump.
func (p *Presence) addLocked(f ephFrame) {
	if f.presence {
		p.snap = nil
	}
	p.ring.appendLocked(f)
	select {
	case p.pump <- struct{}{}:
	default:
	}
}

// snapshotAfter returns the presence frame of the view, and the number of the last frame it
// reflects (a stream sends the frame after ready, then the frames after that number), once the
// view is at least as new as the tables were at the read of marks, which began after the
// stream opened (the hub's start read). The database decides who is online, not how far this
// node's listener got: a view behind the tables (a notification late or lost, a node dead by
// the database's clock but not reaped yet) is read again from them first.
func (p *Presence) snapshotAfter(ctx context.Context, marks []data.PresenceMark) ([]byte, int64, error) {
	p.mu.Lock()
	if p.coversLocked(marks) {
		defer p.mu.Unlock()
		frame, seq := p.snapshotLocked()
		return frame, seq, nil
	}
	want := p.begun + 1 // a read of every node's set that begins after the marks were read
	p.mu.Unlock()
	p.cfg.Metrics.presenceBehind()
	p.resync.Store(true)
	select {
	case p.kick <- struct{}{}:
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, 2*p.cfg.CallTimeout)
	defer cancel()
	for {
		p.mu.Lock()
		if p.read >= want {
			defer p.mu.Unlock()
			frame, seq := p.snapshotLocked()
			return frame, seq, nil
		}
		ch := p.wasRead
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("read every node's presence: %w", ctx.Err())
		}
	}
}

// coversLocked reports whether the view holds every live node of marks at its seq or later,
// and no other node.
func (p *Presence) coversLocked(marks []data.PresenceMark) bool {
	others := 0
	for _, m := range marks {
		if m.ID == p.node {
			continue // this node's set is in the view at once
		}
		others++
		if nv := p.nodes[m.ID]; nv == nil || nv.seq < m.Seq {
			return false
		}
	}
	return others == len(p.nodes)
}

// snapshotLocked returns the presence frame of the view, and the number of the last frame it
// reflects.
func (p *Presence) snapshotLocked() ([]byte, int64) {
	if p.snap == nil {
		online := make([]int64, 0, len(p.count))
		for u := range p.count {
			if !p.deleted[u] {
				online = append(online, u)
			}
		}
		slices.Sort(online)
		b := []byte(`{"type":"presence","online":[`)
		for i, u := range online {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, u, 10)
		}
		p.snap = append(b, "]}"...)
	}
	return p.snap, p.ring.seq.Load()
}

// pumpEvery is how often at most the pump writes a page to every stream: a page costs a write
// to each signed-in socket, so the frames of a burst (2,000 users coming online) leave together
// rather than each on its own.
const pumpEvery = 100 * time.Millisecond

// runPump writes each new run of ephemeral frames to the node's parked signed-in streams (the
// others send them from the ring themselves), at most every pumpEvery, until ctx ends.
func (p *Presence) runPump(ctx context.Context) {
	var page ephPage
	var targets []*stream
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.pump:
		}
		if !p.fillPage(&page) {
			continue
		}
		targets = p.hub.signedInStreams(targets[:0])
		p.hub.deliverEach(targets, func(s *stream) { s.deliverEphemeral(&page) })
		clear(targets)
		pause.Reset(pumpEvery)
		select {
		case <-ctx.Done():
			return
		case <-pause.C:
		}
	}
}

// fillPage sets page to the frames after it, up to the ring's newest; false when none.
func (p *Presence) fillPage(page *ephPage) bool {
	var buf [1024]ephFrame
	p.mu.Lock()
	n, next, lost := p.ring.readLocked(page.last, buf[:])
	if lost { // the pump fell behind the ring: streams as far behind find out themselves
		n, next, _ = p.ring.readLocked(p.ring.oldest-1, buf[:])
	}
	p.mu.Unlock()
	if n == 0 {
		page.last = next
		return false
	}
	page.first, page.last = next-int64(n)+1, next
	page.wire, page.offs = page.wire[:0], page.offs[:0]
	for _, f := range buf[:n] {
		page.offs = append(page.offs, len(page.wire))
		page.wire = appendWireFrame(page.wire, f.payload)
	}
	page.offs = append(page.offs, len(page.wire))
	if n == len(buf) { // more to come
		select {
		case p.pump <- struct{}{}:
		default:
		}
	}
	return true
}
