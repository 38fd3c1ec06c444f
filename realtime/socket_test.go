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

// TestEachHeldWriteHasItsOwnTimeout (issue 9 item 8): a peer that reads steadily but slowly
// takes longer than the write timeout over a whole burst, yet each write finishes within it:
// the burst must go through. A deadline armed once for the whole burst cut it off.
func TestEachHeldWriteHasItsOwnTimeout(t *testing.T) {
	t.Parallel()
	server, client := net.Pipe() // no buffer: every write waits for the reader
	defer server.Close()
	// Each write waits pace for the reader: well within the timeout, so that a busy machine
	// does not fail it, while the four together take longer than it.
	const timeout, pace = time.Second, 300 * time.Millisecond
	chunk := bytes.Repeat([]byte("x"), corkLimit/2+1) // written through, one write each
	read := make(chan int, 1)
	go func() {
		total, buf := 0, make([]byte, len(chunk))
		for {
			time.Sleep(pace) // a slow reader: the pace under test, not a wait for a state
			n, err := io.ReadFull(client, buf)
			total += n
			if err != nil {
				read <- total
				return
			}
		}
	}()
	c := &corkConn{Conn: server}
	c.hold(timeout)
	for i := range 4 { // four writes of pace each: longer than the timeout in all
		if err := c.writeWire(chunk); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	server.Close()
	if got := <-read; got != 4*len(chunk) {
		t.Fatalf("peer read %d bytes, want %d", got, 4*len(chunk))
	}
}

// TestNothingAfterTheCloseFrame (item 10): a Close frame that the library writes (answering a
// client's close, or a 1009) leaves at once, after what was held back before it, even in the
// middle of a burst; no frame may follow it (RFC 6455 section 5.5.1), whoever tries.
func TestNothingAfterTheCloseFrame(t *testing.T) {
	t.Parallel()
	server, client := net.Pipe()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(client); got <- b }()
	c := &corkConn{Conn: server, framing: true}
	before := appendWireFrame(nil, []byte(`{"type":"event","id":1}`))
	after := appendWireFrame(nil, []byte(`{"type":"event","id":2}`))
	closeFrame := []byte{0x88, 0x02, 0x03, 0xE8} // close 1000, as the library writes it

	c.hold(5 * time.Second)
	if err := c.writeWire(before); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(closeFrame); err != nil { // the reader answers a client's close
		t.Fatal(err)
	}
	if err := c.writeWire(after); err == nil {
		t.Fatal("a held write after the close frame was taken")
	}
	if written, _, err := c.tryWrite(after); written || err == nil {
		t.Fatalf("tryWrite after the close frame: got written %v, %v; want an error", written, err)
	}
	if _, err := c.Write([]byte{0x89, 0x00}); err == nil { // a ping
		t.Fatal("a write of the library after the close frame was taken")
	}
	c.release()
	server.Close()
	want := append(append([]byte(nil), before...), closeFrame...)
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got % x, want the held event then the close frame only: % x", b, want)
	}
}
