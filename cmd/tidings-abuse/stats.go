package main

import (
	"math"
	"slices"
	"sync"
	"time"
)

// quantiles of a set of durations, in milliseconds; all zero when the set is empty.
type quantiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// timings collects durations from many goroutines.
type timings struct {
	mu sync.Mutex
	ds []time.Duration // guarded by mu
}

func (t *timings) add(d time.Duration) {
	t.mu.Lock()
	t.ds = append(t.ds, d)
	t.mu.Unlock()
}

// quantiles are the nearest-rank quantiles of what was added.
func (t *timings) quantiles() quantiles {
	t.mu.Lock()
	ds := slices.Clone(t.ds)
	t.mu.Unlock()
	if len(ds) == 0 {
		return quantiles{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(ds)))) - 1
		return ms(ds[max(0, min(i, len(ds)-1))])
	}
	return quantiles{N: len(ds), P50: at(0.50), P99: at(0.99), Max: ms(ds[len(ds)-1])}
}

// ms is d in milliseconds, to a tenth.
func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*10) / 10 }

// tally counts outcomes by name (a status, an error code).
type tally struct {
	mu sync.Mutex
	m  map[string]int64 // guarded by mu
}

func (t *tally) add(name string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int64{}
	}
	t.m[name]++
	t.mu.Unlock()
}

// counts is a copy of the counts, never nil (so that the summary shows {} rather than null).
func (t *tally) counts() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int64, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

// total is the sum of every count but those named in except.
func (t *tally) total(except ...string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for k, v := range t.m {
		if !slices.Contains(except, k) {
			n += v
		}
	}
	return n
}
