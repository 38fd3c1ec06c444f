//go:build unix

package realtime

import (
	"errors"
	"syscall"
)

// writeNow writes as much of p as the socket takes without blocking: the socket is in
// non-blocking mode, as the runtime keeps every network descriptor, so a full send buffer
// makes the write return EAGAIN instead of parking the goroutine.
func writeNow(raw syscall.RawConn, p []byte) (int, error) {
	var n int
	var werr error
	err := raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), p)
			if !errors.Is(werr, syscall.EINTR) {
				return true // done, or full: never wait for the descriptor here
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if errors.Is(werr, syscall.EAGAIN) {
		return 0, nil
	}
	if werr != nil {
		return 0, werr
	}
	return n, nil
}
