package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"tidings/realtime"
)

// BenchmarkReplay measures how long a client 100,000 events behind takes to be current (until
// its ready frame), over a real WebSocket, with the events in the recent-events cache and
// only in the table.
func BenchmarkReplay(b *testing.B) {
	const behind = 100_000
	for _, mode := range []struct {
		name string
		size int
	}{{"cache", 1 << 17}, {"table", 1}} {
		b.Run(mode.name, func(b *testing.B) {
			s := newServer(b, serverOptions{hub: realtime.HubConfig{CacheSize: mode.size, PageSize: 5000}})
			ctx := context.Background()
			if _, err := s.pool.Exec(ctx, `SELECT count(*) FROM publish_events(
				array_fill('bench'::text, ARRAY[$1::int]),
				array_fill('{"text":"hello, tidings","n":12345}'::jsonb, ARRAY[$1::int]),
				array_fill(NULL::jsonb, ARRAY[$1::int]))`, behind); err != nil {
				b.Fatal(err)
			}
			waitFor(b, "hub at the last event", func() bool { return s.hub.Head() == behind })
			url := "ws" + strings.TrimPrefix(s.URL, "http") + "/api/events?lastEventId=0"
			b.ResetTimer()
			for range b.N {
				conn, _, err := websocket.Dial(ctx, url, nil)
				if err != nil {
					b.Fatal(err)
				}
				conn.SetReadLimit(1 << 20)
				events := 0
				for {
					_, msg, err := conn.Read(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if strings.HasPrefix(string(msg), `{"type":"event"`) {
						events++
					} else if strings.HasPrefix(string(msg), `{"type":"ready"`) {
						break
					}
				}
				conn.Close(websocket.StatusNormalClosure, "")
				if events != behind {
					b.Fatalf("got %d events, want %d", events, behind)
				}
			}
			b.ReportMetric(float64(behind)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkIdleStreamMemory measures what an idle stream costs the server: 2,000 streams are
// opened by raw clients that read their session and ready frames and nothing more, and the Go
// heap and goroutine stacks after a collection are compared with before. A raw client keeps only
// its socket (a few hundred bytes), so the figure is nearly all the server's. It is a lower
// bound of the process's resident memory per stream: the runtime keeps headroom above it.
func BenchmarkIdleStreamMemory(b *testing.B) {
	const streams = 2000
	s := newServer(b, serverOptions{})
	addr := strings.TrimPrefix(s.URL, "http://")
	var perStream float64
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]net.Conn, 0, streams)
		for range streams {
			c, err := openRawStream(addr)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		waitFor(b, "every stream parked", func() bool {
			return s.hub.Subscribers() == streams && s.hub.Writers() == 0
		})
		runtime.GC()
		runtime.ReadMemStats(&after)
		perStream = (float64(after.HeapAlloc+after.StackInuse) - float64(before.HeapAlloc+before.StackInuse)) / streams
		for _, c := range conns {
			c.Close()
		}
		waitFor(b, "every stream gone", func() bool { return s.hub.Subscribers() == 0 })
	}
	b.ReportMetric(perStream, "bytes/stream")
}

// openRawStream opens a live stream with a hand-written upgrade request and reads its first two
// frames (session, ready), keeping nothing but the socket.
func openRawStream(addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "GET /api/events HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	r := bufio.NewReaderSize(c, 1024)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("upgrade: %w", err)
		}
		if strings.HasPrefix(line, "HTTP/1.1 ") && !strings.HasPrefix(line, "HTTP/1.1 101") {
			c.Close()
			return nil, fmt.Errorf("upgrade: %s", strings.TrimSpace(line))
		}
		if line == "\r\n" {
			break
		}
	}
	for _, want := range []string{`{"type":"session"`, `{"type":"ready"`} {
		var head [2]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			c.Close()
			return nil, err
		}
		n := int(head[1] & 0x7f) // the first frames are short: no extended length
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil || !strings.HasPrefix(string(payload), want) {
			c.Close()
			return nil, fmt.Errorf("got frame %q (%v), want %s…", payload, err, want)
		}
	}
	if r.Buffered() > 0 {
		c.Close()
		return nil, fmt.Errorf("unexpected frames after ready")
	}
	return c, nil
}
