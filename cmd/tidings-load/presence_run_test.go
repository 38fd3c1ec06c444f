package main

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tidings/data/datatest"
	"tidings/realtime"
	"tidings/web"
	"tidings/web/webtest"
)

// TestPresenceRun is the presence run at a tiny scale against two real nodes sharing a
// database: 4 users over 8 streams, joins, leaves and signals for 3 s, a storm halfway (grace 1 s:
// the storm's streams are back within it even on a busy machine under the race detector). Every
// change and signal arrives, nothing flaps, the storm changes nobody's presence, and the
// PostgreSQL costs are read from the nodes' counters.
func TestPresenceRun(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	reg := prometheus.NewRegistry()
	m := realtime.NewMetrics(reg) // both nodes count into it: the run sums the nodes anyway
	metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer metrics.Close()
	var urls []string
	for range 2 {
		n, err := webtest.Start(pool, webtest.Options{Hub: realtime.HubConfig{Poll: time.Second, Metrics: m}, Web: web.Config{Dev: true},
			Presence: &realtime.PresenceConfig{Grace: time.Second, Metrics: m}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop()
		urls = append(urls, n.URL)
	}
	keys := []string{"sockets", "users", "nodes", "connected"}
	for _, k := range []string{"joinMs", "leaveMs", "signalMs", "missedChanges", "missedSignals", "flaps", "storm", "postgres"} {
		keys = append(keys, "presence."+k)
	}
	for _, k := range []string{"writesPerSecond", "rowsPerSecond", "notifiesPerSecond"} {
		keys = append(keys, "presence.postgres."+k)
	}
	s := runLoad(t, keys, "-presence", "-url", urls[0]+","+urls[1], "-users", "4", "-sockets", "8", "-rate", "10", "-duration", "3s",
		"-presence-grace", "1s", "-storm", "-storm-away", "100ms", "-metrics-url", metrics.URL)
	p := s.Presence
	if p == nil {
		t.Fatal("no presence in the summary")
	}
	b, _ := json.Marshal(p)
	t.Logf("%s", b)
	if s.Connected != 8 || s.Nodes != 2 || p.Users != 4 || p.Nodes != 2 {
		t.Fatalf("got %d connected over %d nodes, %d users", s.Connected, s.Nodes, p.Users)
	}
	if p.Flaps != 0 || p.MissedChanges != 0 || p.MissedSignals != 0 || p.EarlyOffline != 0 || p.UnexpectedSignals != 0 || s.failed() {
		t.Fatalf("got %d flaps, %d missed changes, %d missed signals, %d early, %d unexpected; want none",
			p.Flaps, p.MissedChanges, p.MissedSignals, p.EarlyOffline, p.UnexpectedSignals)
	}
	if p.Joins == 0 || p.Leaves == 0 || p.Signals == 0 || p.ChangesSeen == 0 || p.SignalsSeen < p.Signals {
		t.Fatalf("got %d joins, %d leaves, %d signals, %d changes and %d signals seen; want some of each, every signal seen",
			p.Joins, p.Leaves, p.Signals, p.ChangesSeen, p.SignalsSeen)
	}
	if p.JoinMs.Max <= 0 || p.LeaveMs.Max <= 0 || p.SignalMs.Max <= 0 || p.SignalMs.P50 > p.SignalMs.Max {
		t.Fatalf("times: join %+v, leave %+v, signal %+v", p.JoinMs, p.LeaveMs, p.SignalMs)
	}
	if st := p.Storm; st == nil || st.Clients == 0 || st.Ready != int64(st.Clients) || st.Flaps != 0 || st.Mismatches != 0 || st.AllReadyMs <= 0 {
		t.Fatalf("storm: got %+v", st)
	}
	if pg := p.Postgres; pg.Note != "" || pg.Writes <= 0 || pg.Rows <= 0 || pg.NotifiesByChannel["signals"] <= 0 || pg.WritesPerSecond <= 0 {
		t.Fatalf("postgres: got %+v", pg)
	}
}
