// Command tidings-load drives a tidings server with many streams and a steady publish rate, and
// checks every delivery: it opens N anonymous streams, publishes R events per second for D
// through POST /api/publish (one event per call, type "load", audience everyone), waits for
// delivery, and prints a JSON summary as the last line of its standard output. It exits 1 when
// any event is missing, duplicated or out of order (docs/protocol.md section 7).
//
// With -storm it then drops every stream at once, publishes a few events while they are away,
// reconnects them all at once from their last ids, and reports how long each took to be
// current (docs/performance.md, "Reconnect storm").
//
// With -users N the streams are signed in: N users (registered, or read from -users-file and
// signed in) share them, each user's streams sharing its cookie jar, so that the same storm can
// be timed with signed-in streams (which receive presence, docs/protocol.md section 8).
//
// With -presence it measures presence and signals instead of events: N users over the
// streams, on one or more nodes (-url a,b,c), then -rate actions per second for -duration
// (joins, leaves, typing signals), reporting the time from each action to its arrival at every
// other stream, what went missing, the flaps, and the PostgreSQL writes and notifications it
// cost (docs/performance.md, "Presence and signals"). It exits 1 on a flap, a missed signal
// or a missed change.
//
// With -peer centrifugo it drives Centrifugo instead, with the same sockets, rate, data and
// checks, for the comparison of docs/performance.md, "Against the peer" (compare.sh runs both).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	s, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tidings-load:", err)
		os.Exit(2)
	}
	if s.failed() {
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	url         string   // the first of urls: where events are published and users signed in
	urls        []string // every node: streams are spread over them
	sockets     int
	rate        float64
	duration    time.Duration
	apiKey      string
	ramp        float64
	settle      time.Duration
	sources     []string
	pid         int
	allowRemote bool
	cpuProfile  string

	// The reconnect storm: after the publishing, drop every socket at once, publish
	// stormEvents while they are away (at least stormAway), reconnect all at once and wait up
	// to stormWait until each is current.
	storm       bool
	stormEvents int
	stormAway   time.Duration
	stormWait   time.Duration

	// The peer to drive instead of tidings ("" or "centrifugo"), and its channel.
	peer    string
	channel string

	// Signed-in streams: users share the streams; usersFile keeps them between runs;
	// authWorkers and authSources bound and spread the registrations and logins.
	users       int
	usersFile   string
	authWorkers int
	authSources int

	// The presence run: actions at rate for duration; presenceGrace is the server's
	// TIDINGS_PRESENCE_GRACE; metricsURLs are where the PostgreSQL costs are read.
	presence      bool
	presenceGrace time.Duration
	metricsURLs   []string
	// actions are the kinds of action the presence run makes: join, leave, typing.
	actions map[string]bool
}

// Limits that keep a run bounded.
const (
	maxSockets     = 19_000 // one process holds at most about 19,990 descriptors here
	maxDuration    = time.Hour
	maxRate        = 100_000
	maxAuthSources = 65_536
)

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("tidings-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	urls := fs.String("url", "http://127.0.0.1:8080", "the server's base URL, or several nodes' comma-separated: streams are spread over them; events are published and users signed in through the first")
	fs.IntVar(&o.sockets, "sockets", 100, "streams to open (at most 19,000 per process)")
	fs.Float64Var(&o.rate, "rate", 10, "events published per second (with -presence: actions per second)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to publish (with -presence: to act)")
	fs.StringVar(&o.apiKey, "api-key", os.Getenv("TIDINGS_API_KEY"), "bearer key of POST /api/publish")
	fs.Float64Var(&o.ramp, "ramp", 2000, "streams opened per second")
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "how long to wait for the last deliveries")
	sources := fs.String("sources", "", "comma-separated local addresses to spread streams over (e.g. 127.0.0.2,127.0.0.3), for more streams than one address has ports")
	fs.IntVar(&o.pid, "pid", 0, "the server's process id, to report its CPU seconds and peak memory")
	fs.BoolVar(&o.allowRemote, "allow-remote", false, "allow a server that is not on a loopback address")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	fs.BoolVar(&o.storm, "storm", false, "after publishing, drop every socket at once, publish -storm-events, reconnect all at once from their last ids and time until each is current")
	fs.IntVar(&o.stormEvents, "storm-events", 10, "events published while the storm's sockets are away")
	fs.DurationVar(&o.stormAway, "storm-away", time.Second, "how long the storm's sockets stay away, at least")
	fs.DurationVar(&o.stormWait, "storm-wait", 30*time.Second, "how long to wait for every reconnected socket to be current")
	fs.StringVar(&o.peer, "peer", "", `drive a peer server instead of tidings: "centrifugo" (-url is its HTTP address, -api-key its HTTP API key)`)
	fs.StringVar(&o.channel, "channel", "load:bench", "the peer's channel (in a namespace with history and recovery)")
	fs.IntVar(&o.users, "users", 0, "sign the streams in: this many users share them (each -sockets/-users streams with one cookie jar); 0: anonymous streams")
	fs.StringVar(&o.usersFile, "users-file", "", "keep the users created (names and their password) in this file, and sign in those it holds instead of registering them again")
	fs.IntVar(&o.authWorkers, "auth-workers", 0, "registrations and logins at once (default 4 per node: a node hashes a few passwords at once and refuses more with 503)")
	fs.IntVar(&o.authSources, "auth-sources", 0, "loopback source addresses (127.77.x.y) to spread registrations and logins over, for the server's per-address limits; 0: one per 10 users, against a loopback server")
	fs.BoolVar(&o.presence, "presence", false, "measure presence and signals (needs -users): joins, leaves and typing signals at -rate per second for -duration; with -storm every stream also reconnects at once mid-run")
	fs.DurationVar(&o.presenceGrace, "presence-grace", 5*time.Second, "the server's TIDINGS_PRESENCE_GRACE: a leave is timed from the end of the grace")
	actions := fs.String("actions", "join,leave,typing", "the presence run's kinds of action, comma-separated: join, leave, typing (typing alone: every user online, each action a signal)")
	metricsURLs := fs.String("metrics-url", "", "comma-separated /metrics addresses for the presence run's PostgreSQL costs (default: each -url's /metrics)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	switch {
	case o.sockets < 1 || o.sockets > maxSockets:
		return o, fmt.Errorf("-sockets %d: want 1 to %d (run several processes for more)", o.sockets, maxSockets)
	case o.rate <= 0 || o.rate > maxRate:
		return o, fmt.Errorf("-rate %g: want more than 0, at most %d", o.rate, maxRate)
	case o.duration <= 0 || o.duration > maxDuration:
		return o, fmt.Errorf("-duration %v: want more than 0, at most %v", o.duration, maxDuration)
	case o.ramp <= 0:
		return o, fmt.Errorf("-ramp %g: want more than 0", o.ramp)
	case o.stormEvents < 1 || o.stormEvents > maxRate:
		return o, fmt.Errorf("-storm-events %d: want 1 to %d", o.stormEvents, maxRate)
	case o.stormAway < 0 || o.stormAway > maxDuration || o.stormWait <= 0 || o.stormWait > maxDuration:
		return o, fmt.Errorf("-storm-away %v, -storm-wait %v: want 0 to %v, more than 0 to %v", o.stormAway, o.stormWait, maxDuration, maxDuration)
	case o.peer != "" && o.peer != "centrifugo":
		return o, fmt.Errorf("-peer %q: want centrifugo or nothing", o.peer)
	case o.users < 0 || o.users > o.sockets:
		return o, fmt.Errorf("-users %d: want 0 to -sockets (%d): each user holds at least one stream", o.users, o.sockets)
	case o.usersFile != "" && o.users == 0:
		return o, errors.New("-users-file needs -users")
	case o.authWorkers < 0 || o.authWorkers > 1024:
		return o, fmt.Errorf("-auth-workers %d: want 1 to 1024 (0: 4 per node)", o.authWorkers)
	case o.authSources < 0 || o.authSources > maxAuthSources:
		return o, fmt.Errorf("-auth-sources %d: want 0 to %d", o.authSources, maxAuthSources)
	case o.presence && o.users < 2:
		return o, errors.New("-presence needs -users, at least 2: the users watch each other")
	case o.presenceGrace <= 0 || o.presenceGrace > maxDuration:
		return o, fmt.Errorf("-presence-grace %v: want more than 0, at most %v", o.presenceGrace, maxDuration)
	case o.presence && o.storm && o.stormAway >= o.presenceGrace:
		return o, fmt.Errorf("-storm-away %v: want less than -presence-grace (%v), or the users go offline", o.stormAway, o.presenceGrace)
	case o.peer != "" && (o.users > 0 || o.presence):
		return o, errors.New("-users and -presence drive tidings only, not a -peer")
	}
	if o.urls, err = parseURLs("-url", *urls, o.allowRemote); err != nil {
		return o, err
	}
	if len(o.urls) == 0 {
		return o, errors.New("-url: want at least one http(s)://host:port")
	}
	o.url = o.urls[0]
	if o.authWorkers == 0 {
		o.authWorkers = min(1024, 4*len(o.urls))
	}
	if o.peer != "" && len(o.urls) > 1 {
		return o, errors.New("-url: one address for a -peer")
	}
	if o.metricsURLs, err = parseURLs("-metrics-url", *metricsURLs, o.allowRemote); err != nil {
		return o, err
	}
	o.actions = map[string]bool{}
	for a := range strings.SplitSeq(*actions, ",") {
		switch a = strings.TrimSpace(a); a {
		case "join", "leave", "typing":
			o.actions[a] = true
		case "":
		default:
			return o, fmt.Errorf("-actions: %q is not join, leave or typing", a)
		}
	}
	if len(o.actions) == 0 {
		return o, errors.New("-actions: want at least one of join, leave, typing")
	}
	for s := range strings.SplitSeq(*sources, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if net.ParseIP(s) == nil {
				return o, fmt.Errorf("-sources: %q is not an IP address", s)
			}
			o.sources = append(o.sources, s)
		}
	}
	return o, nil
}

// parseURLs reads a comma-separated list of http(s) addresses, each on a loopback address
// unless allowRemote.
func parseURLs(flagName, list string, allowRemote bool) ([]string, error) {
	var out []string
	for s := range strings.SplitSeq(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s %q: want http(s)://host:port", flagName, s)
		}
		if !allowRemote && !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%s %q is not a loopback address; load tests stay on this machine unless -allow-remote", flagName, s)
		}
		out = append(out, strings.TrimRight(s, "/"))
	}
	return out, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// run is the whole program; it returns the summary it printed.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (summary, error) {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return summary{}, err
	}
	if o.apiKey == "" && !o.presence {
		return summary{}, errors.New("an API key is needed to publish (-api-key or TIDINGS_API_KEY)")
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return summary{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return summary{}, err
		}
		defer pprof.StopCPUProfile()
	}
	var accounts []*account
	var signedIn *signInStats
	if o.users > 0 {
		if accounts, signedIn, err = signIn(ctx, o, stderr); err != nil {
			return summary{}, err
		}
	}
	var s summary
	if o.presence {
		s, err = newPresenceRun(o, accounts, stderr).run(ctx)
	} else {
		var srv server = newTidings(o)
		if o.peer == "centrifugo" {
			srv = newCentrifugo(o)
		}
		s, err = newLoad(o, srv, accounts, stderr).run(ctx)
	}
	if err != nil {
		return s, err
	}
	s.SignIn = signedIn
	b, _ := json.Marshal(s)
	fmt.Fprintln(stdout, string(b))
	return s, nil
}
