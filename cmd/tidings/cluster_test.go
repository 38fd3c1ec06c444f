package main

import (
	"fmt"
	"sync"
	"testing"

	"tidings/data/datatest"
)

// TestThreeNodesExactlyOnce runs three `tidings serve` nodes on one database, streams on all
// of them and several concurrent writers on each: the ids the writers get back are exactly
// 1..N (one log for all nodes, a publish of several events gets consecutive ids), and every
// stream, live or replaying from 0 afterwards, sees 1..N exactly once, in order.
func TestThreeNodesExactlyOnce(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": datatest.NewDatabase(t)}
	var nodes []*node
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 3 { // all at once: migrations run under an advisory lock
		wg.Go(func() {
			n, err := tryStartNode(t, fmt.Sprint("n", i), env)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			nodes = append(nodes, n)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(nodes) != 3 {
		t.FailNow() // tryStartNode said why
	}

	var followers []*follower
	for i := range 6 {
		followers = append(followers, follow(t, fmt.Sprint("f", i), nodes[i%3].url))
	}
	for _, f := range followers {
		f.waitReady(t) // live before the first write
	}

	hc := newHTTPClient(t)
	const writersPerNode, publishesPerWriter = 3, 30
	var acked ackedIDs
	for _, n := range nodes {
		for w := range writersPerNode {
			wg.Go(func() {
				name := fmt.Sprintf("%s/w%d", n.name, w)
				for i := range publishesPerWriter {
					count := 1
					if i%10 == 9 {
						count = 3 // one transaction, consecutive ids
					}
					status, ids, err := publishEvents(hc, n.url, eventBody(name, i, count))
					if err != nil || status != 200 || len(ids) != count {
						t.Errorf("%s publish %d: got %d %v, %v; want 200 and %d ids", name, i, status, ids, err, count)
						return
					}
					for j := 1; j < len(ids); j++ {
						if ids[j] != ids[j-1]+1 {
							t.Errorf("%s publish %d: ids %v are not consecutive", name, i, ids)
						}
					}
					if !acked.add(ids) {
						t.Errorf("%s publish %d: ids %v were already given to another publish", name, i, ids)
					}
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const total = 3 * writersPerNode * (publishesPerWriter + 2*(publishesPerWriter/10))
	for _, n := range nodes {
		if got := watermark(t, hc, n.url); got != total {
			t.Fatalf("node %s watermark: got %d, want %d", n.name, got, total)
		}
	}
	acked.checkExactly(t, total)

	late := follow(t, "late", nodes[2].url) // replays everything from 0
	for _, f := range append(followers, late) {
		f.waitFor(t, total)
	}
	for _, f := range append(followers, late) {
		f.stop()
		f.check(t, total)
	}
}
