package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// slowResult is what the slow bodies got.
type slowResult struct {
	Connections int `json:"connections"`
	// Opened counts the connections made; Refused the others, by error.
	Opened  int64            `json:"opened"`
	Refused map[string]int64 `json:"refused"`
	// BodyBytes is each request's declared body; SentBytes what all of them sent in total.
	BodyBytes int64 `json:"bodyBytes"`
	SentBytes int64 `json:"sentBytes"`
	// Answered counts the requests the node answered before their body was complete, by
	// status; Cut those whose connection it closed without an answer; Held those still
	// held when -slow-hold ended.
	Answered map[string]int64 `json:"answered"`
	Cut      int64            `json:"cut"`
	Held     int64            `json:"held"`
	// HeldMs is how long the node held each connection that it answered or cut.
	HeldMs quantiles `json:"heldMs"`
}

func (*slowResult) settled(*wellBehaved) {}

func (r *slowResult) check(c map[string]bool) { c["slowBodiesCut"] = r.Opened > 0 && r.Held == 0 }

// How the slow bodies trickle: a few bytes each period, towards a 1 MiB body (which the node
// accepts: only a larger one is 413 at once).
const (
	slowBody   = 1 << 20
	slowChunk  = 8
	slowPeriod = 250 * time.Millisecond
)

// slowBodies opens -slow connections to POST /api/auth/login, each declaring a 1 MiB body and
// sending it a few bytes at a time, for at most -slow-hold.
func (b *bench) slowBodies(ctx context.Context, _ *wellBehaved) (attackResult, error) {
	ctx, cancel := context.WithTimeout(ctx, b.o.slowHold)
	defer cancel()
	host := strings.TrimPrefix(b.o.url, "http://")
	d := &net.Dialer{Timeout: b.o.requestTimeout}
	if b.o.abuseFrom != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(b.o.abuseFrom)}
	}
	head := fmt.Sprintf("POST /api/auth/login HTTP/1.1\r\nHost: %s\r\nOrigin: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		host, b.origin, slowBody)
	var opened, sent, cut, held atomic.Int64
	var refused, answered tally
	var heldFor timings
	var wg sync.WaitGroup
	for range b.o.slow {
		wg.Go(func() {
			conn, err := d.DialContext(ctx, "tcp", host)
			if err != nil {
				refused.add(outcome(0, err))
				return
			}
			opened.Add(1)
			start := time.Now()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			defer conn.Close()
			// The node's answer, or the end of the connection, whichever comes first.
			ended := make(chan string, 1)
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					ended <- ""
					return
				}
				resp.Body.Close()
				ended <- strconv.Itoa(resp.StatusCode)
			}()
			b.trickle(ctx, conn, head, &sent, ended)
			status := <-ended
			switch {
			case status != "":
				answered.add(status)
				heldFor.add(time.Since(start))
			case ctx.Err() != nil:
				held.Add(1)
			default:
				cut.Add(1)
				heldFor.add(time.Since(start))
			}
		})
	}
	wg.Wait()
	return &slowResult{Connections: b.o.slow, Opened: opened.Load(), Refused: refused.counts(), BodyBytes: slowBody,
		SentBytes: sent.Load(), Answered: answered.counts(), Cut: cut.Load(), Held: held.Load(), HeldMs: heldFor.quantiles()}, nil
}

// trickle writes the head, then the body slowChunk bytes every slowPeriod, until the body is
// complete, a write fails, or ctx ends. An answer arriving on ended is put back for the caller.
func (b *bench) trickle(ctx context.Context, conn net.Conn, head string, sent *atomic.Int64, ended chan string) {
	if _, err := conn.Write([]byte(head)); err != nil {
		return
	}
	chunk := []byte(`{"name":"slow","password":"`)
	pad := bytes.Repeat([]byte("a"), slowChunk)
	t := time.NewTicker(slowPeriod)
	defer t.Stop()
	for n := 0; n < slowBody; chunk = pad[:min(slowChunk, slowBody-n)] {
		if _, err := conn.Write(chunk); err != nil {
			return
		}
		n += len(chunk)
		sent.Add(int64(len(chunk)))
		select {
		case <-ctx.Done():
			return
		case s := <-ended:
			ended <- s
			return
		case <-t.C:
		}
	}
}
