package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// burstResult is what a burst of parallel requests got.
type burstResult struct {
	Requests int `json:"requests"`
	// Answers counts the answers by status, or "timeout" and "connection-error".
	Answers map[string]int64 `json:"answers"`
	Ms      quantiles        `json:"ms"`
}

func (burstResult) settled(*wellBehaved)  {}
func (burstResult) check(map[string]bool) {}

// burst sends n requests at once from the attacker's address, without cookies; body(i) is the
// i-th request's body.
func (b *bench) burst(ctx context.Context, n int, method, path string, body func(i int) []byte) burstResult {
	tr := newTransport(b.o.abuseFrom, 0, b.o.requestTimeout)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var answers tally
	var took timings
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			status, _, err := b.send(ctx, hc, method, path, body(i))
			took.add(time.Since(t0))
			answers.add(outcome(status, err))
		})
	}
	close(start)
	wg.Wait()
	return burstResult{Requests: n, Answers: answers.counts(), Ms: took.quantiles()}
}

// randomPassword is a password nobody chose.
func randomPassword() string {
	var b [9]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// registerStorm registers the victim's name (taken) -register times at once.
func (b *bench) registerStorm(ctx context.Context, _ *wellBehaved) (attackResult, error) {
	return b.burst(ctx, b.o.register, "POST", "/api/auth/register", func(int) []byte {
		return credentials(b.victim.name, randomPassword())
	}), nil
}

// loginResult is what the guesses got.
type loginResult struct {
	burstResult
	// GuessesThrough counts the guesses the node evaluated: answered 401, not refused.
	GuessesThrough int64 `json:"guessesThrough"`
}

func (r *loginResult) check(c map[string]bool) {
	c["guesses"] = r.GuessesThrough <= theTargets.GuessesPerName
}

// loginBurst sends -guesses wrong passwords for the victim's name at once.
func (b *bench) loginBurst(ctx context.Context, _ *wellBehaved) (attackResult, error) {
	r := b.burst(ctx, b.o.guesses, "POST", "/api/auth/login", func(int) []byte {
		return credentials(b.victim.name, randomPassword())
	})
	return &loginResult{burstResult: r, GuessesThrough: r.Answers["401"]}, nil
}

// maxPatches bounds the rename flood whatever the node's speed.
const maxPatches = 1_000_000

// renameResult is what the rename flood got.
type renameResult struct {
	Loops   int              `json:"loops"`
	Patches int64            `json:"patches"`
	Answers map[string]int64 `json:"answers"`
	// UserUpdates counts the user-update events about the renamer that reached the watcher's
	// stream; none of its PATCHes changed anything.
	UserUpdates int64 `json:"userUpdates"`
}

func (r *renameResult) settled(w *wellBehaved) { r.UserUpdates = w.userUpdates(w.b.renamer.id) }

func (r *renameResult) check(c map[string]bool) { c["emptyUpdates"] = r.UserUpdates == 0 }

// renameFlood PATCHes the renamer with its own name and with {}, from -renamers loops at once,
// for -duration.
func (b *bench) renameFlood(ctx context.Context, _ *wellBehaved) (attackResult, error) {
	tr := newTransport(b.o.abuseFrom, b.o.renamers, b.o.requestTimeout)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Jar: b.renamer.hc.Jar, Transport: tr}
	same, _ := json.Marshal(map[string]string{"name": b.renamer.name})
	bodies := [][]byte{same, []byte("{}")}
	path := "/api/users/" + strconv.FormatInt(b.renamer.id, 10)
	ctx, cancel := context.WithTimeout(ctx, b.o.duration)
	defer cancel()
	var answers tally
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range b.o.renamers {
		wg.Go(func() {
			for i := sent.Add(1); i <= maxPatches && ctx.Err() == nil; i = sent.Add(1) {
				status, _, err := b.send(ctx, hc, "PATCH", path, bodies[i%2])
				if ctx.Err() == nil {
					answers.add(outcome(status, err))
				}
			}
		})
	}
	wg.Wait()
	return &renameResult{Loops: b.o.renamers, Patches: answers.total(), Answers: answers.counts()}, nil
}
