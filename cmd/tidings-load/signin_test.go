package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tidings/data/datatest"
	"tidings/realtime"
	"tidings/web"
	"tidings/web/webtest"
)

// startNode starts a tidings node in development mode (its session cookie goes over plain
// http) that takes publishes with load-key, with presence (docs/protocol.md section 8) or without.
func startNode(t *testing.T, presence bool) *webtest.Node {
	t.Helper()
	o := webtest.Options{Hub: realtime.HubConfig{Poll: time.Second},
		Web: web.Config{APIKey: "load-key", Dev: true}, Metrics: prometheus.NewRegistry()}
	if presence {
		o.Presence = &realtime.PresenceConfig{}
	}
	n, err := webtest.Start(datatest.NewPool(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// runLoad runs the load generator with args and returns its summary, checking that the last
// line it printed is that summary as JSON, with at least the keys given in want ("presence.flaps"
// names a key of the object under "presence").
func runLoad(t *testing.T, want []string, args ...string) summary {
	t.Helper()
	var out strings.Builder
	s, err := run(context.Background(), args, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var printed map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &printed); err != nil {
		t.Fatalf("last line is not the JSON summary: %q", lines[len(lines)-1])
	}
	for _, key := range want {
		obj := printed
		path := strings.Split(key, ".")
		for _, k := range path[:len(path)-1] {
			obj, _ = obj[k].(map[string]any)
		}
		if _, ok := obj[path[len(path)-1]]; !ok {
			t.Errorf("the printed summary lacks %s: %s", key, lines[len(lines)-1])
		}
	}
	return s
}

// TestSignedInStorm: -users signs the storm's streams in, users sharing them; the users are
// registered once, kept in -users-file, and only signed in by the next run, which registers
// just the users it lacks. Nothing is missing, repeated or out of order, before or after the
// storm, and every stream's session names its user. The node has presence: its presence
// frames between the events change nothing for the run.
func TestSignedInStorm(t *testing.T) {
	t.Parallel()
	n := startNode(t, true)
	file := filepath.Join(t.TempDir(), "users.json")
	args := func(users string) []string {
		return []string{"-url", n.URL, "-sockets", "40", "-users", users, "-users-file", file, "-rate", "50", "-duration", "1s",
			"-api-key", "load-key", "-settle", "20s", "-storm", "-storm-events", "3", "-storm-away", "200ms"}
	}
	for _, round := range []struct {
		users            string
		want, registered int
	}{{"10", 10, 10}, {"12", 12, 2}} {
		s := runLoad(t, []string{"sockets", "users", "signedIn", "signIn.registered", "storm.current", "missing"}, args(round.users)...)
		if s.Users != round.want || s.SignedIn != 40 || s.SignIn == nil || s.SignIn.Registered != int64(round.registered) {
			t.Fatalf("-users %s: got %d users, %d streams signed in, sign-in %+v; want %d users, 40 streams, %d registered",
				round.users, s.Users, s.SignedIn, s.SignIn, round.want, round.registered)
		}
		if s.Connected != 40 || s.Missing != 0 || s.Duplicates != 0 || s.OutOfOrder != 0 || s.Delivered != 40*s.Published {
			t.Fatalf("got %d connected, %d delivered of %d published, %d missing, %d duplicates, %d out of order",
				s.Connected, s.Delivered, s.Published, s.Missing, s.Duplicates, s.OutOfOrder)
		}
		if st := s.Storm; st == nil || st.Current != 40 || st.Missing != 0 || st.Duplicates != 0 || st.OutOfOrder != 0 {
			t.Fatalf("storm: got %+v", st)
		}
	}
	f, err := readUsersFile(file)
	if err != nil || len(f.Names) != 12 || len(f.Password) < 16 {
		t.Fatalf("users file: got %+v, %v", f, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users file mode: got %v, %v; want 0600 (it holds a password)", fi.Mode(), err)
	}
}

// TestSignInWaitsOutTheRegisterLimit: 21 registrations from one address pass the server's 20
// per minute only by waiting for its Retry-After; spread over the default source addresses
// (one per 10 users), 40 never meet the limit.
func TestSignInWaitsOutTheRegisterLimit(t *testing.T) {
	t.Parallel()
	n := startNode(t, false)
	s := runLoad(t, nil, "-url", n.URL, "-sockets", "21", "-users", "21", "-auth-sources", "1", "-rate", "10", "-duration", "100ms",
		"-api-key", "load-key")
	if si := s.SignIn; si == nil || si.Registered != 21 || si.Retries < 1 || si.Sources != 1 || s.SignedIn != 21 {
		t.Fatalf("one address: got sign-in %+v, %d streams signed in; want 21 registered after a retry, 21 streams", si, s.SignedIn)
	}
	fresh := startNode(t, false) // whose limits no address has used yet
	s = runLoad(t, nil, "-url", fresh.URL, "-sockets", "40", "-users", "40", "-rate", "10", "-duration", "100ms", "-api-key", "load-key")
	if si := s.SignIn; si == nil || si.Registered != 40 || si.Retries != 0 || si.Sources != 4 || s.SignedIn != 40 {
		t.Fatalf("spread: got sign-in %+v, %d streams signed in; want 40 registered from 4 addresses without a retry", si, s.SignedIn)
	}
}

// TestStreamsOverTwoNodes: with two -url, the streams are spread over both nodes and each
// gets every event published through the first.
func TestStreamsOverTwoNodes(t *testing.T) {
	t.Parallel()
	a := startNode(t, false)
	b, err := webtest.Start(a.Pool, webtest.Options{Hub: realtime.HubConfig{Poll: time.Second},
		Web: web.Config{APIKey: "load-key", Dev: true}, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	s := runLoad(t, []string{"nodes"}, "-url", a.URL+","+b.URL, "-sockets", "20", "-users", "4", "-rate", "20", "-duration", "1s",
		"-api-key", "load-key", "-settle", "20s")
	if s.Nodes != 2 || s.Connected != 20 || s.SignedIn != 20 || s.Missing != 0 || s.Delivered != 20*s.Published || s.Published != 20 {
		t.Fatalf("got %d nodes, %d connected, %d signed in, %d of %d×20 delivered, %d missing",
			s.Nodes, s.Connected, s.SignedIn, s.Delivered, s.Published, s.Missing)
	}
}

// TestPresenceNeedsAServerWithPresence: against a node without presence, -presence signs its
// users in, opens their streams, and stops with an error that says what is missing.
func TestPresenceNeedsAServerWithPresence(t *testing.T) {
	t.Parallel()
	n := startNode(t, false)
	_, err := run(context.Background(), []string{"-url", n.URL, "-presence", "-users", "3", "-sockets", "6", "-duration", "1s"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no presence frame") {
		t.Fatalf("got %v, want an error about the missing presence frames", err)
	}
}
