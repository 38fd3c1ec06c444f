package realtime

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tidings/data"
	"tidings/data/datatest"
)

// BenchmarkFanout measures deliveries per second from the hub to 1,000 in-process subscribers:
// events are committed in batches of 100, the hub reads them from the table, and each
// subscriber, woken like a stream, copies every new event out of the recent-events cache.
func BenchmarkFanout(b *testing.B) {
	const subscribers, batch = 1000, 100
	pool := datatest.NewPool(b)
	hub := NewHub(data.NewEvents(pool), HubConfig{Poll: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { hub.Run(ctx) })
	defer func() { cancel(); run.Wait() }()
	<-hub.Ready()
	for !hub.Listening() {
		time.Sleep(time.Millisecond)
	}

	target := int64(b.N)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range subscribers {
		sub, head, err := hub.subscribe(ctx, Viewer{}, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			defer sub.Unsubscribe()
			buf := make([]*Event, 256)
			cursor := head
			<-start
			for cursor < head+target {
				n, _, _ := hub.read(cursor, buf)
				if n == 0 {
					<-sub.wake
					continue
				}
				for _, e := range buf[:n] {
					if len(e.Wire) == 0 {
						b.Error("empty frame")
					}
				}
				cursor = buf[n-1].ID
			}
		})
	}
	payload := json.RawMessage(`{"text":"hello, tidings"}`)
	b.ResetTimer()
	close(start)
	for done := 0; done < b.N; done += batch {
		evs := make([]data.NewEvent, min(batch, b.N-done))
		for i := range evs {
			evs[i] = data.NewEvent{Type: "bench", Data: payload}
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := data.AppendEvents(ctx, tx, evs)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)*subscribers/b.Elapsed().Seconds(), "deliveries/s")
}
