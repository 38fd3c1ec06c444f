package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/realtime"
	"tidings/web"
	"tidings/web/webtest"
)

// TestBlackHoledHubIsNotReadyAndRecovers cuts the hub off from the database without closing
// anything (the black hole of a failover: no RST, packets vanish) while the rest of the node
// still reaches it. /readyz must say event-log-stalled within a bound, and the metrics too;
// once the network heals, the hub and its listener come back by themselves and the stream gets
// the events committed meanwhile, each once, in order. Without deadlines on the hub's reads, the
// hub would wait for TCP to give up (minutes) while /readyz said ready.
func TestBlackHoledHubIsNotReadyAndRecovers(t *testing.T) {
	t.Parallel()
	url := datatest.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), url) // direct: requests and the test's publishes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	proxy := datatest.NewProxy(t, url)
	reg := prometheus.NewRegistry()
	const poll, readTimeout = 50 * time.Millisecond, 300 * time.Millisecond
	n, err := webtest.Start(pool, webtest.Options{
		Hub: realtime.HubConfig{Poll: poll, ReadTimeout: readTimeout, Listener: data.ListenerConfig{
			Check: 100 * time.Millisecond, Timeout: readTimeout, MaxBackoff: 50 * time.Millisecond,
		}},
		Web:      web.Config{Dev: true},
		Metrics:  reg,
		StoreURL: proxy.ConnString(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Stop()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	t.Cleanup(proxy.Thaw) // before the node stops, even when the test fails frozen
	s := &testServer{URL: n.URL, pool: pool, events: n.Events, hub: n.Hub, handler: n.Handler, auth: n.Auth}

	c := s.dialLive(t)
	first := s.publishN(t, 1, "before")
	c.expectEvents(first)
	if code, reason := readyz(t, s.URL); code != http.StatusOK {
		t.Fatalf("readyz before the freeze: got %d %s, want 200", code, reason)
	}

	proxy.Freeze()
	frozenAt := time.Now()
	// A poll starts a read at most poll after the freeze, which fails readTimeout later: allow
	// for a loaded machine, far below what TCP takes to give up on a silent peer.
	bound := poll + readTimeout + 5*time.Second
	for {
		code, reason := readyz(t, s.URL)
		if code == http.StatusServiceUnavailable && reason == "event-log-stalled" {
			break
		}
		if time.Since(frozenAt) > bound {
			t.Fatalf("readyz %v after the freeze: got %d %s, want 503 event-log-stalled", bound, code, reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !n.Hub.Stalled() {
		t.Error("Hub.Stalled: got false while /readyz says event-log-stalled")
	}
	if got := metric(t, s.URL, "tidings_hub_read_ok"); got != 0 {
		t.Errorf("tidings_hub_read_ok while frozen: got %v, want 0", got)
	}
	if got := metric(t, s.URL, `tidings_hub_read_failures_total{reason="timeout"}`); got < 1 {
		t.Errorf("read timeouts while frozen: got %v, want at least 1", got)
	}
	meanwhile := s.publishN(t, 3, "meanwhile") // committed directly, while the hub cannot read

	proxy.Thaw()
	waitFor(t, "readyz 200 after the thaw", func() bool {
		code, _ := readyz(t, s.URL)
		return code == http.StatusOK
	})
	c.expectEvents(meanwhile-2, meanwhile-1, meanwhile)
	// Nothing comes twice: the next frame is the next event.
	last := s.publishN(t, 1, "after")
	c.expectEvents(last)
	if !n.Hub.Listening() || n.Hub.Stalled() {
		t.Errorf("after the thaw: listening %v, stalled %v; want true, false", n.Hub.Listening(), n.Hub.Stalled())
	}
	if got := metric(t, s.URL, "tidings_hub_read_ok"); got != 1 {
		t.Errorf("tidings_hub_read_ok after the thaw: got %v, want 1", got)
	}
	if got := metric(t, s.URL, "tidings_listener_up"); got != 1 {
		t.Errorf("tidings_listener_up after the thaw: got %v, want 1", got)
	}
}

// readyz returns the status of GET /readyz and its error code ("" when it is ready).
func readyz(t *testing.T, url string) (status int, code string) {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("readyz body: %v", err)
	}
	return resp.StatusCode, body.Error.Code
}

// metric returns the value of one series (its name, with its labels as Prometheus writes them)
// from GET /metrics, failing the test when it is missing.
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s: not found (%v)", series, sc.Err())
	return 0
}
