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

// TestTryWriteNeverWaits: tryWrite writes what a socket takes and leaves the end of a frame for
// the next write, which sends it first; it gives up at once while another write holds the
// connection. The peer receives every byte in order.
func TestTryWriteNeverWaits(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	c := &corkConn{Conn: raw}
	if c.raw, err = raw.(*net.TCPConn).SyscallConn(); err != nil {
		t.Fatal(err)
	}

	c.mu.Lock() // another write in progress
	if written, _, _ := c.tryWrite([]byte("x")); written {
		t.Fatal("tryWrite wrote while another write held the connection")
	}
	c.mu.Unlock()

	// The peer does not read: fill the socket until it takes part of a frame, or nothing.
	var want bytes.Buffer
	frame := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	backedUp := false
	for i := 0; i < 10000 && !backedUp; i++ {
		frame[0] = byte(i)
		written, backlog, err := c.tryWrite(frame)
		if err != nil {
			t.Fatal(err)
		}
		if written {
			want.Write(frame)
		}
		backedUp = backlog
	}
	if !backedUp {
		t.Fatal("the socket never filled")
	}
	if written, _, _ := c.tryWrite(frame); written {
		t.Fatal("tryWrite wrote after a frame left unfinished")
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(peer); got <- b }()
	tail := []byte("tail")
	if _, err := c.Write(tail); err != nil { // finishes the frame first
		t.Fatal(err)
	}
	want.Write(tail)
	raw.Close()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("got %d bytes, want %d in order", len(b), want.Len())
	}
}
