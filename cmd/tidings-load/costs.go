package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// postgresCost is what a presence run cost PostgreSQL, from the nodes' counters
// (docs/design.md, invariant 10: bounded per node per second, not proportional to opens and
// closes): transactions of presence writes (flushes, replaces, beats), rows they inserted or
// deleted, and NOTIFYs of the ephemeral channels, over the actions and their settling.
type postgresCost struct {
	Seconds           float64            `json:"seconds"`
	Writes            float64            `json:"writes"`
	Rows              float64            `json:"rows"`
	Notifies          float64            `json:"notifies"`
	WritesPerSecond   float64            `json:"writesPerSecond"`
	RowsPerSecond     float64            `json:"rowsPerSecond"`
	NotifiesPerSecond float64            `json:"notifiesPerSecond"`
	NotifiesByChannel map[string]float64 `json:"notifiesByChannel,omitempty"`
	// Note says why figures are 0: a node without these metrics, or one that did not answer.
	Note string `json:"note,omitempty"`
}

// The counters of the ephemeral path (realtime/metrics.go).
const (
	metricWrites   = "tidings_presence_writes_total"
	metricRows     = "tidings_presence_rows_total"
	metricNotifies = "tidings_ephemeral_notifies_total"
)

// costCounters are the counters summed over the nodes.
type costCounters struct {
	writes, rows float64
	notifies     map[string]float64 // by channel
	found        int                // nodes that had them
	nodes        int
}

// scrapeCosts reads the counters from every metrics page.
func scrapeCosts(ctx context.Context, urls []string) (costCounters, error) {
	c := costCounters{notifies: map[string]float64{}, nodes: len(urls)}
	for _, u := range urls {
		found := false
		err := scrape(ctx, u, func(sc *bufio.Scanner) error {
			var err error
			found, err = parseCosts(sc, &c)
			return err
		})
		if err != nil {
			return c, err
		}
		if found {
			c.found++
		}
	}
	return c, nil
}

// parseCosts adds the counters of one Prometheus text page to c, and reports whether the page
// had any of them.
func parseCosts(sc *bufio.Scanner, c *costCounters) (bool, error) {
	found := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			continue
		}
		name, rest, labels := line[:i], line[i:], ""
		if rest[0] == '{' {
			j := strings.IndexByte(rest, '}')
			if j < 0 {
				continue
			}
			labels, rest = rest[1:j], rest[j+1:]
		}
		if name != metricWrites && name != metricRows && name != metricNotifies {
			continue
		}
		valueText, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // a timestamp may follow
		v, err := strconv.ParseFloat(valueText, 64)
		if err != nil {
			return found, fmt.Errorf("metrics: %q: %w", line, err)
		}
		found = true
		switch name {
		case metricWrites:
			c.writes += v
		case metricRows:
			c.rows += v
		case metricNotifies:
			c.notifies[labelValue(labels, "channel")] += v
		}
	}
	return found, sc.Err()
}

// labelValue is the value of label name in a Prometheus label list (a="x",b="y").
func labelValue(labels, name string) string {
	for part := range strings.SplitSeq(labels, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// costsBetween is what happened between two readings, over d.
func costsBetween(before, after costCounters, d time.Duration, err error) postgresCost {
	var p postgresCost
	p.Seconds = math.Round(d.Seconds()*100) / 100
	switch {
	case err != nil:
		p.Note = "the nodes' metrics could not be read: " + err.Error()
		return p
	case after.found == 0:
		p.Note = "no node has the presence metrics (" + metricWrites + ", " + metricRows + ", " + metricNotifies + ")"
		return p
	case after.found < after.nodes:
		p.Note = fmt.Sprintf("only %d of %d nodes have the presence metrics", after.found, after.nodes)
	}
	p.Writes = after.writes - before.writes
	p.Rows = after.rows - before.rows
	p.NotifiesByChannel = map[string]float64{}
	for ch, v := range after.notifies {
		n := v - before.notifies[ch]
		p.NotifiesByChannel[ch] = n
		p.Notifies += n
	}
	if s := d.Seconds(); s > 0 {
		round := func(x float64) float64 { return math.Round(x/s*100) / 100 }
		p.WritesPerSecond, p.RowsPerSecond, p.NotifiesPerSecond = round(p.Writes), round(p.Rows), round(p.Notifies)
	}
	return p
}
