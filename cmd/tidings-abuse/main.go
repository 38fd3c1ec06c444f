// Command tidings-abuse is the abuse benchmark of docs/security.md: it attacks a live tidings
// node on this machine the way one hostile client cheaply could, while a well-behaved client
// keeps signing in, loading the page and exchanging messages, and reports what the attack
// cost that client and the node.
//
// Scenarios (-scenario NAME, a comma-separated list, or all):
//
//   - register-storm: parallel POST /api/auth/register for a name that is taken;
//   - login-burst: parallel wrong-password logins for one name, counting the guesses that the
//     node evaluated (answered 401) instead of refusing (429, 503);
//   - rename-flood: a signed-in user PATCHes itself with its own name and with {} as fast as it
//     can, counting the user-update events that reach a watching stream;
//   - nul-flood: signed-in sockets publish messages whose text holds U+0000;
//   - anon-replay: anonymous lastEventId=0 streams over a large log (filled first through POST
//     /api/publish with the key in TIDINGS_API_KEY, unless the log is already that large);
//   - slow-body: connections that each send a 1 MiB body a few bytes at a time.
//
// During each, the well-behaved client, from a loopback address of its own, starts a login
// every 200 ms, loads / every 500 ms, and watches the messages a second well-behaved user
// publishes over its socket every 100 ms (each started on time, whether or not the last one
// was answered, with a few at most waiting). The JSON summary, the last line of standard
// output, gives per scenario what the attack got, the well-behaved client's latencies and
// losses, the node's peak RSS and CPU seconds (with -pid), and which targets held. The command refuses a node that is
// not on a loopback address; every loop is bounded by a count and by time. It exits 1 when a
// target was missed, 2 when it could not run.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	s, err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tidings-abuse:", err)
		os.Exit(2)
	}
	if !s.Pass {
		os.Exit(1)
	}
}

// run is the whole program; it returns the summary it printed. The API key comes from the
// environment (TIDINGS_API_KEY), never from a flag, which ps and shell histories would show.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (summary, error) {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return summary{}, err
	}
	o.apiKey = getenv("TIDINGS_API_KEY")
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	b, err := newBench(ctx, o, stderr)
	if err != nil {
		return summary{}, err
	}
	defer b.close()
	s := b.runAll(ctx)
	out, err := json.Marshal(s)
	if err != nil {
		return s, fmt.Errorf("encode the summary: %w", err)
	}
	fmt.Fprintln(stdout, string(out))
	return s, nil
}

// options are the command line.
type options struct {
	url       string
	scenarios []string
	apiKey    string // TIDINGS_API_KEY: the bearer key of POST /api/publish, to fill the log
	pid       int
	timeout   time.Duration

	// The attacks' sizes.
	duration  time.Duration // rename-flood, nul-flood and anon-replay last this long
	register  int           // register-storm: parallel registrations
	guesses   int           // login-burst: parallel wrong passwords
	renamers  int           // rename-flood: PATCH loops at once
	nulSocket int           // nul-flood: sockets
	nulRate   int           // nul-flood: publishes per second per socket
	streams   int           // anon-replay: streams
	fill      int64         // anon-replay: events the log holds at least
	slow      int           // slow-body: connections
	slowHold  time.Duration // slow-body: how long each keeps sending, at most

	requestTimeout time.Duration // each request's own bound, attacker's or well-behaved
	settle         time.Duration // how long to wait for the well-behaved client's last messages

	// The local addresses the well-behaved client and the attacker connect from, so that the
	// node's per-address limits tell them apart ("" lets the system choose).
	goodFrom, abuseFrom string
}

// scenarioNames are the scenarios, in the order "all" runs them.
var scenarioNames = []string{"register-storm", "login-burst", "rename-flood", "nul-flood", "anon-replay", "slow-body"}

// Bounds of every size, so that a run always ends.
const (
	maxCount    = 20_000
	maxStreams  = 19_000 // one process holds at most about 19,990 descriptors here
	maxFill     = 10_000_000
	maxDuration = time.Hour
)

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("tidings-abuse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "the node's base URL, on a loopback address")
	scenario := fs.String("scenario", "all", "the scenarios to run, comma-separated, or all: "+strings.Join(scenarioNames, ", "))
	fs.IntVar(&o.pid, "pid", 0, "the node's process id, to report its peak RSS and CPU seconds (and its managed PostgreSQL's)")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "bound of the whole run")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long rename-flood, nul-flood and anon-replay attack")
	fs.IntVar(&o.register, "register", 500, "register-storm: registrations sent at once")
	fs.IntVar(&o.guesses, "guesses", 1000, "login-burst: wrong passwords sent at once")
	fs.IntVar(&o.renamers, "renamers", 4, "rename-flood: PATCH loops at once")
	fs.IntVar(&o.nulSocket, "nul-sockets", 4, "nul-flood: signed-in sockets")
	fs.IntVar(&o.nulRate, "nul-rate", 50, "nul-flood: publishes per second per socket (the node allows 10)")
	fs.IntVar(&o.streams, "streams", 2000, "anon-replay: anonymous lastEventId=0 streams")
	fs.Int64Var(&o.fill, "fill", 100_000, "anon-replay: events the log holds at least (filled through POST /api/publish)")
	fs.IntVar(&o.slow, "slow", 200, "slow-body: connections")
	fs.DurationVar(&o.slowHold, "slow-hold", 30*time.Second, "slow-body: how long each connection keeps sending, at most")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 30*time.Second, "bound of each request")
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "how long to wait for the well-behaved client's last messages")
	fs.StringVar(&o.goodFrom, "from-good", "", "local address of the well-behaved client (default 127.0.0.2 for an IPv4 loopback node)")
	fs.StringVar(&o.abuseFrom, "from-abuse", "", "local address of the attacker (default 127.0.0.3 for an IPv4 loopback node)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for s := range strings.SplitSeq(*scenario, ",") {
		switch s = strings.TrimSpace(s); {
		case s == "all":
			o.scenarios = append(o.scenarios, scenarioNames...)
		case slices.Contains(scenarioNames, s):
			o.scenarios = append(o.scenarios, s)
		default:
			return o, fmt.Errorf("-scenario %q: want all or some of %s", s, strings.Join(scenarioNames, ", "))
		}
	}
	for _, c := range []struct {
		name     string
		v, limit int
	}{
		{"register", o.register, maxCount}, {"guesses", o.guesses, maxCount}, {"renamers", o.renamers, 64},
		{"nul-sockets", o.nulSocket, 16}, {"nul-rate", o.nulRate, 1000}, {"streams", o.streams, maxStreams}, {"slow", o.slow, maxCount},
	} {
		if c.v < 1 || c.v > c.limit {
			return o, fmt.Errorf("-%s %d: want 1 to %d", c.name, c.v, c.limit)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"timeout", o.timeout}, {"duration", o.duration}, {"slow-hold", o.slowHold}, {"request-timeout", o.requestTimeout}, {"settle", o.settle},
	} {
		if d.v <= 0 || d.v > 2*maxDuration {
			return o, fmt.Errorf("-%s %v: want more than 0, at most %v", d.name, d.v, 2*maxDuration)
		}
	}
	if o.fill < 0 || o.fill > maxFill {
		return o, fmt.Errorf("-fill %d: want 0 to %d", o.fill, maxFill)
	}
	u, err := url.Parse(o.url)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Path != "" && u.Path != "/" {
		return o, fmt.Errorf("-url %q: want http://host:port", o.url)
	}
	o.url = "http://" + u.Host
	host := u.Hostname()
	if !isLoopback(host) {
		return o, fmt.Errorf("-url %q is not a loopback address: the abuse benchmark attacks only a node on this machine", o.url)
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		o.goodFrom = cmp.Or(o.goodFrom, "127.0.0.2")
		o.abuseFrom = cmp.Or(o.abuseFrom, "127.0.0.3")
	}
	for _, a := range []string{o.goodFrom, o.abuseFrom} {
		if ip := net.ParseIP(a); a != "" && (ip == nil || !ip.IsLoopback()) {
			return o, fmt.Errorf("-from-good, -from-abuse: %q is not a loopback address", a)
		}
	}
	return o, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
