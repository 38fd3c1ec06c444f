package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"tidings/realtime/client"
)

// tidings is the server under test: streams are the Go client, publishes go through POST
// /api/publish (docs/protocol.md sections 2 and 3).
type tidings struct {
	url    string      // the node that publishes
	urls   []string    // every node
	header http.Header // the bearer key
}

func newTidings(o options) *tidings {
	return &tidings{url: o.url, urls: o.urls, header: http.Header{"Authorization": {"Bearer " + o.apiKey}}}
}

func (t *tidings) open(hc *http.Client, node int, prev stream, h hooks) stream {
	cfg := client.Config{URL: t.urls[node], HTTPClient: hc, Buffer: 64,
		OnSession: func(s client.Session) {
			h.callOpened()
			if hasAccount(s) {
				h.callAccount()
			}
		}, OnReady: func(int64) { h.callReady() },
		OnClose: func(int, string) { h.callEnded() }}
	if c, ok := prev.(*client.Client); ok {
		if last := c.LastEventID(); last >= 0 {
			cfg.LastEventID = &last
		}
	}
	return client.New(cfg)
}

// hasAccount reports whether a session frame names an account.
func hasAccount(s client.Session) bool {
	var session struct {
		Account json.RawMessage `json:"account"`
	}
	return json.Unmarshal(s.Session, &session) == nil && len(session.Account) > 0 && string(session.Account) != "null"
}

func (t *tidings) publish(ctx context.Context, hc *http.Client, data []byte) (int64, error) {
	body, _ := json.Marshal(map[string]any{"type": "load", "data": json.RawMessage(data)})
	var answer struct {
		IDs []int64 `json:"ids"`
	}
	if err := post(ctx, hc, t.url+"/api/publish", t.header, body, &answer); err != nil {
		return 0, err
	}
	if len(answer.IDs) != 1 {
		return 0, fmt.Errorf("publish: got %d ids, want 1", len(answer.IDs))
	}
	return answer.IDs[0], nil
}

// replayed reads the nodes' counts of events sent during replays, by source ("cache",
// "table"), from GET /metrics, summed over the nodes.
func (t *tidings) replayed(ctx context.Context) (map[string]int64, error) {
	sum := map[string]int64{}
	for _, u := range t.urls {
		var m map[string]int64
		err := scrape(ctx, u+"/metrics", func(sc *bufio.Scanner) (err error) {
			m, err = parseReplayed(sc)
			return err
		})
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum, nil
}

// scrape reads a Prometheus text page with parse.
func scrape(ctx context.Context, url string, parse func(*bufio.Scanner) error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("metrics: %s: %s", url, resp.Status)
	}
	return parse(bufio.NewScanner(resp.Body))
}

// parseReplayed picks tidings_events_replayed_total{source="…"} out of Prometheus' text format.
func parseReplayed(sc *bufio.Scanner) (map[string]int64, error) {
	out := map[string]int64{}
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), `tidings_events_replayed_total{source="`)
		if !ok {
			continue
		}
		source, value, ok := strings.Cut(line, `"} `)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", sc.Text(), err)
		}
		out[source] = int64(v)
	}
	return out, sc.Err()
}
