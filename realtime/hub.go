package realtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tidings/data"
)

// Store is what the hub and its streams read the event log through; *data.Events implements it.
type Store interface {
	// After returns up to limit events with ids above after, in id order.
	After(ctx context.Context, after int64, limit int) ([]data.Event, error)
	// Bounds returns, in one snapshot, the watermark (every event at or below it has
	// committed), what retention has pruned, and the time of event id (0: none).
	Bounds(ctx context.Context, id int64) (data.Bounds, error)
	// Listen relays the log's wake-ups until ctx ends.
	Listen(ctx context.Context, cfg data.ListenerConfig, report func(data.ListenerState)) error
}

// HubConfig configures a Hub. The zero value of each field means its default.
type HubConfig struct {
	// CacheSize is how many recent events the hub keeps in memory for replays (default 65,536).
	CacheSize int
	// PageSize is how many events one read of the table returns (default 1,000).
	PageSize int
	// TableReplays bounds the streams of this node that read the table at once (default 4):
	// the others wait their turn, so that a burst that leaves every stream behind the cache
	// does not send them all to the database together.
	TableReplays int
	// Poll is the safety-net interval at which the hub reads the table without a notification
	// (default 1s).
	Poll time.Duration
	// ReadTimeout bounds each read of the table (default 5s). A read that does not answer in
	// time fails and is retried at the next wake-up or poll, on a fresh connection; the hub is
	// Stalled meanwhile.
	ReadTimeout time.Duration
	// Listener configures the LISTEN connection.
	Listener data.ListenerConfig
	// Logger receives the hub's own troubles; nil discards them.
	Logger *slog.Logger
	// Metrics counts what the hub and its streams do; nil counts nothing.
	Metrics *Metrics
}

// Hub follows the event log for one node and wakes the streams subscribed to it.
type Hub struct {
	// Set at construction.
	store Store
	cfg   HubConfig
	log   *slog.Logger
	wake  chan struct{} // capacity 1: the log may have grown
	ready chan struct{} // closed once head is known

	listening atomic.Bool  // the LISTEN connection is up
	recheck   atomic.Bool  // the listener reconnected: check the history before reading on
	stalled   atomic.Bool  // the last read of the table failed (hub_reads.go)
	writers   atomic.Int64 // streams with a writer goroutine running
	restarts  atomic.Int64 // writer goroutines started for parked streams
	rewinds   atomic.Int64 // times the log was found to have gone back in time

	// The newest event a stream of this node read from the table: a stream can be ahead of
	// the hub, and a log that goes back in time must be noticed for it too.
	seenMu   sync.Mutex
	seenID   int64     // guarded by seenMu
	seenTime time.Time // guarded by seenMu

	shard   int             // deliverShard; smaller in tests
	targets []*Subscription // owned by Run: the subscriptions one advance delivers to
	out     outPage         // owned by Run: the page one advance delivers

	presence *Presence               // set before Run by NewPresence; nil: no presence or signals
	accounts accountBuckets          // publish limits shared by each account's streams
	starts   *sharedRead[startState] // the reads of "now" that opening streams share
	replays  chan struct{}           // a slot per table replay running; capacity TableReplays

	mu sync.RWMutex
	// Every event <= head is in the log and was read. Written under mu (with the ring), and
	// stored before the streams hear of it; read without mu where a moment's staleness is fine.
	head     atomic.Int64
	ring     []*Event                   // guarded by mu: the most recent events; ring[id%len] holds id
	oldest   int64                      // guarded by mu: smallest id in ring (head+1 when empty); never one retention pruned
	subs     map[*Subscription]struct{} // guarded by mu
	shutdown bool                       // guarded by mu
	// Guarded by mu: the streams of each session and user, for control events, and the most
	// recent control events, for streams that subscribe just after one.
	bySession map[int64]map[*Subscription]struct{}
	byUser    map[int64]map[*Subscription]struct{}
	controls  []*Event
}

// maxRecentControls bounds the control events the hub remembers for late subscribers.
const maxRecentControls = 4096

// NewHub returns a hub reading store. Call Run to start it.
func NewHub(store Store, cfg HubConfig) *Hub {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 65536
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 1000
	}
	if cfg.TableReplays <= 0 {
		cfg.TableReplays = 4
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = defaultReadTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Listener.Logger == nil {
		cfg.Listener.Logger = log
	}
	h := &Hub{
		store: store,
		cfg:   cfg,
		log:   log,
		wake:  make(chan struct{}, 1),
		ready: make(chan struct{}),
		ring:  make([]*Event, cfg.CacheSize),
		shard: deliverShard,

		replays: make(chan struct{}, cfg.TableReplays),
		subs:    map[*Subscription]struct{}{},

		bySession: map[int64]map[*Subscription]struct{}{},
		byUser:    map[int64]map[*Subscription]struct{}{},
	}
	h.starts = newSharedRead(cfg.ReadTimeout, h.readStart, cfg.Metrics.startRead)
	return h
}

// Run follows the log until ctx ends: it starts at the current watermark (loading up to
// CacheSize earlier events into the cache), listens for wake-ups, and reads the table after
// each one, after each listener reconnect, and every Poll. It returns when ctx ends, with
// every goroutine it started finished.
func (h *Hub) Run(ctx context.Context) error {
	if err := h.start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { h.starts.run(ctx) })
	wg.Go(func() {
		h.store.Listen(ctx, h.cfg.Listener, func(s data.ListenerState) {
			up := s != data.ListenerDown
			if h.listening.Swap(up) != up {
				h.cfg.Metrics.listener(up)
			}
			if s == data.ListenerUp { // after a (re)connect, also check the history itself
				h.recheck.Store(true)
			}
			if up { // on (re)connect catch up; on notify read
				h.Wake()
			}
		})
	})
	poll := time.NewTicker(h.cfg.Poll)
	defer poll.Stop()
	failing := false
	for {
		check := false
		select {
		case <-ctx.Done():
			return nil
		case <-h.wake:
		case <-poll.C:
			check = true
		}
		var err error
		if check || h.recheck.Swap(false) || h.streamAhead() {
			err = h.checkHistory(ctx, false)
		}
		if err == nil {
			err = h.catchUp(ctx)
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			h.log.Error("read event log", "err", err)
			failing = true
		case err == nil && failing:
			h.log.Info("reading the event log again")
			failing = false
		}
	}
}

// start waits for the database and loads the recent past into the cache.
func (h *Hub) start(ctx context.Context) error {
	var b data.Bounds
	for {
		var err error
		if b, err = h.readBounds(ctx, 0); err == nil {
			break
		}
		h.log.Error("read watermark; retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("hub start: %w", err)
		case <-time.After(h.cfg.Poll):
		}
	}
	head := b.Watermark
	h.mu.Lock()
	h.head.Store(head)
	h.oldest = head + 1
	h.mu.Unlock()
	// Warm the cache with the recent past, so that clients reconnecting after a restart replay
	// from memory. Best effort: on failure the cache simply starts empty.
	from := max(b.PrunedThrough, head-int64(len(h.ring)))
	var warm []*Event
	for from < head {
		evs, err := h.after(ctx, from, h.cfg.PageSize)
		if err != nil || len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if e.ID > head {
				break
			}
			if len(warm) > 0 && e.ID != warm[len(warm)-1].ID+1 {
				warm = warm[:0] // pruned in between: keep only a gapless run
			}
			warm = append(warm, NewEvent(e))
		}
		from = evs[len(evs)-1].ID
	}
	if n := len(warm); n > 0 && warm[n-1].ID == head {
		h.mu.Lock()
		for _, e := range warm {
			h.ring[e.ID%int64(len(h.ring))] = e
		}
		h.oldest = warm[0].ID
		h.mu.Unlock()
	}
	close(h.ready)
	return nil
}

// Wake asks the hub to read the table now. It never blocks.
func (h *Hub) Wake() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// catchUp reads every event above head, page by page, and publishes each page to the streams.
func (h *Hub) catchUp(ctx context.Context) error {
	for first := true; ; first = false {
		head := h.head.Load()
		// The first read starts at the head's own event when the cache holds it: if the log
		// went back in time and grew past the head again, that event is another one now.
		known := h.known(head)
		from := head
		if first && known != nil {
			from = head - 1
		}
		evs, err := h.after(ctx, from, h.cfg.PageSize)
		if err != nil {
			return err
		}
		full := len(evs) == h.cfg.PageSize // there may be more after this page
		if from < head && len(evs) > 0 && evs[0].ID == head {
			if !evs[0].Time.Equal(known.Time) {
				return h.checkHistory(ctx, true)
			}
			evs = evs[1:]
		}
		if len(evs) == 0 {
			if full {
				continue // the page held only the head's own event
			}
			return nil
		}
		page := make([]*Event, len(evs))
		for i, e := range evs {
			page[i] = NewEvent(e)
		}
		if page[0].ID != head+1 {
			// Retention removes the oldest events: the hub was behind for longer than the
			// retention. Streams that need the missing ids get reset.
			h.log.Warn("event log was pruned past the hub's head", "head", head, "next", page[0].ID)
		}
		// The log is gapless unless someone deleted events by hand: each run of consecutive
		// ids goes into the cache on its own, so that the cache never holds a slot for an id
		// the table lacks. A stream that needs a missing id reads the table and is reset.
		for len(page) > 0 {
			n := 1
			for n < len(page) && page[n].ID == page[n-1].ID+1 {
				n++
			}
			if n < len(page) {
				h.log.Warn("event log has a hole", "after", page[n-1].ID, "next", page[n].ID)
			}
			h.advance(page[:n:n])
			page = page[n:]
		}
		if !full {
			return nil
		}
	}
}

// advance appends a page of consecutive events to the cache and hands it to every stream:
// parked streams are written to at once, the others are woken.
func (h *Hub) advance(page []*Event) {
	h.mu.Lock()
	if page[0].ID != h.head.Load()+1 {
		clear(h.ring)
		h.oldest = page[0].ID
	}
	for _, e := range page {
		h.ring[e.ID%int64(len(h.ring))] = e
	}
	head := page[len(page)-1].ID
	h.head.Store(head)
	h.cfg.Metrics.advanced(head, len(page))
	h.oldest = max(h.oldest, head-int64(len(h.ring))+1)
	for _, e := range page {
		if e.Close != nil {
			h.controlLocked(e)
		}
	}
	targets := h.targets[:0]
	for s := range h.subs {
		targets = append(targets, s)
	}
	h.mu.Unlock()
	h.out.set(page)
	sent := h.deliver(targets)
	// Counted once per page: shared counters touched per delivery would cost every socket.
	h.cfg.Metrics.sent(sent, page[0].At, "")
	h.out.reset()
	clear(targets)
	h.targets = targets[:0]
}

// deliverShard is how many subscriptions one goroutine writes to when the hub hands a page out
// in parallel: below it, the cost of starting goroutines outweighs what they save.
const deliverShard = 128

// deliver hands h.out to targets and returns how many events it wrote. Each write to a socket
// is a system call of several microseconds, so with many streams the page is handed out by up
// to GOMAXPROCS goroutines at once: the last socket hears of an event that much sooner.
func (h *Hub) deliver(targets []*Subscription) int {
	return h.deliverWith(targets, min(runtime.GOMAXPROCS(0), len(targets)/h.shard))
}

// signedInStreams appends the streams of signed-in viewers to buf.
func (h *Hub) signedInStreams(buf []*stream) []*stream {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, subs := range h.byUser {
		for s := range subs {
			if s.stream != nil {
				buf = append(buf, s.stream)
			}
		}
	}
	return buf
}

// deliverEach calls write for every stream, by up to GOMAXPROCS goroutines when there are many.
func (h *Hub) deliverEach(streams []*stream, write func(*stream)) {
	workers := min(runtime.GOMAXPROCS(0), len(streams)/h.shard)
	if workers <= 1 {
		for _, s := range streams {
			write(s)
		}
		return
	}
	var wg sync.WaitGroup
	for i := range workers {
		lo, hi := chunk(len(streams), workers, i)
		wg.Go(func() {
			for _, s := range streams[lo:hi] {
				write(s)
			}
		})
	}
	wg.Wait()
}

// deliverWith is deliver by the given number of goroutines.
func (h *Hub) deliverWith(targets []*Subscription, workers int) int {
	deliverTo := func(subs []*Subscription) int {
		sent := 0
		for _, s := range subs {
			if s.stream != nil {
				sent += s.stream.deliver(&h.out)
			} else {
				s.signal()
			}
		}
		return sent
	}
	if workers <= 1 {
		return deliverTo(targets)
	}
	var wg sync.WaitGroup
	sent := make([]int, workers)
	for i := 1; i < workers; i++ {
		lo, hi := chunk(len(targets), workers, i)
		wg.Go(func() { sent[i] = deliverTo(targets[lo:hi]) })
	}
	lo, hi := chunk(len(targets), workers, 0)
	sent[0] = deliverTo(targets[lo:hi])
	wg.Wait()
	total := 0
	for _, n := range sent {
		total += n
	}
	return total
}

// chunk returns the bounds of the i-th of workers nearly equal, contiguous parts of n items:
// every item falls in exactly one part, and no part reaches past n.
func chunk(n, workers, i int) (lo, hi int) {
	return i * n / workers, (i + 1) * n / workers
}

// outPage is a page of events as the hub writes it to parked streams: the frames of all its
// events back to back, so that a run of events a socket may see leaves in one write.
type outPage struct {
	events []*Event
	wire   []byte // every event's Wire, in order (control events have none)
	offs   []int  // offs[i] is where events[i] starts in wire; offs[len(events)] is len(wire)
}

func (p *outPage) set(page []*Event) {
	p.events = page
	p.wire = p.wire[:0]
	p.offs = p.offs[:0]
	for _, e := range page {
		p.offs = append(p.offs, len(p.wire))
		p.wire = append(p.wire, e.Wire...)
	}
	p.offs = append(p.offs, len(p.wire))
}

// reset lets go of the page's events, and of a buffer grown by a rare huge page.
func (p *outPage) reset() {
	p.events = nil
	if cap(p.wire) > 1<<20 {
		p.wire = nil
	}
}

// controlLocked closes the streams that a control event names, and remembers it for streams
// that subscribe with a session read before it.
func (h *Hub) controlLocked(e *Event) {
	h.controls = append(h.controls, e)
	if len(h.controls) > maxRecentControls {
		h.controls = append(h.controls[:0:0], h.controls[len(h.controls)-maxRecentControls/2:]...)
	}
	// A stream whose session was read after this event already reflects it: closedBy says no.
	closeNamed := func(index map[int64]map[*Subscription]struct{}, ids []int64) {
		for _, id := range ids {
			for s := range index[id] {
				if r := s.closedBy(e); r != nil {
					s.Close(*r)
				}
			}
		}
	}
	closeNamed(h.bySession, e.Close.SessionIDs)
	closeNamed(h.byUser, e.Close.UserIDs)
	if h.presence != nil && e.Close.Reason == CloseUserDeleted.Reason {
		h.presence.usersDeleted(e.Close.UserIDs) // offline at once, on every node
	}
}

// closesLocked returns the close that a remembered control event asks of s.
func (h *Hub) closesLocked(s *Subscription) *CloseReason {
	// Controls are remembered in id order: start at the first one after s's cut-off.
	i, _ := slices.BinarySearchFunc(h.controls, s.cutoff+1, func(e *Event, id int64) int { return cmp.Compare(e.ID, id) })
	for _, e := range h.controls[i:] {
		if r := s.closedBy(e); r != nil {
			return r
		}
	}
	return nil
}

// Head returns the id of the newest event the hub has read.
func (h *Hub) Head() int64 { return h.head.Load() }

// Writers returns how many streams have a writer goroutine running: those replaying, catching
// up, or sending replies, a ping or a close. A parked stream has none: the hub writes to it.
func (h *Hub) Writers() int { return int(h.writers.Load()) }

// Listening reports whether the hub's LISTEN connection is up.
func (h *Hub) Listening() bool { return h.listening.Load() }

// Ready is closed once the hub knows the log's head and can serve streams.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// errShutdown is returned by Subscribe once Shutdown has begun.
var errShutdown = errors.New("realtime: hub is shutting down")

// read copies into buf the cached events after `after`, up to len(buf) of them, and returns how
// many it copied, the head, and whether `after` is older than the cache (the caller must read
// the table instead).
func (h *Hub) read(after int64, buf []*Event) (n int, head int64, tooOld bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if after+1 < h.oldest {
		return 0, h.head.Load(), true
	}
	head = h.head.Load()
	for id := after + 1; id <= head && n < len(buf); id++ {
		buf[n] = h.ring[id%int64(len(h.ring))]
		n++
	}
	return n, head, false
}

// Shutdown closes every stream with 1001 going-away and refuses new ones. It does not wait for
// the streams: their owners do.
func (h *Hub) Shutdown() {
	h.mu.Lock()
	h.shutdown = true
	for s := range h.subs {
		s.Close(CloseGoingAway)
	}
	h.mu.Unlock()
}

// subscribe registers a stream's wake-ups and returns the head at that moment: every event
// after it will wake the subscription. The viewer's session and user make it reachable by
// control events; one after cutoff (the watermark read with the viewer's session) that names
// them closes it, at once if the hub has read it already. It waits for the hub to be ready.
// With a nil stream the subscription is only woken (the fan-out benchmark's subscribers).
func (h *Hub) subscribe(ctx context.Context, v Viewer, cutoff int64, st *stream) (*Subscription, int64, error) {
	select {
	case <-h.ready:
	default:
		select {
		case <-h.ready:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	s := &Subscription{hub: h, stream: st, sessionID: v.SessionID, userID: v.UserID, cutoff: cutoff}
	if st == nil {
		s.wake = make(chan struct{}, 1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shutdown {
		return nil, 0, errShutdown
	}
	h.subs[s] = struct{}{}
	addIndex(h.bySession, s.sessionID, s)
	addIndex(h.byUser, s.userID, s)
	if r := h.closesLocked(s); r != nil {
		s.Close(*r)
	}
	return s, h.head.Load(), nil
}

func addIndex(index map[int64]map[*Subscription]struct{}, id int64, s *Subscription) {
	if id == 0 {
		return
	}
	if index[id] == nil {
		index[id] = map[*Subscription]struct{}{}
	}
	index[id][s] = struct{}{}
}

func removeIndex(index map[int64]map[*Subscription]struct{}, id int64, s *Subscription) {
	if set := index[id]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(index, id)
		}
	}
}

// Subscribers returns how many streams are subscribed.
func (h *Hub) Subscribers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs)
}

// checkHistory compares the hub with the log itself: what retention pruned leaves the cache
// (no node replays an id the table no longer holds), and a log that went back in time (a
// restored backup, a failover that lost the last commits) is noticed: either the watermark is
// below the hub's head, or the event at the head is another one than the hub read (or the
// caller found so already: rewound).
func (h *Hub) checkHistory(ctx context.Context, rewound bool) error {
	head := h.head.Load()
	// The newest event anyone on this node has seen, and its time if known.
	ref, refTime := head, time.Time{}
	if e := h.known(head); e != nil {
		refTime = e.Time
	}
	h.seenMu.Lock()
	if h.seenID > ref {
		ref, refTime = h.seenID, h.seenTime
	}
	h.seenMu.Unlock()
	b, err := h.readBounds(ctx, ref)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.oldest = max(h.oldest, b.PrunedThrough+1)
	switch {
	case rewound, b.Watermark < ref:
	case !refTime.IsZero() && b.Time != nil && !refTime.Equal(*b.Time):
	default:
		return nil
	}
	h.log.Error("the event log went back in time (a restored backup, or a failover that lost commits): closing every stream so that clients resync",
		"head", head, "watermark", b.Watermark)
	// Forget everything the hub read: events with those ids may be other events now. Every
	// stream closes, and starts again from the database.
	clear(h.ring)
	h.controls = nil
	h.oldest = b.Watermark + 1
	h.head.Store(b.Watermark)
	h.cfg.Metrics.advanced(b.Watermark, 0)
	h.rewinds.Add(1)
	h.seenMu.Lock()
	h.seenID, h.seenTime = 0, time.Time{}
	h.seenMu.Unlock()
	// A client that saw an id above the watermark gets reset when it comes back.
	for s := range h.subs {
		s.Close(CloseInternal)
	}
	return nil
}

// known returns the cached event with id, nil when the cache does not hold it.
func (h *Hub) known(id int64) *Event {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.knownLocked(id)
}

func (h *Hub) knownLocked(id int64) *Event {
	if id <= 0 || id < h.oldest || id > h.head.Load() {
		return nil
	}
	return h.ring[id%int64(len(h.ring))]
}

// noteSeen records the newest event a stream read from the table.
func (h *Hub) noteSeen(e data.Event) {
	h.seenMu.Lock()
	if e.ID > h.seenID {
		h.seenID, h.seenTime = e.ID, e.Time
	}
	h.seenMu.Unlock()
}

// streamAhead reports whether a stream of this node has read events the hub has not: they are
// checked against the log with the hub's next read.
func (h *Hub) streamAhead() bool {
	h.seenMu.Lock()
	defer h.seenMu.Unlock()
	return h.seenID > h.head.Load()
}

// Rewinds returns how many times this hub found that the log went back in time.
func (h *Hub) Rewinds() int64 { return h.rewinds.Load() }

// replaySlot waits for a turn to read the table (TableReplays run at once per node) and returns
// its release.
func (h *Hub) replaySlot(ctx context.Context) (release func(), err error) {
	select {
	case h.replays <- struct{}{}:
	default:
		h.cfg.Metrics.replayWaiting(1)
		defer h.cfg.Metrics.replayWaiting(-1)
		select {
		case h.replays <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func() { <-h.replays }, nil
}
