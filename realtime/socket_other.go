//go:build !unix

package realtime

import "syscall"

// writeNow never writes where non-blocking writes are not implemented: streams then send every
// event from their own writer.
func writeNow(syscall.RawConn, []byte) (int, error) { return 0, nil }
