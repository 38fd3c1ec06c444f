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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"tidings/realtime/client"
)

// summary is the last line of a run (PROTOCOL.md section 7, plus what a load test also wants).
type summary struct {
	Sockets             int           `json:"sockets"`
	Connected           int           `json:"connected"`
	ConnectMs           quantiles     `json:"connectMs"`
	Published           int64         `json:"published"`
	PublishErrors       int64         `json:"publishErrors"`
	Delivered           int64         `json:"delivered"`
	Missing             int64         `json:"missing"`
	Duplicates          int64         `json:"duplicates"`
	OutOfOrder          int64         `json:"outOfOrder"`
	Reconnects          int64         `json:"reconnects"`
	DeliveriesPerSecond float64       `json:"deliveriesPerSecond"`
	LatencyMs           quantiles     `json:"latencyMs"`
	Server              *serverUsage  `json:"server,omitempty"`
	Elapsed             time.Duration `json:"-"`
	ElapsedSeconds      float64       `json:"elapsedSeconds"`
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

// load is one run.
type load struct {
	o      options
	stderr io.Writer
	runID  string

	latency [shards]shard
	connect shard

	published     atomic.Int64
	publishErrors atomic.Int64
	connected     atomic.Int64
	delivered     atomic.Int64
	reconnects    atomic.Int64
	perSocket     []atomic.Int64 // this run's load events each socket received
}

func newLoad(o options, stderr io.Writer) *load {
	var id [6]byte
	rand.Read(id[:])
	l := &load{o: o, stderr: stderr, runID: hex.EncodeToString(id[:]), perSocket: make([]atomic.Int64, o.sockets)}
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
	start := time.Now()
	usage := startUsage(l.o.pid)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	transports := l.transports()
	var sockets sync.WaitGroup
	clients := make([]*client.Client, l.o.sockets)
	ready := make(chan struct{}, l.o.sockets)
	progressDone := make(chan struct{})
	go l.progress(ctx, start, usage, progressDone)

	// Open the streams at the ramp rate.
	interval := time.Duration(float64(time.Second) / l.o.ramp)
	for i := range clients {
		if ctx.Err() != nil {
			break
		}
		jar, _ := cookiejar.New(nil)
		opened := time.Now()
		var once sync.Once
		c := client.New(client.Config{
			URL:        l.o.url,
			HTTPClient: &http.Client{Jar: jar, Transport: transports[i%len(transports)]},
			Buffer:     64,
			OnReady: func(int64) {
				first := false
				once.Do(func() {
					first = true
					l.record(&l.connect, time.Since(opened))
					l.connected.Add(1)
					ready <- struct{}{}
				})
				if !first {
					l.reconnects.Add(1)
				}
			},
		})
		clients[i] = c
		sockets.Go(func() { c.Run(ctx) })
		sockets.Go(func() { l.consume(i, c) })
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
	l.publish(ctx)
	pubElapsed := time.Since(pubStart)

	// Wait for the last deliveries.
	deadline := time.Now().Add(l.o.settle)
	for time.Now().Before(deadline) && ctx.Err() == nil && l.delivered.Load() < l.published.Load()*l.connected.Load() {
		time.Sleep(20 * time.Millisecond)
	}
	s := summary{
		Sockets: l.o.sockets, Connected: int(l.connected.Load()), Published: l.published.Load(),
		PublishErrors: l.publishErrors.Load(), Delivered: l.delivered.Load(),
		Reconnects: l.reconnects.Load(),
	}
	for i := range l.perSocket {
		s.Missing += max(0, s.Published-l.perSocket[i].Load())
	}
	for _, c := range clients {
		if c != nil {
			st := c.Stats()
			s.Duplicates += st.Duplicates
			s.OutOfOrder += st.OutOfOrder
		}
	}
	cancel()
	sockets.Wait()
	<-progressDone
	all := newHistogram()
	for i := range l.latency {
		all.Merge(l.latency[i].h)
	}
	s.LatencyMs = quantilesOf(all)
	s.ConnectMs = quantilesOf(l.connect.h)
	s.DeliveriesPerSecond = math.Round(float64(s.Delivered) / max(pubElapsed, time.Millisecond).Seconds())
	s.Elapsed = time.Since(start)
	s.ElapsedSeconds = math.Round(s.Elapsed.Seconds()*100) / 100
	s.Server = usage.finish()
	return s, nil
}

// transports gives each local source address its own dialer.
func (l *load) transports() []http.RoundTripper {
	if len(l.o.sources) == 0 {
		return []http.RoundTripper{&http.Transport{MaxIdleConnsPerHost: 16}}
	}
	var out []http.RoundTripper
	for _, s := range l.o.sources {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(s)}, Timeout: 10 * time.Second}
		out = append(out, &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16})
	}
	return out
}

func (l *load) record(s *shard, d time.Duration) {
	s.mu.Lock()
	s.h.RecordValue(max(1, d.Microseconds()))
	s.mu.Unlock()
}

// consume counts socket i's deliveries of this run's events and their latency.
func (l *load) consume(i int, c *client.Client) {
	sh := &l.latency[i%shards]
	for ev := range c.Events() {
		if ev.Type != "load" {
			continue
		}
		sent, ok := l.sentAt(ev.Data)
		if !ok {
			continue
		}
		l.record(sh, time.Since(sent))
		l.perSocket[i].Add(1)
		l.delivered.Add(1)
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

// publish sends rate events per second for the duration, one per call, from a pool of workers.
func (l *load) publish(ctx context.Context) {
	workers := min(256, max(4, int(l.o.rate/50)))
	jobs := make(chan struct{}, workers*4)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}, Timeout: 30 * time.Second}
	endpoint := strings.TrimRight(l.o.url, "/") + "/api/publish"
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range jobs {
				if err := l.publishOne(ctx, hc, endpoint); err != nil {
					l.publishErrors.Add(1)
				} else {
					l.published.Add(1)
				}
			}
		})
	}
	start := time.Now()
	total := int64(l.o.rate * l.o.duration.Seconds())
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
		due := min(total, int64(l.o.rate*time.Since(start).Seconds()))
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

func (l *load) publishOne(ctx context.Context, hc *http.Client, endpoint string) error {
	d, _ := json.Marshal(loadData{T: time.Now().UnixNano(), Run: l.runID})
	body, _ := json.Marshal(map[string]any{"type": "load", "data": json.RawMessage(d)})
	req, err := http.NewRequestWithContext(ctx, "POST", endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+l.o.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish: %s", resp.Status)
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
		fmt.Fprintf(l.stderr, "\r%5.0fs  streams %d/%d  published %d  delivered %d (%d/s)  reconnects %d   ",
			time.Since(start).Seconds(), l.connected.Load(), l.o.sockets, l.published.Load(), d, d-lastDelivered,
			l.reconnects.Load())
		lastDelivered = d
	}
}
