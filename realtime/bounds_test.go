package realtime

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tidings/data"
	"tidings/data/datatest"
)

// slowBounds is the log whose first read of its bounds is taken, then held until release: a
// read in flight for as long as the test wants. It counts the reads.
type slowBounds struct {
	deafStore
	release chan struct{}
	reads   atomic.Int32
	first   chan struct{} // closed once the first read has its answer and waits
}

func (s *slowBounds) Bounds(ctx context.Context, id int64) (data.Bounds, error) {
	b, err := s.deafStore.Bounds(ctx, id)
	if s.reads.Add(1) == 1 {
		close(s.first)
		<-s.release
	}
	return b, err
}

// TestStreamsOpeningTogetherShareOneRead: the reads of "now" of streams that open at the same
// moment are one read, and none of them gets an answer older than its call: a caller that
// arrives while a read is in flight waits for the next one.
func TestStreamsOpeningTogetherShareOneRead(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	store := &slowBounds{deafStore: deafStore{data.NewEvents(pool)}, release: make(chan struct{}), first: make(chan struct{})}
	shared := newSharedRead(10*time.Second, func(ctx context.Context) (data.Bounds, error) {
		return store.Bounds(ctx, 0)
	}, nil)
	ctx, stop := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { shared.run(ctx) })
	defer func() { stop(); run.Wait() }()

	early := make(chan data.Bounds, 1)
	go func() {
		b, err := shared.read(ctx)
		if err != nil {
			t.Error(err)
		}
		early <- b
	}()
	<-store.first // that read has its answer: watermark 0
	datatest.Append(t, pool, plain(1)...)
	const late = 50
	var wg sync.WaitGroup
	got := make([]data.Bounds, late)
	for i := range late {
		wg.Go(func() {
			b, err := shared.read(ctx)
			if err != nil {
				t.Error(err)
			}
			got[i] = b
		})
	}
	// Let the late callers gather behind the read in flight, then let it finish.
	waitUntil(t, "the late callers to wait for a read of their own", func() bool {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		return shared.next != nil
	})
	close(store.release)
	wg.Wait()
	if b := <-early; b.Watermark != 0 {
		t.Fatalf("the first read: got watermark %d, want 0", b.Watermark)
	}
	for i, b := range got {
		if b.Watermark != 1 {
			t.Fatalf("late caller %d: got watermark %d, want 1: it took a read that began before it", i, b.Watermark)
		}
	}
	// One read for the first caller; the late ones share as few as arrived apart (at least one).
	if n := store.reads.Load(); n < 2 || n > 2+late/10 {
		t.Fatalf("reads of the bounds: got %d for %d callers, want them shared", n, late+1)
	}
}
