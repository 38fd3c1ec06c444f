package datatest

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// leakMarkers are stack frames that only goroutines started by tidings code, a WebSocket or a
// database connection have: any of them alive once every test has finished is a leak.
var leakMarkers = []string{
	"tidings/realtime.", "tidings/web.", "tidings/data.", "tidings/auth.", "tidings/cmd/",
	"github.com/coder/websocket.", "github.com/jackc/pgx/v5", "github.com/jackc/puddle",
	"net/http.(*conn).serve", "net/http.(*persistConn)",
}

// checkGoroutines waits, with a bound, until no goroutine of tidings, of a socket or of a
// database connection is left, and describes the leftovers if some stay.
func checkGoroutines(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		leaks := leakedGoroutines()
		if len(leaks) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines outlived the tests:\n\n%s", len(leaks), strings.Join(leaks, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var leaks []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "datatest.checkGoroutines") || strings.Contains(g, "tidings/data.(*Managed)") {
			continue
		}
		for _, m := range leakMarkers {
			if strings.Contains(g, m) {
				leaks = append(leaks, g)
				break
			}
		}
	}
	return leaks
}
