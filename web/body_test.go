package web_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"tidings/web"
)

// slowRequest sends the head of a request with a body of 1,000 bytes, then the body one byte
// every 20 ms, until the server answers. It returns the answer's status, how long the server
// took to answer since the head was sent, and whether the server then closed the connection.
func slowRequest(t *testing.T, url, head string) (status int, took time.Duration, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "%sHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", head, strings.TrimPrefix(url, "http://")); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer within 5 s: %v", err)
	}
	took = time.Since(start)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte() // the server's close: an end, or a reset when it left bytes unread
	return resp.StatusCode, took, err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

// TestSlowBodyIsCutOff: a body sent a few bytes at a time is refused once the body timeout has
// passed, and the connection (its goroutine and descriptor) is closed, on every route.
func TestSlowBodyIsCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	s := newServer(t, serverOptions{web: web.Config{BodyTimeout: timeout, APIKey: "k"}})
	for _, c := range []struct {
		head string
		want int // 0: any
	}{
		{"POST /api/auth/register HTTP/1.1\r\n", http.StatusRequestTimeout},
		{"POST /api/auth/login HTTP/1.1\r\n", http.StatusRequestTimeout},
		{"POST /api/publish HTTP/1.1\r\nAuthorization: Bearer k\r\n", 0},
		{"GET /api/session HTTP/1.1\r\n", 0}, // a body nobody reads
	} {
		status, took, closed := slowRequest(t, s.URL, c.head)
		line, _, _ := strings.Cut(c.head, "\r\n")
		if (c.want != 0 && status != c.want) || took > timeout+2*time.Second || !closed {
			t.Errorf("%s: got %d after %v, closed %v; want %d within %v, and the connection closed", line, status, took, closed, c.want, timeout)
		}
	}
}
