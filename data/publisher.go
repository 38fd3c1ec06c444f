package data

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultMaxBatch is the most events one group commit holds when PublisherConfig.MaxBatch is 0.
const DefaultMaxBatch = 1000

// DefaultCommitTimeout bounds one group commit when PublisherConfig.CommitTimeout is 0.
const DefaultCommitTimeout = 10 * time.Second

// PublisherConfig configures a Publisher. The zero value of each field means its default.
type PublisherConfig struct {
	// MaxBatch is the most events appended in one transaction (default DefaultMaxBatch). A
	// single request larger than this still commits alone, whole.
	MaxBatch int
	// CommitTimeout bounds each transaction (default DefaultCommitTimeout).
	CommitTimeout time.Duration
}

// Publisher appends events in transactions of their own, coalescing concurrent calls into one
// transaction (group commit). Every transaction serializes on the event log's counter row and
// pays a commit, so with one event per transaction writers cannot go faster than commits;
// coalesced, they share them. A call's events stay together and in order, and a call whose
// events fail alone fails alone.
//
// There is no background goroutine: the first caller to find no commit in flight leads one
// batch, then hands leadership to the oldest waiting caller.
type Publisher struct {
	pool *pgxpool.Pool
	cfg  PublisherConfig

	mu       sync.Mutex
	pending  []*publishCall // guarded by mu
	leading  bool           // guarded by mu: a batch is being committed
	batching int            // guarded by mu: calls in the batch being committed
}

type publishCall struct {
	evs  []NewEvent
	done chan struct{} // closed when ids/err are set, or when lead is set
	lead bool
	ids  []int64
	err  error
}

// NewPublisher returns a Publisher writing to pool's database.
func NewPublisher(pool *pgxpool.Pool, cfg PublisherConfig) *Publisher {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	return &Publisher{pool: pool, cfg: cfg}
}

// Publish appends evs in one transaction, possibly shared with other calls, and returns their
// ids in order once it has committed. Once the call has joined a batch it waits for that
// batch's outcome even if ctx ends, so that its answer is never a guess.
func (p *Publisher) Publish(ctx context.Context, evs []NewEvent) ([]int64, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	call := &publishCall{evs: evs, done: make(chan struct{})}
	p.mu.Lock()
	p.pending = append(p.pending, call)
	lead := !p.leading
	p.leading = true
	p.mu.Unlock()
	if !lead {
		<-call.done
		if !call.lead {
			return call.ids, call.err
		}
	}
	p.commitBatch()
	return call.ids, call.err
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

// commitBatch takes the oldest pending calls, up to MaxBatch events, commits them together, and
// passes leadership on.
func (p *Publisher) commitBatch() {
	// Callers of the batch that just committed are often about to publish again: let them
	// join, or batches alternate between a lone leader and everyone else.
	p.linger()
	p.mu.Lock()
	n, events := 0, 0
	for n < len(p.pending) && (n == 0 || events+len(p.pending[n].evs) <= p.cfg.MaxBatch) {
		events += len(p.pending[n].evs)
		n++
	}
	batch := p.pending[:n:n]
	p.pending = p.pending[n:]
	p.batching = n
	p.mu.Unlock()

	p.commit(batch)
	if len(batch) > 1 && batch[0].err != nil && !isConnectionError(batch[0].err) {
		// One call's events may have spoiled the batch: give each call its own transaction.
		for _, c := range batch {
			p.commit([]*publishCall{c})
		}
	}

	p.mu.Lock()
	p.batching = 0
	var next *publishCall
	if len(p.pending) > 0 {
		next = p.pending[0]
	} else {
		p.leading = false
	}
	p.mu.Unlock()
	for _, c := range batch {
		if !c.lead { // a handed-off leader's done is closed already; it is running this
			close(c.done)
		}
	}
	if next != nil {
		next.lead = true
		close(next.done)
	}
}

// commit appends the events of calls in one transaction and sets each call's ids or error.
func (p *Publisher) commit(calls []*publishCall) {
	var all []NewEvent
	for _, c := range calls {
		all = append(all, c.evs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.CommitTimeout)
	defer cancel()
	// One statement is one implicit transaction: a single round trip, atomic on its own.
	ids, err := AppendEvents(ctx, p.pool, all)
	if err != nil {
		err = fmt.Errorf("publish: %w", err)
	}
	for _, c := range calls {
		c.err = err
		if err == nil {
			c.ids, ids = ids[:len(c.evs):len(c.evs)], ids[len(c.evs):]
		}
	}
}

// isConnectionError reports whether err came from the database being unreachable rather than
// from the events themselves.
func isConnectionError(err error) bool {
	return !IsInvalidInput(err) && !errors.Is(err, ErrInvalidEvent)
}
