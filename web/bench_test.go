package web_test

import (
	"context"
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
