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

	"tidings/data/datatest"
	"tidings/web"
	"tidings/web/webtest"
)

func TestMain(m *testing.M) { datatest.Main(m) }

// TestEveryScenarioAtTinyScale runs every scenario against an in-process node, a few requests
// each, and checks the summary: its shape, what each attack got, and that the well-behaved
// client's messages all arrived.
func TestEveryScenarioAtTinyScale(t *testing.T) {
	t.Parallel()
	n, err := webtest.Start(datatest.NewPool(t), webtest.Options{Web: web.Config{APIKey: "abuse-key"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()

	var out, progress strings.Builder
	args := []string{"-url", n.URL, "-scenario", "all", "-pid", strconv.Itoa(os.Getpid()),
		"-duration", "2s", "-register", "5", "-guesses", "5", "-renamers", "2", "-nul-sockets", "2", "-nul-rate", "20",
		"-streams", "5", "-fill", "300", "-slow", "5", "-slow-hold", "500ms", "-settle", "10s", "-request-timeout", "10s", "-timeout", "2m"}
	getenv := func(k string) string {
		if k == "TIDINGS_API_KEY" {
			return "abuse-key"
		}
		return ""
	}
	s, err := run(context.Background(), args, getenv, &out, &progress)
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	var printed struct {
		Targets   map[string]float64           `json:"targets"`
		Scenarios []map[string]json.RawMessage `json:"scenarios"`
	}
	if err := json.Unmarshal([]byte(last), &printed); err != nil {
		t.Fatalf("the last line is not the summary: %q: %v", last, err)
	}
	if len(printed.Targets) != 4 || len(printed.Scenarios) != len(scenarioNames) {
		t.Fatalf("got %d targets and %d scenarios, want 4 and %d: %s", len(printed.Targets), len(printed.Scenarios), len(scenarioNames), last)
	}
	for i, sc := range printed.Scenarios {
		for _, key := range []string{"name", "attack", "wellBehaved", "server", "checks", "pass"} {
			if _, ok := sc[key]; !ok {
				t.Errorf("scenario %d lacks %q", i, key)
			}
		}
	}

	for i, sc := range s.Scenarios {
		if sc.Name != scenarioNames[i] || sc.Error != "" {
			t.Fatalf("scenario %d: got %q, error %q; want %q and no error", i, sc.Name, sc.Error, scenarioNames[i])
		}
		w := sc.WellBehaved
		if w.Published == 0 || w.Lost != 0 || w.Delivered < w.Published || w.LoginMs.N == 0 || w.PageMs.N == 0 {
			t.Errorf("%s: the well-behaved client: got %+v; want messages published, every one delivered, logins and pages", sc.Name, *w)
		}
		if sc.Server == nil || sc.Server.PeakRSSBytes <= 0 || sc.Server.Exited {
			t.Errorf("%s: got server figures %+v; want this process's", sc.Name, sc.Server)
		}
		if _, ok := sc.Checks["login"]; !ok {
			t.Errorf("%s: no login check in %v", sc.Name, sc.Checks)
		}
		checkAttack(t, sc.Name, sc.Attack)
	}
}

// checkAttack checks that an attack ran at the size asked, and counted what it got.
func checkAttack(t *testing.T, name string, a attackResult) {
	t.Helper()
	sum := func(m map[string]int64) (n int64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	switch r := a.(type) {
	case burstResult: // register-storm
		if r.Requests != 5 || sum(r.Answers) != 5 || r.Answers["409"] != 5 {
			t.Errorf("%s: got %+v; want 5 answered 409", name, r)
		}
	case *loginResult:
		if r.Requests != 5 || sum(r.Answers) != 5 || r.GuessesThrough != r.Answers["401"] {
			t.Errorf("%s: got %+v; want 5 answered, the 401s counted as guesses", name, r)
		}
	case *renameResult:
		if r.Patches == 0 || sum(r.Answers) != r.Patches {
			t.Errorf("%s: got %+v; want PATCHes, every one answered", name, r)
		}
	case *nulResult:
		if r.Sent == 0 || sum(r.Answers) == 0 || r.Answers["ack"] != 0 || r.Delivered != 0 {
			t.Errorf("%s: got %+v; want publishes answered, none stored", name, r)
		}
	case *replayResult:
		// The log holds at least 300 events, of which the anonymous streams see those of the
		// fill (the rename flood's are for signed-in streams).
		if r.Opened != 5 || r.Ready != 5 || r.LogEvents < 300 || r.Frames < 5*3 {
			t.Errorf("%s: got %+v; want 5 streams that replayed a log of at least 300 events", name, r)
		}
	case *slowResult:
		if r.Opened != 5 || r.Held+r.Cut+sum(r.Answered) != 5 || r.SentBytes == 0 {
			t.Errorf("%s: got %+v; want 5 slow bodies, each held, cut or answered", name, r)
		}
	default:
		t.Errorf("%s: unexpected attack result %T", name, a)
	}
}

func TestOptionsAreBounded(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-url", "http://10.1.2.3:8080"}, {"-url", "http://example.com"}, {"-url", "https://127.0.0.1:8080"},
		{"-scenario", "nope"}, {"-register", "0"}, {"-guesses", "100000"}, {"-streams", "20000"},
		{"-duration", "0s"}, {"-timeout", "5h"}, {"-fill", "-1"}, {"-from-abuse", "10.0.0.1"}, {"extra"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	o, err := parseOptions([]string{"-url", "http://127.0.0.1:9", "-scenario", "login-burst,slow-body"}, io.Discard)
	if err != nil || len(o.scenarios) != 2 || o.goodFrom != "127.0.0.2" || o.abuseFrom != "127.0.0.3" || o.timeout != 20*time.Minute {
		t.Fatalf("got %+v, %v", o, err)
	}
}
