package data_test

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"tidings/data"
	"tidings/data/datatest"
)

// BenchmarkAppend measures appends per second: one event per transaction from 1 and 8
// writers (each transaction serializes on the counter row and pays its own commit), and 8
// writers through the group-committing Publisher. Compare events/s across the sub-benchmarks.
func BenchmarkAppend(b *testing.B) {
	payload := json.RawMessage(`{"text":"hello, tidings"}`)
	direct := func(ctx context.Context, pool pgxBeginner, p *data.Publisher) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := data.AppendEvents(ctx, tx, []data.NewEvent{{Type: "bench", Data: payload}})
			return err
		})
	}
	grouped := func(ctx context.Context, _ pgxBeginner, p *data.Publisher) error {
		_, err := p.Publish(ctx, []data.NewEvent{{Type: "bench", Data: payload}})
		return err
	}
	for _, bc := range []struct {
		name    string
		writers int
		append  func(context.Context, pgxBeginner, *data.Publisher) error
	}{
		{"txn-per-event/writers=1", 1, direct},
		{"txn-per-event/writers=8", 8, direct},
		{"publisher/writers=1", 1, grouped},
		{"publisher/writers=8", 8, grouped},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pool := datatest.NewPool(b)
			p := data.NewPublisher(pool, data.PublisherConfig{})
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range bc.writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := bc.append(ctx, pool, p); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

type pgxBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// BenchmarkPresenceFlush measures one flush of 100 users coming and 100 leaving, on a node
// that holds 1,100: one statement that updates the node's row, deletes 100 rows, inserts 100
// and notifies the delta. Compare flushes/s with the 4 flushes a second a busy node makes.
func BenchmarkPresenceFlush(b *testing.B) {
	ctx := context.Background()
	pool := datatest.NewPool(b)
	p, err := data.NewPresence(ctx, pool)
	if err != nil {
		b.Fatal(err)
	}
	ids := func(from int64) []int64 {
		s := make([]int64, 100)
		for i := range s {
			s[i] = from + int64(i)
		}
		return s
	}
	x, y := ids(1), ids(101)
	base := make([]int64, 0, 1100)
	for i := range int64(10) {
		base = append(base, ids(1000+100*i)...)
	}
	if err := p.Replace(ctx, "bench", 0, append(base, y...)); err != nil {
		b.Fatal(err)
	}
	seq := int64(0)
	for b.Loop() {
		seq++
		on, off := x, y
		if seq%2 == 0 {
			on, off = y, x
		}
		if err := p.Flush(ctx, "bench", seq, on, off); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flushes/s")
}
