package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"tidings/realtime/client"
)

// summary is the last line of a run (docs/protocol.md section 7, plus what a load test also wants).
type summary struct {
	Peer                string           `json:"peer,omitempty"`
	Sockets             int              `json:"sockets"`
	Users               int              `json:"users,omitempty"` // signed-in streams: how many users share them
	SignedIn            int64            `json:"signedIn"`        // streams whose first session frame named an account
	SignIn              *signInStats     `json:"signIn,omitempty"`
	Nodes               int              `json:"nodes"`
	Connected           int              `json:"connected"`
	ConnectMs           quantiles        `json:"connectMs"`
	Published           int64            `json:"published"`
	PublishErrors       int64            `json:"publishErrors"`
	Delivered           int64            `json:"delivered"`
	Missing             int64            `json:"missing"`
	Duplicates          int64            `json:"duplicates"`
	OutOfOrder          int64            `json:"outOfOrder"`
	Reconnects          int64            `json:"reconnects"`
	DeliveriesPerSecond float64          `json:"deliveriesPerSecond"`
	LatencyMs           quantiles        `json:"latencyMs"`
	Storm               *stormSummary    `json:"storm,omitempty"`
	Presence            *presenceSummary `json:"presence,omitempty"`
	Server              *serverUsage     `json:"server,omitempty"`
	GeneratorCPUSeconds float64          `json:"generatorCpuSeconds"` // this process's own, on the same machine
	MachineCPUSeconds   float64          `json:"machineCpuSeconds"`   // every process's on the machine, these two included
	Elapsed             time.Duration    `json:"-"`
	ElapsedSeconds      float64          `json:"elapsedSeconds"`
}

// failed reports whether the run found the server at fault: an event missing, repeated or out
// of order, or in a presence run a flap, a missed signal or a missed presence change.
func (s summary) failed() bool {
	if s.Missing > 0 || s.Duplicates > 0 || s.OutOfOrder > 0 {
		return true
	}
	return s.Presence != nil && s.Presence.failed()
}

type quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func quantilesOf(h *hdrhistogram.Histogram) quantiles {
	ms := func(us int64) float64 { return math.Round(float64(us)/10) / 100 }
	return quantiles{P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)), Max: ms(h.Max())}
}

// histogram ranges, in microseconds: 1µs to 10 minutes, 3 significant digits.
func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 600_000_000, 3) }

// shards of the latency histogram, so that thousands of sockets do not share one lock.
const shards = 64

type shard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// stream is one socket as the load generator sees it: tidings' Go client, or a client of the
// peer that delivers the same way (client.Event with the stream position as its ID).
type stream interface {
	Run(ctx context.Context) error
	Events() <-chan client.Event
	Stats() client.Stats
}

// server is the kind of server under load: how to open a stream to it and how to publish.
type server interface {
	// open returns a stream to node (an index in options.urls) that resumes where prev left
	// off (nil: start live).
	open(hc *http.Client, node int, prev stream, h hooks) stream
	// publish sends one event carrying data and returns its position in the streams (the event
	// id, or the peer's offset).
	publish(ctx context.Context, hc *http.Client, data []byte) (int64, error)
}

// hooks are what a stream calls on each (re)connection: opened on the server's first frame
// (the upgrade is done), ready once it has caught up, ended when the connection (or the
// attempt) ended before the run did. Any may be nil.
type hooks struct {
	opened, ready, ended func()
	// account is called, after opened, when the session frame names an account.
	account func()
}

func (h hooks) callAccount() {
	if h.account != nil {
		h.account()
	}
}

func (h hooks) callEnded() {
	if h.ended != nil {
		h.ended()
	}
}

func (h hooks) callOpened() {
	if h.opened != nil {
		h.opened()
	}
}

func (h hooks) callReady() {
	if h.ready != nil {
		h.ready()
	}
}

// socket is one of the N streams and what owns it.
type socket struct {
	hc     *http.Client
	node   int // the index of its node in options.urls
	s      stream
	cancel context.CancelFunc
	done   sync.WaitGroup // Run and consume
}

// load is one run.
type load struct {
	o        options
	srv      server
	accounts []*account // the users that share the streams; none: anonymous streams
	stderr   io.Writer
	runID    string

	latency [shards]shard
	connect shard

	published     atomic.Int64
	publishErrors atomic.Int64
	newest        atomic.Int64 // the highest position a publish returned
	connected     atomic.Int64
	signedIn      atomic.Int64
	delivered     atomic.Int64
	reconnects    atomic.Int64
	perSocket     []atomic.Int64 // this run's load events each socket received
	stormMu       sync.Mutex
	storming      *storm // guarded by stormMu: the storm in progress, for the progress line
}

func newLoad(o options, srv server, accounts []*account, stderr io.Writer) *load {
	var id [6]byte
	rand.Read(id[:])
	l := &load{o: o, srv: srv, accounts: accounts, stderr: stderr, runID: hex.EncodeToString(id[:]), perSocket: make([]atomic.Int64, o.sockets)}
	for i := range l.latency {
		l.latency[i].h = newHistogram()
	}
	l.connect.h = newHistogram()
	return l
}

// loadData is what each published event carries: when it was sent, and which run sent it.
type loadData struct {
	T   int64  `json:"t"`
	Run string `json:"run"`
}

func (l *load) run(ctx context.Context) (summary, error) {
	meter := startMeter(l.o.pid)
	start, usage := meter.start, meter.usage
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	transports := l.transports()
	sockets := make([]*socket, l.o.sockets)
	ready := make(chan struct{}, l.o.sockets)
	progressDone := make(chan struct{})
	go l.progress(ctx, start, usage, progressDone)

	// Open the streams at the ramp rate.
	interval := time.Duration(float64(time.Second) / l.o.ramp)
	for i := range sockets {
		if ctx.Err() != nil {
			break
		}
		var jar http.CookieJar
		if len(l.accounts) > 0 {
			jar = l.accounts[i%len(l.accounts)].jar // the user's streams share its session
		} else {
			jar, _ = cookiejar.New(nil)
		}
		sk := &socket{hc: &http.Client{Jar: jar, Transport: transports[i%len(transports)]}, node: i % len(l.o.urls)}
		opened := time.Now()
		var seen, account atomic.Bool
		sk.s = l.srv.open(sk.hc, sk.node, nil, hooks{account: func() {
			if !account.Swap(true) {
				l.signedIn.Add(1)
			}
		}, ready: func() {
			if seen.Swap(true) {
				l.reconnects.Add(1)
				return
			}
			l.record(&l.connect, time.Since(opened))
			l.connected.Add(1)
			ready <- struct{}{}
		}})
		sockets[i] = sk
		l.start(ctx, i, sk, nil)
		if i%100 == 99 {
			time.Sleep(100 * interval) // the ramp
		}
	}
	// Publish only once every stream is live (or the ramp gave up).
	waitAll := time.After(time.Minute + time.Duration(float64(l.o.sockets)/l.o.ramp*float64(time.Second)))
	for n := 0; n < l.o.sockets; n++ {
		select {
		case <-ready:
		case <-waitAll:
			n = l.o.sockets
		case <-ctx.Done():
			n = l.o.sockets
		}
	}
	pubStart := time.Now()
	l.publish(ctx, int64(l.o.rate*l.o.duration.Seconds()), l.o.rate)
	pubElapsed := time.Since(pubStart)
	l.settle(ctx)

	deliveredLive := l.delivered.Load()
	var stats client.Stats // of streams the storm dropped
	var storm *stormSummary
	if l.o.storm && ctx.Err() == nil {
		storm, stats = l.runStorm(ctx, sockets)
	}
	s := summary{
		Sockets: l.o.sockets, Users: len(l.accounts), Nodes: len(l.o.urls), SignedIn: l.signedIn.Load(), Connected: int(l.connected.Load()), Published: l.published.Load(),
		PublishErrors: l.publishErrors.Load(), Delivered: l.delivered.Load(),
		Reconnects: l.reconnects.Load(), Storm: storm, Peer: l.o.peer,
	}
	s.Missing = l.missing()
	s.Duplicates, s.OutOfOrder = stats.Duplicates, stats.OutOfOrder
	for _, sk := range sockets {
		if sk != nil {
			st := sk.s.Stats()
			s.Duplicates += st.Duplicates
			s.OutOfOrder += st.OutOfOrder
		}
	}
	cancel()
	for _, sk := range sockets {
		if sk != nil {
			sk.done.Wait()
		}
	}
	<-progressDone
	all := newHistogram()
	for i := range l.latency {
		all.Merge(l.latency[i].h)
	}
	s.LatencyMs = quantilesOf(all)
	s.ConnectMs = quantilesOf(l.connect.h)
	s.DeliveriesPerSecond = math.Round(float64(deliveredLive) / max(pubElapsed, time.Millisecond).Seconds())
	meter.finish(&s)
	return s, nil
}

// start runs socket i's stream and its consumer until ctx ends or the socket is dropped.
func (l *load) start(ctx context.Context, i int, sk *socket, st *storm) {
	ctx, sk.cancel = context.WithCancel(ctx)
	sk.done.Go(func() { sk.s.Run(ctx) })
	sk.done.Go(func() { l.consume(i, sk.s, st) })
}

// settle waits for the last deliveries: every connected stream has every published event.
func (l *load) settle(ctx context.Context) {
	deadline := time.Now().Add(l.o.settle)
	for time.Now().Before(deadline) && ctx.Err() == nil && l.delivered.Load() < l.published.Load()*l.connected.Load() {
		time.Sleep(20 * time.Millisecond)
	}
}

// missing is how many of the published events the streams lack, summed over every socket.
func (l *load) missing() int64 {
	published := l.published.Load()
	var n int64
	for i := range l.perSocket {
		n += max(0, published-l.perSocket[i].Load())
	}
	return n
}

// transports gives each local source address its own dialer.
func (l *load) transports() []http.RoundTripper {
	if len(l.o.sources) == 0 {
		return []http.RoundTripper{&http.Transport{MaxIdleConnsPerHost: 16}}
	}
	var out []http.RoundTripper
	for _, s := range l.o.sources {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(s)}, Timeout: 10 * time.Second, Control: bindAddressNoPort}
		out = append(out, &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16})
	}
	return out
}

func (l *load) record(s *shard, d time.Duration) {
	s.mu.Lock()
	s.h.RecordValue(max(1, d.Microseconds()))
	s.mu.Unlock()
}

// consume counts socket i's deliveries of this run's events and their latency; during a storm
// it also notes when the socket has the newest event published before the reconnect.
func (l *load) consume(i int, s stream, st *storm) {
	sh := &l.latency[i%shards]
	for ev := range s.Events() {
		if ev.Type != "load" {
			continue
		}
		sent, ok := l.sentAt(ev.Data)
		if !ok {
			continue
		}
		if st == nil {
			l.record(sh, time.Since(sent)) // a storm's events waited on purpose
		}
		l.perSocket[i].Add(1)
		l.delivered.Add(1)
		if st != nil && ev.ID >= st.target {
			st.mark(i, hasNewest)
		}
	}
}

// sentAt reads the send time of one of this run's events without a full JSON decode: at
// 200,000 deliveries a second the load generator must not be what limits the run.
func (l *load) sentAt(data []byte) (time.Time, bool) {
	if !bytes.Contains(data, []byte(l.runID)) {
		return time.Time{}, false
	}
	i := bytes.Index(data, []byte(`"t":`))
	if i < 0 {
		return time.Time{}, false
	}
	rest := bytes.TrimLeft(data[i+4:], " ")
	end := bytes.IndexAny(rest, ",} ")
	if end < 0 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return time.Unix(0, n), err == nil
}

// publish sends total events at rate per second, one per call, from a pool of workers.
func (l *load) publish(ctx context.Context, total int64, rate float64) {
	workers := min(256, max(4, int(rate/50)))
	jobs := make(chan struct{}, workers*4)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range jobs {
				d, _ := json.Marshal(loadData{T: time.Now().UnixNano(), Run: l.runID})
				pos, err := l.srv.publish(ctx, hc, d)
				if err != nil {
					l.publishErrors.Add(1)
					continue
				}
				l.published.Add(1)
				for n := l.newest.Load(); pos > n && !l.newest.CompareAndSwap(n, pos); n = l.newest.Load() {
				}
			}
		})
	}
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := int64(0)
loop:
	for sent < total {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		due := min(total, int64(rate*time.Since(start).Seconds()))
		for ; sent < due; sent++ {
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				break loop
			}
		}
	}
	close(jobs)
	wg.Wait()
	hc.CloseIdleConnections()
}

// post sends one JSON body to a server's publish endpoint and decodes its JSON answer.
func post(ctx context.Context, hc *http.Client, endpoint string, header http.Header, body []byte, answer any) error {
	req, err := http.NewRequestWithContext(ctx, "POST", endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = header.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish: %s: %.200s", resp.Status, b)
	}
	if err := json.Unmarshal(b, answer); err != nil {
		return fmt.Errorf("publish: answer %.200q: %w", b, err)
	}
	return nil
}

// progress prints a status line every second until the run ends.
func (l *load) progress(ctx context.Context, start time.Time, usage *usageSampler, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastDelivered int64
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(l.stderr)
			return
		case <-t.C:
		}
		usage.sample()
		d := l.delivered.Load()
		storm := ""
		l.stormMu.Lock()
		if l.storming != nil {
			storm = l.storming.progress()
		}
		l.stormMu.Unlock()
		fmt.Fprintf(l.stderr, "\r%5.0fs  streams %d/%d  published %d  delivered %d (%d/s)  reconnects %d%s   ",
			time.Since(start).Seconds(), l.connected.Load(), l.o.sockets, l.published.Load(), d, d-lastDelivered,
			l.reconnects.Load(), storm)
		lastDelivered = d
	}
}
