package realtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// maxPendingPublishes bounds the publishes of one stream accepted and not yet answered. More
// are refused with rate-limited at once: while the database is slow, a client that keeps
// publishing is told to slow down, and its stream stays open and answers pings.
const maxPendingPublishes = 8

// publishes runs a stream's publishes, one at a time and in the order they came, in a goroutine
// of its own, so that reading the socket never waits on the database: pings are answered and
// pongs seen while a publish waits. The goroutine runs only while publishes are pending; the
// stream's first publish makes this state, so a stream that never publishes has none.
type publishes struct {
	// Set at construction.
	s  *stream
	wg sync.WaitGroup // the goroutine running the queue, while one runs

	mu      sync.Mutex
	bucket  tokenBucket      // guarded by mu: the socket's publish rate (docs/protocol.md section 5)
	queue   []pendingPublish // guarded by mu: accepted, not yet started, oldest first
	pending int              // guarded by mu: accepted, not yet answered
	running bool             // guarded by mu: the goroutine runs
	stopped bool             // guarded by mu: the stream is over; start nothing more
}

// pendingPublish is an accepted publish frame: its tokens are taken, its answer is due by
// deadline.
type pendingPublish struct {
	ref      *string
	event    ClientEvent
	deadline time.Time
}

// publish answers a publish frame at once when it is refused (anonymous, rate-limited), or
// queues it and returns nil: its ack or error follows when it ran. It runs in the reader.
func (s *stream) publish(f ClientFrame) []byte {
	if s.opts.Publish == nil {
		return errorFrame(f.Ref, CodeUnauthenticated, "sign in to publish")
	}
	if s.pubs == nil {
		s.pubs = &publishes{s: s, bucket: newTokenBucket(s.cfg.PublishRate, s.cfg.PublishBurst, time.Now())}
	}
	return s.pubs.accept(f, time.Now())
}

// accept takes the publish's tokens and queues it, or returns the refusal. A publish counts
// against both buckets from here; one that fails gets its tokens back.
func (q *publishes) accept(f ClientFrame, now time.Time) []byte {
	s := q.s
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending >= maxPendingPublishes {
		return errorFrame(f.Ref, CodeRateLimited, fmt.Sprintf("at most %d publishes may wait for their answer", maxPendingPublishes))
	}
	if !q.bucket.available(now) {
		return errorFrame(f.Ref, CodeRateLimited, fmt.Sprintf("at most %g events per second, bursts of %d", s.cfg.PublishRate, s.cfg.PublishBurst))
	}
	account := s.opts.Viewer.UserID
	if account != 0 && !s.hub.accounts.available(account, s.cfg.AccountPublishRate, s.cfg.AccountPublishBurst, now) {
		return errorFrame(f.Ref, CodeRateLimited, fmt.Sprintf("at most %g events per second per account, bursts of %d", s.cfg.AccountPublishRate, s.cfg.AccountPublishBurst))
	}
	q.bucket.take()
	if account != 0 {
		s.hub.accounts.take(account)
	}
	q.queue = append(q.queue, pendingPublish{ref: f.Ref, event: f.Event, deadline: now.Add(s.cfg.PublishTimeout)})
	q.pending++
	if !q.running && !q.stopped {
		q.running = true
		q.wg.Add(1)
		go q.run()
	}
	return nil
}

// run publishes the queue until it is empty or the stream is over.
func (q *publishes) run() {
	defer q.wg.Done()
	s := q.s
	for {
		q.mu.Lock()
		if len(q.queue) == 0 || q.stopped {
			left := q.queue
			q.queue, q.running = nil, false
			q.pending -= len(left)
			q.mu.Unlock()
			for range left {
				q.refund() // never tried: the stream ended first
			}
			return
		}
		p := q.queue[0]
		q.queue = q.queue[1:]
		q.mu.Unlock()
		frame, invalid := q.runOne(p)
		q.mu.Lock()
		q.pending--
		q.mu.Unlock()
		if !s.reply(frame) {
			s.sub.Close(closeUnanswered)
		}
		s.countInvalid(invalid)
	}
}

// runOne publishes one event, within its deadline, and returns the ack or error frame, and
// whether the publish was refused as invalid (it counts as an invalid frame).
func (q *publishes) runOne(p pendingPublish) (frame []byte, invalid bool) {
	s := q.s
	ctx, cancel := context.WithDeadline(s.ctx, p.deadline)
	defer cancel()
	id, err := s.opts.Publish(ctx, p.event)
	if err != nil {
		q.refund()
		var fe *FrameError
		if !errors.As(err, &fe) && s.ctx.Err() == nil {
			s.cfg.Logger.Error("publish from socket", "err", err)
		}
		return errorFrameFor(p.ref, err), fe != nil && fe.Code == CodeInvalid
	}
	return ackFrame(p.ref, id), false
}

// refund gives a publish's tokens back: refused publishes take no token.
func (q *publishes) refund() {
	q.mu.Lock()
	q.bucket.give()
	q.mu.Unlock()
	if account := q.s.opts.Viewer.UserID; account != 0 {
		q.s.hub.accounts.give(account)
	}
}

// stop ends the queue: publishes not started are dropped, and stop waits for the one running,
// whose context ends with the stream's. It is safe on a stream that never published.
func (q *publishes) stop() {
	if q == nil {
		return
	}
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	q.wg.Wait()
}
