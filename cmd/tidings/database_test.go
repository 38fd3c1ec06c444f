package main

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestRetryBackoff: the pauses between tries start near firstBackoff and double up to
// maxBackoff, each between half and all of its step; the last try comes at the end of the wait,
// and the error says how many tries it took; each failed try but the last is logged.
func TestRetryBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		var tries []time.Time
		start := time.Now()
		err := retry(context.Background(), 30*time.Second, log, func(context.Context) (bool, error) {
			tries = append(tries, time.Now())
			return true, errors.New("connection refused")
		})
		if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "TIDINGS_DB_WAIT=30s") {
			t.Fatalf("got %v, want the last try's error and the wait", err)
		}
		if got := time.Since(start); got != 30*time.Second {
			t.Errorf("gave up after %v, want 30s", got)
		}
		step := firstBackoff
		for i := 1; i < len(tries); i++ {
			gap := tries[i].Sub(tries[i-1])
			left := start.Add(30 * time.Second).Sub(tries[i-1])
			if gap > step || (gap < step/2 && gap != left) {
				t.Errorf("pause %d: %v, want between %v and %v", i, gap, step/2, step)
			}
			step = min(2*step, maxBackoff)
		}
		// Five growing pauses take 3.9-7.8 s, then one every 2.5-5 s, and one last at the end.
		if n := len(tries); n < 10 || n > 19 || !strings.Contains(err.Error(), "after "+strconv.Itoa(n)+" tries") {
			t.Errorf("%d tries, error %q: want 10 to 19, and the count in the error", n, err)
		}
		if got := strings.Count(logs.String(), "trying again"); got != len(tries)-1 {
			t.Errorf("%d logged retries for %d tries, want one per try but the last", got, len(tries))
		}
	})
}

// TestRetryStops: a wait of 0 is one try; an error that will not pass ends at once; a cancelled
// context ends the pause with its error; success after failures is logged.
func TestRetryStops(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		n := 0
		err := retry(context.Background(), 0, log, func(context.Context) (bool, error) { n++; return true, errors.New("down") })
		if n != 1 || err == nil || !strings.Contains(err.Error(), "after 1 tries") {
			t.Errorf("wait 0: %d tries, %v; want one try and its error", n, err)
		}
		n = 0
		err = retry(context.Background(), time.Hour, log, func(context.Context) (bool, error) { n++; return false, errors.New("no binaries") })
		if n != 1 || err == nil || !strings.Contains(err.Error(), "no binaries") {
			t.Errorf("an error that will not pass: %d tries, %v; want one try and its error", n, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(10 * time.Second); cancel() }()
		start := time.Now()
		err = retry(ctx, time.Hour, log, func(context.Context) (bool, error) { return true, errors.New("down") })
		if !errors.Is(err, context.Canceled) || time.Since(start) != 10*time.Second {
			t.Errorf("cancelled after 10s: got %v after %v, want context.Canceled at once", err, time.Since(start))
		}
		n = 0
		err = retry(context.Background(), time.Hour, log, func(context.Context) (bool, error) {
			if n++; n < 3 {
				return true, errors.New("down")
			}
			return false, nil
		})
		if err != nil || n != 3 || !strings.Contains(logs.String(), "database reachable") {
			t.Errorf("success on the third try: %d tries, %v, want nil and a line saying so", n, err)
		}
	})
}
