package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// account is one user of a signed-in run: its name, its id, and the cookie jar that holds its
// session, which all its streams share.
type account struct {
	name string
	id   int64
	jar  http.CookieJar
}

// signInStats is how the users were signed in.
type signInStats struct {
	Users      int     `json:"users"`
	Registered int64   `json:"registered"` // the rest signed in: they came from -users-file
	Retries    int64   `json:"retries"`    // requests sent again after a 429 or 503
	Sources    int     `json:"sources"`    // source addresses they went out from
	Seconds    float64 `json:"seconds"`
}

// usersFile is what -users-file keeps between runs: the users' names and their one password.
type usersFile struct {
	Password string   `json:"password"`
	Names    []string `json:"names"`
}

// readUsersFile reads path; a file that does not exist yet is empty.
func readUsersFile(path string) (usersFile, error) {
	var f usersFile
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("users file: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil || (len(f.Names) > 0 && f.Password == "") {
		return f, fmt.Errorf("users file %s: want {\"password\":\"…\",\"names\":[…]}: %v", path, err)
	}
	return f, nil
}

// writeUsersFile replaces path with f, readable by its owner only (it holds a password).
func writeUsersFile(path string, f usersFile) error {
	b, _ := json.MarshalIndent(f, "", "  ")
	tmp, err := os.CreateTemp(filepath.Dir(path), ".users-*")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("users file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	return nil
}

// signIn makes o.users users and signs each one in once, through the nodes in turn: those of
// -users-file sign in (registered again if the server does not know them: a fresh database),
// the rest are registered as load-<run>-<i>, and -users-file is brought up to date. The
// server limits registrations per address and bounds password hashing, so the requests go out
// from many loopback source addresses, at most o.authWorkers at once, and a 429 or 503 is
// retried after its Retry-After.
func signIn(ctx context.Context, o options, stderr io.Writer) ([]*account, *signInStats, error) {
	var file usersFile
	if o.usersFile != "" {
		var err error
		if file, err = readUsersFile(o.usersFile); err != nil {
			return nil, nil, err
		}
	}
	known := min(len(file.Names), o.users)
	if file.Password == "" {
		var p [18]byte
		rand.Read(p[:])
		file.Password = base64.RawURLEncoding.EncodeToString(p[:])
	}
	var id [4]byte
	rand.Read(id[:])
	run := hex.EncodeToString(id[:])
	for i := len(file.Names); i < o.users; i++ {
		file.Names = append(file.Names, fmt.Sprintf("load-%s-%d", run, i))
	}
	accounts := make([]*account, o.users)
	for i := range accounts {
		jar, _ := cookiejar.New(nil)
		accounts[i] = &account{name: file.Names[i], jar: jar}
	}

	a := newAuthenticator(o)
	start := time.Now()
	var done, registered, retries atomic.Int64
	a.retried = &retries
	stop := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			fmt.Fprintf(stderr, "\r%5.0fs  signing in %d/%d users (%d registered, %d retries)   ",
				time.Since(start).Seconds(), done.Load(), o.users, registered.Load(), retries.Load())
		}
	}()
	jobs := make(chan int)
	errs := make(chan error, o.authWorkers)
	var wg sync.WaitGroup
	wctx, cancel := context.WithCancel(ctx)
	for range o.authWorkers {
		wg.Go(func() {
			for i := range jobs {
				acct, node := accounts[i], o.urls[i%len(o.urls)]
				reg, err := a.signIn(wctx, node, i, acct, file.Password, i < known)
				if err != nil {
					errs <- err
					cancel()
					return
				}
				if reg {
					registered.Add(1)
				}
				done.Add(1)
			}
		})
	}
feed:
	for i := range accounts {
		select {
		case jobs <- i:
		case <-wctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	cancel()
	close(stop)
	<-progressDone
	fmt.Fprintf(stderr, "\r%5.0fs  signed in %d/%d users (%d registered, %d retries)\n",
		time.Since(start).Seconds(), done.Load(), o.users, registered.Load(), retries.Load())
	if o.usersFile != "" && done.Load() > 0 {
		// Names that failed are kept too: a later run registers them then.
		if err := writeUsersFile(o.usersFile, file); err != nil {
			return nil, nil, err
		}
	}
	select {
	case err := <-errs:
		return nil, nil, err
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := checkSessionCookie(o.urls, accounts[0].jar); err != nil {
		return nil, nil, err
	}
	return accounts, &signInStats{Users: o.users, Registered: registered.Load(), Retries: retries.Load(),
		Sources: len(a.transports), Seconds: math.Round(time.Since(start).Seconds()*100) / 100}, nil
}

// checkSessionCookie makes sure that the jar will send its session to every node: a server that
// is not in development mode sets a Secure cookie, which a client sends over https only.
func checkSessionCookie(urls []string, jar http.CookieJar) error {
	for _, raw := range urls {
		u, _ := url.Parse(raw)
		var found bool
		for _, c := range jar.Cookies(u) {
			found = found || c.Name == "tidings-session" || c.Name == "__Host-tidings-session"
		}
		if !found {
			return fmt.Errorf("the session cookie would not be sent to %s: over plain http the server must run with TIDINGS_DEV=true (its cookie is Secure otherwise), and every -url must have the same host", raw)
		}
	}
	return nil
}

// authenticator sends registrations and logins from a spread of source addresses.
type authenticator struct {
	transports []http.RoundTripper
	retried    *atomic.Int64
}

// authSourceBase is where the source addresses of registrations and logins start: 127.77.0.1,
// 127.77.0.2, … (127.78.0.0 at most), away from the -sources commonly given for streams.
var authSourceBase = [4]byte{127, 77, 0, 1}

func newAuthenticator(o options) *authenticator {
	n := o.authSources
	if n == 0 {
		n = (o.users + 9) / 10 // at 20 registrations per address per minute, all within a minute
	}
	u, _ := url.Parse(o.url)
	if !isLoopback(u.Hostname()) {
		n = 0 // a remote server: no loopback source reaches it
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || ip.To4() == nil {
		n = 0 // an IPv6 loopback server: ::1 is the only source
	}
	a := &authenticator{}
	for i := range n {
		v := binary.BigEndian.Uint32(authSourceBase[:]) + uint32(i)
		ip := net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second, Control: bindAddressNoPort}
		a.transports = append(a.transports, &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 2})
	}
	if len(a.transports) == 0 {
		a.transports = []http.RoundTripper{&http.Transport{MaxIdleConnsPerHost: 16}}
	}
	return a
}

// maxRetryAfter is the longest Retry-After worth waiting for: a longer one (a name locked by
// failed logins) fails the run.
const maxRetryAfter = 2 * time.Minute

// signIn signs acct in through node, with the i-th source address: a login first when the
// user should exist (it came from the users file), then a registration if the server does not
// know it. It reports whether it registered the user.
func (a *authenticator) signIn(ctx context.Context, node string, i int, acct *account, password string, exists bool) (registered bool, err error) {
	hc := &http.Client{Jar: acct.jar, Transport: a.transports[i%len(a.transports)], Timeout: time.Minute}
	body, _ := json.Marshal(map[string]string{"name": acct.name, "password": password})
	if exists {
		status, err := a.post(ctx, hc, node+"/api/auth/login", body, acct)
		if err != nil {
			return false, err
		}
		switch status {
		case http.StatusOK:
			return false, nil
		case http.StatusUnauthorized: // not on this server (a fresh database?): register it
		default:
			return false, fmt.Errorf("login %s: %d", acct.name, status)
		}
	}
	status, err := a.post(ctx, hc, node+"/api/auth/register", body, acct)
	if err != nil {
		return false, err
	}
	switch status {
	case http.StatusCreated:
		return true, nil
	case http.StatusConflict:
		return false, fmt.Errorf("register %s: the name is taken, with another password: use another -users-file", acct.name)
	default:
		return false, fmt.Errorf("register %s: %d", acct.name, status)
	}
}

// post sends one register or login, again after each 429 or 503 for as long as its
// Retry-After says (with jitter), and returns the final status; on success the jar holds the
// session and acct its user id.
func (a *authenticator) post(ctx context.Context, hc *http.Client, endpoint string, body []byte, acct *account) (int, error) {
	for {
		req, err := http.NewRequestWithContext(ctx, "POST", endpoint, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, fmt.Errorf("sign in %s: %w", acct.name, err)
		}
		answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return 0, fmt.Errorf("sign in %s: %w", acct.name, err)
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusCreated:
			var s struct {
				Account *struct {
					ID int64 `json:"id"`
				} `json:"account"`
			}
			if json.Unmarshal(answer, &s) != nil || s.Account == nil || s.Account.ID <= 0 {
				return 0, fmt.Errorf("sign in %s: unexpected answer %.200q", acct.name, answer)
			}
			acct.id = s.Account.ID
			return resp.StatusCode, nil
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			wait := time.Second
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
				wait = time.Duration(s) * time.Second
			}
			if wait > maxRetryAfter {
				return 0, fmt.Errorf("sign in %s: %d, retry after %v: too long to wait", acct.name, resp.StatusCode, wait)
			}
			a.retried.Add(1)
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(wait + mrand.N(wait/2+time.Millisecond)):
			}
		default:
			return resp.StatusCode, nil
		}
	}
}
