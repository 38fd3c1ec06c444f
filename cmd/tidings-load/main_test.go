package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tidings/data/datatest"
	"tidings/realtime"
	"tidings/web"
	"tidings/web/webtest"
)

func TestMain(m *testing.M) { datatest.Main(m) }

// TestSmokeRun is the load generator's own short run against a real node: a few hundred
// streams, a few seconds, then a reconnect storm (every stream dropped at once, events
// published while they are away, every stream back at once from its last id), and not one
// event missing, repeated or out of order.
func TestSmokeRun(t *testing.T) {
	t.Parallel()
	n, err := webtest.Start(datatest.NewPool(t), webtest.Options{Hub: realtime.HubConfig{Poll: time.Second},
		Web: web.Config{APIKey: "load-key"}, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()

	var out strings.Builder
	args := []string{"-url", n.URL, "-sockets", "300", "-rate", "100", "-duration", "2s", "-api-key", "load-key", "-settle", "20s",
		"-storm", "-storm-events", "5", "-storm-away", "300ms", "-pid", strconv.Itoa(os.Getpid())} // the server runs in this process
	s, err := run(context.Background(), args, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var printed map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &printed); err != nil {
		t.Fatalf("last line is not JSON: %q", lines[len(lines)-1])
	}
	for _, key := range []string{"sockets", "published", "delivered", "missing", "duplicates", "outOfOrder", "latencyMs"} {
		if _, ok := printed[key]; !ok {
			t.Errorf("summary lacks %q: %s", key, lines[len(lines)-1])
		}
	}
	if s.Connected != 300 || s.Published != 205 || s.PublishErrors != 0 {
		t.Fatalf("got %d streams, %d published, %d publish errors; want 300, 205, 0", s.Connected, s.Published, s.PublishErrors)
	}
	if s.Missing != 0 || s.Duplicates != 0 || s.OutOfOrder != 0 || s.Delivered != 300*205 {
		t.Fatalf("got %d delivered, %d missing, %d duplicates, %d out of order; want %d, 0, 0, 0",
			s.Delivered, s.Missing, s.Duplicates, s.OutOfOrder, 300*205)
	}
	st := s.Storm
	if st == nil {
		t.Fatal("no storm in the summary")
	}
	if st.Clients != 300 || st.AwayEvents != 5 || st.Ready != 300 || st.Current != 300 || st.AllCurrentMs <= 0 {
		t.Fatalf("storm: got %+v; want 300 clients, 5 events away, all 300 ready and current", *st)
	}
	if st.Missing != 0 || st.Duplicates != 0 || st.OutOfOrder != 0 {
		t.Fatalf("storm: got %d missing, %d duplicates, %d out of order; want 0, 0, 0", st.Missing, st.Duplicates, st.OutOfOrder)
	}
	if st.Replayed == nil {
		t.Errorf("storm: no replay counts from /metrics")
	}
	if st.ServerCPUSeconds <= 0 || st.GeneratorCPUSeconds <= 0 {
		t.Errorf("storm: got %v CPU-s of the server and %v of the generator; want both measured", st.ServerCPUSeconds, st.GeneratorCPUSeconds)
	}
	if s.LatencyMs.Max <= 0 || s.LatencyMs.P50 > s.LatencyMs.P99 {
		t.Fatalf("latency: got %+v", s.LatencyMs)
	}
	t.Logf("%s", lines[len(lines)-1])
}

func TestOptionsAreBounded(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-sockets", "20000"}, {"-sockets", "0"}, {"-rate", "0"}, {"-duration", "2h"},
		{"-url", "http://10.1.2.3:8080"}, {"-url", "ftp://127.0.0.1"}, {"-sources", "not-an-ip"},
		{"-storm-events", "0"}, {"-storm-wait", "0s"}, {"-peer", "nats"}, {"-actions", "dance"}, {"-actions", ","},
		{"-users", "101", "-sockets", "100"}, {"-users", "-1"}, {"-users-file", "u.json"},
		{"-presence"}, {"-presence", "-users", "1"}, {"-presence-grace", "0s"},
		{"-presence", "-users", "2", "-storm", "-storm-away", "5s"},
		{"-url", "http://127.0.0.1:1,http://10.1.2.3:2"}, {"-url", ","}, {"-metrics-url", "http://10.0.0.1/metrics"},
		{"-peer", "centrifugo", "-users", "2"}, {"-peer", "centrifugo", "-url", "http://127.0.0.1:1,http://127.0.0.1:2"},
		{"-auth-workers", "-1"}, {"-auth-sources", "70000"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	if o, err := parseOptions([]string{"-url", "http://localhost:9", "-sources", "127.0.0.2, 127.0.0.3"}, io.Discard); err != nil || len(o.sources) != 2 {
		t.Fatalf("got %+v, %v", o, err)
	}
	o, err := parseOptions([]string{"-url", "http://127.0.0.1:1/, http://127.0.0.1:2", "-presence", "-users", "3",
		"-presence-grace", "2s", "-metrics-url", "http://127.0.0.1:9/metrics", "-storm", "-storm-away", "1s"}, io.Discard)
	if err != nil || len(o.urls) != 2 || o.url != "http://127.0.0.1:1" || !o.presence || o.users != 3 ||
		o.presenceGrace != 2*time.Second || len(o.metricsURLs) != 1 {
		t.Fatalf("got %+v, %v", o, err)
	}
}
