package realtime

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// Socket is an accepted WebSocket whose frames a stream can send in bursts: between cork and
// uncork, frames collect in memory and leave in one write. coder/websocket flushes every
// message on its own, which costs one system call per event; corked, a replay of 100,000
// events costs a few hundred.
type Socket struct {
	ws   *websocket.Conn
	cork *corkConn
}

// Accept upgrades the request like websocket.Accept and returns a Socket.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*Socket, error) {
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, err
	}
	hw.cork.mu.Lock()
	hw.cork.framing = true // from here on, every write of the library is one frame
	hw.cork.mu.Unlock()
	return &Socket{ws: ws, cork: hw.cork}, nil
}

// Conn returns the underlying WebSocket.
func (s *Socket) Conn() *websocket.Conn { return s.ws }

// hijackWriter hands coder/websocket a connection it can cork.
type hijackWriter struct {
	http.ResponseWriter
	cork *corkConn
}

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("realtime: the response writer cannot hijack")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// net/http's 4 KiB buffers would stay with the socket for its whole life. Events bypass
	// them (they go through the cork), and clients send small frames: small buffers do, and
	// an idle socket keeps 7 KiB less. Bytes already read past the request are read first.
	buffered, _ := brw.Reader.Peek(brw.Reader.Buffered())
	h.cork = &corkConn{Conn: conn, unread: bytes.Clone(buffered)}
	if sc, ok := conn.(syscall.Conn); ok {
		h.cork.raw, _ = sc.SyscallConn() // nil (no direct writes) for TLS and other wrappers
	}
	small := bufio.NewReadWriter(bufio.NewReaderSize(h.cork, socketReadBuffer), bufio.NewWriterSize(h.cork, socketWriteBuffer))
	return h.cork, small, nil
}

// The buffers of an accepted socket: reads of client frames, and the library's own writes
// (pings, pongs, closes).
const (
	socketReadBuffer  = 512
	socketWriteBuffer = 256
)

// corkLimit is the most bytes a corked socket holds before it writes them anyway.
const corkLimit = 64 << 10

// corkBufs recycles cork buffers, so that an idle socket holds none.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, corkLimit); return &b }}

// corkConn is a net.Conn whose writes can be held back and sent together, and which the hub
// can write an event to without blocking (tryWrite).
type corkConn struct {
	net.Conn
	raw syscall.RawConn // nil when the connection has no file descriptor of its own

	unread []byte // owned by the reader: bytes read by net/http past the request

	mu      sync.Mutex
	buf     *[]byte       // guarded by mu: non-nil while corked
	timeout time.Duration // guarded by mu: while corked, the time each write may take
	rest    []byte        // guarded by mu: the unsent end of a frame that tryWrite began
	failed  error         // guarded by mu: a held-back write that failed, or errCloseSent
	framing bool          // guarded by mu: the upgrade is done; the library writes whole frames
}

// errCloseSent refuses every write after a Close frame (RFC 6455 section 5.5.1).
var errCloseSent = errors.New("realtime: a close frame was sent")

// isCloseFrame reports whether p, a write of the library after the upgrade, is a Close frame.
// coder/websocket writes each control frame (ping, pong, close) whole, in one write; the
// stream's own frames never pass here.
func isCloseFrame(p []byte) bool { return len(p) >= 2 && p[0]&0x0F == 0x8 }

func (c *corkConn) Read(p []byte) (int, error) {
	if len(c.unread) > 0 {
		n := copy(p, c.unread)
		c.unread = c.unread[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Write is the library's: the 101 response, then pings, pongs and the Close frame. A Close
// leaves at once, after whatever was held back before it, and nothing may follow it.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return 0, c.failed
	}
	closing := c.framing && isCloseFrame(p)
	if c.buf == nil || closing {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		n, err := c.writeLocked(p)
		if closing {
			c.failed = errCloseSent
		}
		return n, err
	}
	if len(*c.buf)+len(p) > corkLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > corkLimit/2 {
			return c.writeLocked(p)
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// writeLocked writes p to the connection. While corked, each write gets the whole write
// timeout of its own: a client that reads steadily, however slowly, is never cut off in the
// middle of a burst; whether it keeps up is the lag rule's to judge, with a close frame.
func (c *corkConn) writeLocked(p []byte) (int, error) {
	if c.buf != nil {
		c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.failed = err
	}
	return n, err
}

// flushRestLocked finishes the frame that tryWrite began: nothing else may go before it.
func (c *corkConn) flushRestLocked() error {
	if len(c.rest) == 0 {
		return nil
	}
	_, err := c.writeLocked(c.rest)
	c.rest = nil
	return err
}

// flushLocked writes what is held back, if anything.
func (c *corkConn) flushLocked() error {
	if err := c.flushRestLocked(); err != nil {
		return err
	}
	if c.buf == nil || len(*c.buf) == 0 {
		return nil
	}
	_, err := c.writeLocked(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// hold starts holding writes back; each write until release must finish within timeout.
func (c *corkConn) hold(timeout time.Duration) {
	c.mu.Lock()
	if c.buf == nil {
		c.buf = corkBufs.Get().(*[]byte)
		c.timeout = timeout
	}
	c.mu.Unlock()
}

// release writes what was held back and stops holding writes.
func (c *corkConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return c.failed
	}
	err := c.flushLocked()
	c.Conn.SetWriteDeadline(time.Time{})
	*c.buf = (*c.buf)[:0]
	corkBufs.Put(c.buf)
	c.buf = nil
	return err
}

// writeWire adds a ready-made WebSocket frame to the held writes. Event frames are built once
// by the hub for every socket; this is the whole cost of sending one to a socket.
func (c *corkConn) writeWire(frame []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return c.failed
	}
	if c.buf == nil {
		return errNotHeld
	}
	if len(*c.buf)+len(frame) > corkLimit {
		if err := c.flushLocked(); err != nil {
			return err
		}
		if len(frame) > corkLimit/2 {
			_, err := c.writeLocked(frame)
			return err
		}
	}
	*c.buf = append(*c.buf, frame...)
	return nil
}

// writeText adds payload, framed as a text message, to the held writes.
func (c *corkConn) writeText(payload []byte) error {
	c.mu.Lock()
	if c.failed == nil && c.buf != nil && len(*c.buf)+len(payload)+10 <= corkLimit {
		*c.buf = appendWireFrame(*c.buf, payload)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	return c.writeWire(appendWireFrame(nil, payload))
}

var errNotHeld = errors.New("realtime: write outside a held burst")

// tryWrite writes frame if the socket takes it without blocking, and reports whether it did,
// and whether the socket is now backed up. A frame the socket takes only in part is taken: its
// end waits in rest, and goes before any other write. It writes nothing while a burst is open
// or a frame is unfinished, when the connection has no descriptor, or while another write is
// in progress (the library's pong to a peer that does not read could hold it for seconds):
// the stream's writer does then. It never waits for anything.
func (c *corkConn) tryWrite(frame []byte) (written, backlog bool, err error) {
	if !c.mu.TryLock() {
		return false, false, nil
	}
	defer c.mu.Unlock()
	if c.failed != nil {
		return false, false, c.failed
	}
	if c.raw == nil || c.buf != nil || len(c.rest) > 0 {
		return false, false, nil
	}
	n, err := writeNow(c.raw, frame)
	if err != nil {
		c.failed = err
		return false, false, err
	}
	if n == 0 {
		return false, true, nil
	}
	if n < len(frame) {
		c.rest = append([]byte(nil), frame[n:]...)
		return true, true, nil
	}
	return true, false, nil
}

// backlogged reports whether a frame that tryWrite began is still unfinished.
func (c *corkConn) backlogged() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.rest) > 0
}

// err returns the error of a write that failed.
func (c *corkConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}
