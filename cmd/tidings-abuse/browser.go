package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"time"
)

// bench is one run: the node, the two sides' addresses, and the accounts made for the run.
type bench struct {
	// Set at construction.
	o      options
	stderr io.Writer
	runID  string // random; every name the run registers starts with it
	origin string // the node's own origin, sent as a browser would
	good   *http.Transport

	// The accounts: watcher and publisher are the two well-behaved users; victim is the taken
	// name and the target of the guesses; renamer and nul are attackers that signed in.
	watcher, publisher, victim, renamer, nul *account
}

// account is a user the run registered, signed in through hc's cookie jar.
type account struct {
	id             int64
	name, password string
	hc             *http.Client
}

func newBench(ctx context.Context, o options, stderr io.Writer) (*bench, error) {
	var id [4]byte
	rand.Read(id[:])
	b := &bench{o: o, stderr: stderr, runID: "ab" + hex.EncodeToString(id[:]), origin: o.url,
		good: newTransport(o.goodFrom, 16, o.requestTimeout)}
	status, _, err := b.send(ctx, &http.Client{Transport: b.good}, "GET", "/healthz", nil)
	if err != nil || status != http.StatusOK {
		b.close()
		return nil, fmt.Errorf("the node at %s is not healthy: %s", o.url, outcome(status, err))
	}
	for _, a := range []struct {
		p    **account
		role string
	}{{&b.watcher, "watcher"}, {&b.publisher, "publisher"}, {&b.victim, "victim"}, {&b.renamer, "renamer"}, {&b.nul, "nul"}} {
		if *a.p, err = b.register(ctx, b.runID+"-"+a.role); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

func (b *bench) close() { b.good.CloseIdleConnections() }

// newTransport dials from the local address from (any, when empty), keeping at most idle
// connections for reuse.
func newTransport(from string, idle int, timeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: timeout}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: idle, DisableKeepAlives: idle == 0}
}

// newClient is a browser of its own: a cookie jar over transport.
func newClient(transport http.RoundTripper) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Transport: transport}
}

// send makes one request with the headers a browser's fetch sends (Origin, and a JSON
// Content-Type when there is a body), within -request-timeout, and returns the status and the
// body.
func (b *bench) send(ctx context.Context, hc *http.Client, method, path string, body []byte) (int, []byte, error) {
	return b.sendHeader(ctx, hc, method, path, body, nil)
}

// sendHeader is send with more headers.
func (b *bench) sendHeader(ctx context.Context, hc *http.Client, method, path string, body []byte, header http.Header) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, b.o.requestTimeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.o.url+path, r)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Origin", b.origin)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, out, err
}

// credentials is the body of register and login.
func credentials(name, password string) []byte {
	body, _ := json.Marshal(map[string]string{"name": name, "password": password})
	return body
}

// register makes a user from the well-behaved address and returns it signed in.
func (b *bench) register(ctx context.Context, name string) (*account, error) {
	var pw [12]byte
	rand.Read(pw[:])
	a := &account{name: name, password: hex.EncodeToString(pw[:]), hc: newClient(b.good)}
	status, body, err := b.send(ctx, a.hc, "POST", "/api/auth/register", credentials(a.name, a.password))
	if err != nil || status != http.StatusCreated {
		return nil, fmt.Errorf("register %s: %s %s", name, outcome(status, err), bytes.TrimSpace(body))
	}
	var s struct {
		Account struct {
			ID int64 `json:"id"`
		} `json:"account"`
	}
	if err := json.Unmarshal(body, &s); err != nil || s.Account.ID <= 0 {
		return nil, fmt.Errorf("register %s: unexpected answer %q", name, body)
	}
	a.id = s.Account.ID
	return a, nil
}

// outcome names how a request ended, for the tallies: its status, or how it failed.
func outcome(status int, err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return strconv.Itoa(status)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "connection-error"
	}
}
