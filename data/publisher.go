package data

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultMaxBatch is the most events one group commit holds when PublisherConfig.MaxBatch is 0.
const DefaultMaxBatch = 1000

// DefaultMaxBatchBytes is the most bytes of events one group commit holds when
// PublisherConfig.MaxBatchBytes is 0.
const DefaultMaxBatchBytes = 4 << 20

// DefaultCommitTimeout bounds one group commit when PublisherConfig.CommitTimeout is 0.
const DefaultCommitTimeout = 10 * time.Second

// PublisherConfig configures a Publisher. The zero value of each field means its default.
type PublisherConfig struct {
	// MaxBatch is the most events appended in one transaction (default DefaultMaxBatch). A
	// single request larger than this still commits alone, whole.
	MaxBatch int
	// MaxBatchBytes is the most bytes of events (types and data) appended in one transaction
	// (default DefaultMaxBatchBytes), so that a batch stays far below what PostgreSQL takes in
	// one statement. A single request larger than this still commits alone, whole.
	MaxBatchBytes int
	// CommitTimeout bounds each transaction (default DefaultCommitTimeout).
	CommitTimeout time.Duration
	// KeyWindow is how long an idempotency key is remembered (default DefaultKeyWindow).
	KeyWindow time.Duration
}

// ErrOutcomeUnknown is returned when the events may or may not have been stored: the call's
// ctx ended, or the connection was lost, after its transaction was sent. A retry with the same
// idempotency key is safe; one without may store the events twice.
var ErrOutcomeUnknown = errors.New("data: publish outcome unknown")

// ErrTooLarge is returned for a call whose events PostgreSQL refuses to take in one transaction
// (SQLSTATE class 54, program limit exceeded, or out of memory). Nothing was stored.
var ErrTooLarge = errors.New("data: events too large for one transaction")

// ErrPublisherClosed is returned by a Publish after Close. Nothing was stored.
var ErrPublisherClosed = errors.New("data: publisher closed")

// Publisher appends events in transactions of their own, coalescing concurrent calls into one
// transaction (group commit). Every transaction serializes on the event log's counter row and
// pays a commit, so with one event per transaction writers cannot go faster than commits;
// coalesced, they share them. A call's events stay together and in order, and a call whose
// events fail alone fails alone.
//
// A committer goroutine runs while calls wait: the first call to find none starts it, and it
// ends when no call is left. Callers only wait for their answer, so a caller whose ctx ends
// returns at once: with nothing stored when its call had not been sent yet, with
// ErrOutcomeUnknown when it had. Close waits for the committer.
type Publisher struct {
	// Set at construction.
	pool *pgxpool.Pool
	cfg  PublisherConfig

	committer sync.WaitGroup // the committer, while one runs

	mu       sync.Mutex
	pending  []*publishCall // guarded by mu: calls waiting for a batch, oldest first
	running  bool           // guarded by mu: a committer runs
	batching int            // guarded by mu: calls in the batch being committed
	closed   bool           // guarded by mu: Close was called
}

type publishCall struct {
	// Set at construction.
	evs  []NewEvent
	key  *IdempotencyKey
	size int           // bytes of types and data, for MaxBatchBytes
	done chan struct{} // closed by the committer once ids, replayed and err are set

	taken bool // guarded by Publisher.mu: in the batch being committed

	// Set by the committer before done is closed.
	ids      []int64
	replayed bool // ids are those of an earlier call with the same key
	err      error
}

// NewPublisher returns a Publisher writing to pool's database.
func NewPublisher(pool *pgxpool.Pool, cfg PublisherConfig) *Publisher {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.KeyWindow <= 0 {
		cfg.KeyWindow = DefaultKeyWindow
	}
	return &Publisher{pool: pool, cfg: cfg}
}

// Publish appends evs in one transaction, possibly shared with other calls, and returns their
// ids in order once it has committed. When ctx ends first it returns at once: an error wrapping
// ErrOutcomeUnknown when the transaction was already sent (it may still commit), any other
// error only when nothing was or will be stored.
func (p *Publisher) Publish(ctx context.Context, evs []NewEvent) ([]int64, error) {
	ids, _, err := p.publish(ctx, evs, nil)
	return ids, err
}

// PublishKeyed is Publish with an idempotency key: when a call with the same scope and key was
// stored within the key window, it appends nothing and returns that call's ids, with replayed
// set (or ErrKeyReused when that call asked something else). The key is stored in the events'
// transaction, so concurrent calls with one key, on any node, store the events once.
func (p *Publisher) PublishKeyed(ctx context.Context, key IdempotencyKey, evs []NewEvent) (ids []int64, replayed bool, err error) {
	if err := key.validate(); err != nil {
		return nil, false, err
	}
	return p.publish(ctx, evs, &key)
}

func (p *Publisher) publish(ctx context.Context, evs []NewEvent, key *IdempotencyKey) ([]int64, bool, error) {
	if len(evs) == 0 {
		return nil, false, nil
	}
	size := 0
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			return nil, false, err
		}
		size += eventSize(e)
	}
	if err := ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("publish: %w", err)
	}
	call := &publishCall{evs: evs, key: key, size: size, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, ErrPublisherClosed
	}
	p.pending = append(p.pending, call)
	if !p.running {
		p.running = true
		p.committer.Add(1)
		go p.run()
	}
	p.mu.Unlock()

	select {
	case <-call.done:
		return call.ids, call.replayed, call.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	taken := call.taken
	if !taken {
		p.pending = slices.DeleteFunc(p.pending, func(c *publishCall) bool { return c == call })
	}
	p.mu.Unlock()
	if !taken {
		return nil, false, fmt.Errorf("publish: not sent: %w", ctx.Err())
	}
	select {
	case <-call.done: // the batch ended as ctx did
		return call.ids, call.replayed, call.err
	default:
		return nil, false, fmt.Errorf("publish: %w: %w", ErrOutcomeUnknown, ctx.Err())
	}
}

// eventSize is what an event counts for MaxBatchBytes.
func eventSize(e NewEvent) int { return len(e.Type) + len(e.Data) + 32 }

// Close stops the Publisher: calls not yet sent fail with ErrPublisherClosed, and Close waits
// for the batch being committed, if any.
func (p *Publisher) Close() {
	p.mu.Lock()
	p.closed = true
	left := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, c := range left {
		c.err = ErrPublisherClosed
		close(c.done)
	}
	p.committer.Wait()
}

// run commits batches until no call waits. It is the committer.
func (p *Publisher) run() {
	defer p.committer.Done()
	for {
		// Callers of the batch that just committed are often about to publish again: let them
		// join, or batches alternate between a lone caller and everyone else.
		p.linger()
		p.mu.Lock()
		if len(p.pending) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		n, events, bytes := 0, 0, 0
		for n < len(p.pending) {
			c := p.pending[n]
			if n > 0 && (events+len(c.evs) > p.cfg.MaxBatch || bytes+c.size > p.cfg.MaxBatchBytes) {
				break
			}
			c.taken = true
			events += len(c.evs)
			bytes += c.size
			n++
		}
		batch := p.pending[:n:n]
		p.pending = p.pending[n:]
		p.batching = n
		p.mu.Unlock()

		p.commit(batch)

		p.mu.Lock()
		p.batching = 0
		p.mu.Unlock()
		for _, c := range batch {
			close(c.done)
		}
	}
}

// linger yields the processor while more callers keep arriving, a few times at most.
func (p *Publisher) linger() {
	p.mu.Lock()
	n := len(p.pending)
	p.mu.Unlock()
	for range 8 {
		runtime.Gosched()
		p.mu.Lock()
		grown := len(p.pending) > n
		n = len(p.pending)
		p.mu.Unlock()
		if !grown {
			return
		}
	}
}

// commit stores the calls of one batch and sets each call's answer. A call that repeats the
// scope and key of an earlier call of the batch is not sent: it gets that call's answer.
func (p *Publisher) commit(calls []*publishCall) {
	type scopedKey struct{ scope, key string }
	var firsts map[scopedKey]*publishCall
	var repeats map[*publishCall]*publishCall // a repeat -> the first call with its key
	for _, c := range calls {
		if c.key == nil {
			continue
		}
		k := scopedKey{c.key.Scope, c.key.Key}
		if first, ok := firsts[k]; ok {
			if repeats == nil {
				repeats = map[*publishCall]*publishCall{}
			}
			repeats[c] = first
			continue
		}
		if firsts == nil {
			firsts = map[scopedKey]*publishCall{}
		}
		firsts[k] = c
	}
	send := calls
	if repeats != nil {
		send = make([]*publishCall, 0, len(calls)-len(repeats))
		for _, c := range calls {
			if repeats[c] == nil {
				send = append(send, c)
			}
		}
	}
	p.store(send)
	for c, first := range repeats {
		switch {
		case first.err != nil:
			c.err = first.err
		case first.key.Request != c.key.Request:
			c.err = ErrKeyReused
		default:
			c.ids, c.replayed = first.ids, true
		}
	}
}

// store commits calls in one transaction and sets each call's answer. When the batch fails
// because of what it holds (one call's events, or its size), it is split in halves, each
// committed on its own, until the call at fault fails alone.
func (p *Publisher) store(calls []*publishCall) {
	err := p.storeOnce(calls)
	if err == nil {
		return
	}
	fault := classify(err)
	if len(calls) > 1 && (fault == faultInput || fault == faultSize) {
		half := len(calls) / 2
		p.store(calls[:half])
		p.store(calls[half:])
		return
	}
	switch fault {
	case faultUnknown:
		err = fmt.Errorf("publish: %w: %w", ErrOutcomeUnknown, err)
	case faultSize:
		err = fmt.Errorf("publish: %w: %w", ErrTooLarge, err)
	default:
		err = fmt.Errorf("publish: %w", err)
	}
	for _, c := range calls {
		c.err = err
	}
}

// storeOnce commits calls in one transaction and, when it committed, sets each call's ids.
func (p *Publisher) storeOnce(calls []*publishCall) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CommitTimeout)
	defer cancel()
	// An error before the statement is sent stores nothing: acquire apart, so that its errors
	// are never taken for a lost commit.
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", errNotSent{err})
	}
	defer conn.Release()
	keyed := false
	var all []NewEvent
	for _, c := range calls {
		all = append(all, c.evs...)
		keyed = keyed || c.key != nil
	}
	if !keyed {
		// One statement is one implicit transaction: a single round trip, atomic on its own.
		ids, err := appendEvents(ctx, conn, all)
		if err != nil {
			return err
		}
		for _, c := range calls {
			c.ids, ids = ids[:len(c.evs):len(c.evs)], ids[len(c.evs):]
		}
		return nil
	}
	return p.storeKeyed(ctx, conn, calls, all)
}

// storeKeyed commits calls, some with idempotency keys, in one statement (tidings_publish_keyed).
func (p *Publisher) storeKeyed(ctx context.Context, conn *pgxpool.Conn, calls []*publishCall, all []NewEvent) error {
	types := make([]string, 0, len(all))
	datas := make([]string, 0, len(all))
	auds := make([]*string, 0, len(all))
	callOf := make([]int32, 0, len(all))
	scopes := make([]*string, len(calls))
	keys := make([]*string, len(calls))
	requests := make([][]byte, len(calls))
	for i, c := range calls {
		for _, e := range c.evs {
			types = append(types, e.Type)
			d := "null"
			if e.Data != nil {
				d = string(e.Data)
			}
			datas = append(datas, d)
			a, _ := e.Audience.sqlValue()
			auds = append(auds, a)
			callOf = append(callOf, int32(i+1))
		}
		if c.key != nil {
			scopes[i], keys[i], requests[i] = &c.key.Scope, &c.key.Key, c.key.Request[:]
		}
	}
	rows, err := conn.Query(ctx, `SELECT call_first_id, call_n, call_request, call_replayed
		FROM tidings_publish_keyed($1::text[], $2::text[]::jsonb[], $3::text[]::jsonb[], $4::integer[],
		                           $5::text[], $6::text[], $7::bytea[], $8::interval)`,
		types, datas, auds, callOf, scopes, keys, requests, p.cfg.KeyWindow)
	if err != nil {
		return fmt.Errorf("append keyed events: %w", err)
	}
	type answer struct {
		First    int64
		N        int32
		Request  []byte
		Replayed bool
	}
	answers, err := pgx.CollectRows(rows, pgx.RowToStructByPos[answer])
	if err != nil {
		return fmt.Errorf("append keyed events: %w", err)
	}
	if len(answers) != len(calls) {
		return fmt.Errorf("append keyed events: got %d answers for %d calls", len(answers), len(calls))
	}
	for i, c := range calls {
		a := answers[i]
		if a.Replayed && (c.key == nil || len(a.Request) != len(c.key.Request) || [32]byte(a.Request) != c.key.Request) {
			c.err = ErrKeyReused
			continue
		}
		c.ids = make([]int64, a.N)
		for j := range c.ids {
			c.ids[j] = a.First + int64(j)
		}
		c.replayed = a.Replayed
	}
	return nil
}
