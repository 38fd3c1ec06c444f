package realtime

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"tidings/data"
	"tidings/data/datatest"
)

// TestHubReadRetriesOnAFreshConnection black-holes every connection open to the database (a
// failover that moved its address: the open connections hang without a RST, new ones reach the
// new server) and never heals them. The hub's next read must time out, and the next one after
// it succeed on a fresh connection, so that the hub reads what was committed meanwhile.
// Without a deadline the hub waits on the dead connection for as long as TCP retries.
func TestHubReadRetriesOnAFreshConnection(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := datatest.NewDatabase(t)
	direct := datatest.OpenPool(t, url)
	proxy := datatest.NewProxy(t, url)
	hubPool := datatest.OpenPool(t, proxy.ConnString())
	t.Cleanup(proxy.Close) // before the pools close: pgx waits for a frozen connection's close
	reg := prometheus.NewRegistry()
	hub := NewHub(data.NewEvents(hubPool), HubConfig{Poll: 20 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, Metrics: NewMetrics(reg)})
	hubCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() { hub.Run(hubCtx) })

	publish := func() int64 {
		t.Helper()
		var ids []int64
		err := pgx.BeginFunc(ctx, direct, func(tx pgx.Tx) error {
			var err error
			ids, err = data.AppendEvents(ctx, tx, []data.NewEvent{{Type: "e"}})
			return err
		})
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		return ids[0]
	}
	first := publish()
	waitUntil(t, "the hub reads the first event", func() bool { return hub.Head() == first })

	opened := proxy.Opened()
	proxy.FreezeOpen() // the pool's idle connections among them
	id := publish()
	waitUntil(t, "the hub reads past the failover", func() bool { return hub.Head() == id })
	if got := gathered(t, reg, "tidings_hub_read_failures_total", "timeout"); got < 1 {
		t.Errorf("read timeouts: got %v, want at least 1 (the read on the frozen connection)", got)
	}
	if got := proxy.Opened(); got <= opened {
		t.Errorf("connections opened through the proxy: got %d, want more than %d", got, opened)
	}
	if ok := gathered(t, reg, "tidings_hub_read_ok", ""); hub.Stalled() || ok != 1 {
		t.Errorf("after recovering: stalled %v, tidings_hub_read_ok %v; want false, 1", hub.Stalled(), ok)
	}
}

// gathered returns the value of the gauge or counter name in reg, of the series whose one label
// has the value label ("" for a metric without labels).
func gathered(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if ls := m.GetLabel(); (label == "" && len(ls) == 0) || (len(ls) == 1 && ls[0].GetValue() == label) {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{%s}: not found", name, label)
	return 0
}
