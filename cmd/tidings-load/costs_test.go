package main

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCosts: the presence counters are read from Prometheus' text format (labels, a
// timestamp, other metrics around them), summed over the nodes, and turned into rates; a node
// without them gives zeros and says so.
func TestCosts(t *testing.T) {
	t.Parallel()
	page := func(writes, rows, presence, signals int) string {
		return strings.Join([]string{
			"# HELP tidings_presence_writes_total Transactions.",
			"# TYPE tidings_presence_writes_total counter",
			"tidings_presence_writes_total " + strconv.Itoa(writes),
			"tidings_presence_rows_total " + strconv.Itoa(rows) + " 1700000000000",
			`tidings_ephemeral_notifies_total{channel="presence"} ` + strconv.Itoa(presence),
			`tidings_ephemeral_notifies_total{channel="signals"} ` + strconv.Itoa(signals),
			`tidings_presence_writes_totally_else 99`,
			`tidings_events_replayed_total{source="cache"} 5`,
		}, "\n")
	}
	read := func(pages ...string) costCounters {
		c := costCounters{notifies: map[string]float64{}, nodes: len(pages)}
		for _, p := range pages {
			found, err := parseCosts(bufio.NewScanner(strings.NewReader(p)), &c)
			if err != nil {
				t.Fatal(err)
			}
			if found {
				c.found++
			}
		}
		return c
	}
	before := read(page(10, 100, 20, 30), page(1, 2, 3, 4))
	after := read(page(30, 300, 60, 70), page(11, 12, 13, 14))
	got := costsBetween(before, after, 10*time.Second, nil)
	if got.Writes != 30 || got.Rows != 210 || got.Notifies != 100 || got.WritesPerSecond != 3 || got.RowsPerSecond != 21 ||
		got.NotifiesPerSecond != 10 || got.NotifiesByChannel["presence"] != 50 || got.NotifiesByChannel["signals"] != 50 || got.Note != "" {
		t.Fatalf("got %+v", got)
	}
	none := read("process_cpu_seconds_total 3\n")
	if got := costsBetween(none, none, time.Second, nil); got.WritesPerSecond != 0 || got.NotifiesPerSecond != 0 || got.Note == "" {
		t.Fatalf("without the metrics: got %+v, want zeros and a note", got)
	}
	if got := costsBetween(before, read(page(30, 300, 60, 70), "x 1"), time.Second, nil); !strings.Contains(got.Note, "1 of 2") {
		t.Fatalf("one node without them: got %+v", got)
	}
}
