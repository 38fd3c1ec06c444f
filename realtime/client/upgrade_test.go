package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"tidings/realtime/client"
)

// refusingProxy stands in front of a node and answers the first upgrades with the given
// statuses and headers instead of passing them on; everything else reaches the node.
type refusingProxy struct {
	url string

	mu       sync.Mutex
	refusals []refusal    // guarded by mu: the answers still to give, first first
	upgrades []time.Time  // guarded by mu: when each upgrade arrived
	queries  []string     // guarded by mu: the query of each upgrade
	answered []int        // guarded by mu: the status each upgrade got (101 when passed on)
	next     http.Handler // set at construction: the node
}

// refusal is one answer of refusingProxy: a status, its error code and its Retry-After ("" for
// none).
type refusal struct {
	status     int
	code       string
	retryAfter string
}

func newRefusingProxy(t *testing.T, node string, refusals ...refusal) *refusingProxy {
	t.Helper()
	target, err := url.Parse(node)
	if err != nil {
		t.Fatal(err)
	}
	p := &refusingProxy{refusals: refusals, next: httputil.NewSingleHostReverseProxy(target)}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *refusingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/events" {
		p.next.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	p.upgrades = append(p.upgrades, time.Now())
	p.queries = append(p.queries, r.URL.RawQuery)
	if len(p.refusals) == 0 {
		p.answered = append(p.answered, http.StatusSwitchingProtocols)
		p.mu.Unlock()
		p.next.ServeHTTP(w, r)
		return
	}
	a := p.refusals[0]
	p.refusals = p.refusals[1:]
	p.answered = append(p.answered, a.status)
	p.mu.Unlock()
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":"refused by the test"}}`, a.code)
}

// seen returns when each upgrade arrived, their queries and the answers they got.
func (p *refusingProxy) seen() ([]time.Time, []string, []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.upgrades...), append([]string(nil), p.queries...), append([]int(nil), p.answered...)
}

// TestUpgradeRetriedAfter429And503: an upgrade answered 429 too-many-streams, then 503 with
// Retry-After: 1, then passed on to a real node is retried each time: the client connects, and
// delivers every event, those published before it connected and after; it waited the
// Retry-After before the third try; OnClose heard of both refusals; Run has not returned.
func TestUpgradeRetriedAfter429And503(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	p := newRefusingProxy(t, n.url(),
		refusal{http.StatusTooManyRequests, "too-many-streams", ""},
		refusal{http.StatusServiceUnavailable, "unavailable", "1"})
	n.publish(t, 4)

	closes := make(chan string, 16)
	zero := int64(0)
	c := client.New(client.Config{URL: p.url, LastEventID: &zero, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnClose: func(code int, reason string) { closes <- fmt.Sprint(code, " ", reason) }})
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runErr })

	collect(t, c, 0, 4)
	n.publish(t, 3)
	collect(t, c, 4, 3)

	for _, want := range []string{
		"-1 upgrade refused: 429 too-many-streams: refused by the test",
		"-1 upgrade refused: 503 unavailable: refused by the test",
	} {
		select {
		case got := <-closes:
			if got != want {
				t.Fatalf("OnClose: got %q, want %q", got, want)
			}
		default:
			t.Fatalf("OnClose: nothing, want %q", want)
		}
	}
	at, queries, answered := p.seen()
	if fmt.Sprint(answered) != "[429 503 101]" {
		t.Fatalf("upgrades answered %v, want [429 503 101]", answered)
	}
	for i, q := range queries {
		if q != "lastEventId=0" {
			t.Fatalf("upgrade %d asked for %q, want lastEventId=0", i+1, q)
		}
	}
	if waited := at[2].Sub(at[1]); waited < time.Second {
		t.Fatalf("the try after Retry-After: 1 came %v after the 503, want at least 1s", waited)
	}
	select {
	case err := <-runErr:
		t.Fatalf("Run returned %v while the stream was live", err)
	default:
	}
}

// TestUpgradeForbiddenIsFinal: a real node refuses an upgrade from an Origin it does not allow
// with 403 forbidden-origin, which no retry can fix: Run returns it as an *UpgradeError (and
// an *APIError) after that one try, and closes Events.
func TestUpgradeForbiddenIsFinal(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	var closes []string
	c := client.New(client.Config{URL: n.url(), Header: http.Header{"Origin": {"http://elsewhere.example"}},
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		OnClose: func(code int, reason string) { closes = append(closes, fmt.Sprint(code, " ", reason)) }})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := c.Run(ctx)
	var refused *client.UpgradeError
	if !errors.As(err, &refused) || refused.Status != http.StatusForbidden || refused.Code != "forbidden-origin" || refused.Temporary() {
		t.Fatalf("Run: got %v, want a final 403 forbidden-origin", err)
	}
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("Run: got %v, want an *APIError with status 403 too", err)
	}
	if len(closes) != 1 || !strings.HasPrefix(closes[0], "-1 upgrade refused: 403 forbidden-origin") {
		t.Fatalf("OnClose: got %q, want one upgrade refused with 403", closes)
	}
	if _, open := <-c.Events(); open {
		t.Fatal("Events is still open after Run returned")
	}
}

// TestUpgradeStatuses: which answers to an upgrade the client tries again (the next answer,
// 404, then ends Run) and which end Run at once, with their status in the error.
func TestUpgradeStatuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		retry  bool
	}{
		{400, false}, {401, false}, {403, false}, {404, false}, {405, false}, {410, false},
		{408, true}, {429, true}, {500, true}, {502, true}, {503, true}, {504, true}, {200, true},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var got []int
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				status := tc.status
				if len(got) > 0 {
					status = http.StatusNotFound
				}
				got = append(got, status)
				w.WriteHeader(status)
			}))
			defer srv.Close()
			c := client.New(client.Config{URL: srv.URL, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := c.Run(ctx)
			var refused *client.UpgradeError
			if !errors.As(err, &refused) || refused.Status != http.StatusNotFound && refused.Status != tc.status {
				t.Fatalf("Run: got %v, want an upgrade refusal", err)
			}
			want := []int{tc.status}
			if tc.retry {
				want = append(want, http.StatusNotFound)
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("upgrades answered %v, want %v", got, want)
			}
			if refused.Status != want[len(want)-1] || refused.Temporary() {
				t.Fatalf("Run returned %v, want the final %d", err, want[len(want)-1])
			}
		})
	}
}

// TestUpgradeRetryBoundedByContext: against a node that answers 503 forever, Run keeps trying
// until its context ends, and then returns nil.
func TestUpgradeRetryBoundedByContext(t *testing.T) {
	t.Parallel()
	tries := make(chan struct{}, 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case tries <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := client.New(client.Config{URL: srv.URL, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	for range 3 {
		select {
		case <-tries:
		case err := <-runErr:
			t.Fatalf("Run returned %v before its context ended", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no retry within 10s")
		}
	}
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: got %v, want nil once ctx ended", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context's end")
	}
}
