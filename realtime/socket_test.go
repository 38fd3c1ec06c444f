package realtime

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestCorkKeepsOrder writes, while corked, small writes, a write that overflows the cork and
// one larger than half of it, and checks that the peer receives every byte in order.
func TestCorkKeepsOrder(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := &corkConn{Conn: raw}
	var want bytes.Buffer
	write := func(p []byte) {
		t.Helper()
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("write: got %d, %v", n, err)
		}
		want.Write(p)
	}
	c.hold(5 * time.Second)
	write([]byte("first "))
	write(bytes.Repeat([]byte("a"), corkLimit-3)) // overflows: the held bytes go first
	write(bytes.Repeat([]byte("b"), corkLimit))   // larger than half the cork: written through
	write([]byte(" last"))
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	write([]byte(" uncorked"))
	raw.Close()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("got %d bytes, want %d in order", len(b), want.Len())
	}
}
