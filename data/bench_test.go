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
