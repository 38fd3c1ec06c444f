package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// summary is the last line of a run.
type summary struct {
	URL            string            `json:"url"`
	Run            string            `json:"run"`
	Targets        targets           `json:"targets"`
	Scenarios      []scenarioSummary `json:"scenarios"`
	Pass           bool              `json:"pass"` // every check of every scenario held
	ElapsedSeconds float64           `json:"elapsedSeconds"`
}

// targets are issue 10's, on the 2-core reference machine.
type targets struct {
	PeakRSSBytes    int64   `json:"peakRssBytes"`    // the node's, in every scenario, below
	LoginP99Ms      float64 `json:"loginP99Ms"`      // the well-behaved client's, below, with no failure
	EventDelayMaxMs float64 `json:"eventDelayMaxMs"` // at most, with no message lost or refused
	GuessesPerName  int64   `json:"guessesPerName"`  // per window, whatever the parallelism: at most
}

var theTargets = targets{PeakRSSBytes: 512 << 20, LoginP99Ms: 2000, EventDelayMaxMs: 1000, GuessesPerName: 10}

// scenarioSummary is one scenario's figures and which targets held.
type scenarioSummary struct {
	Name           string         `json:"name"`
	ElapsedSeconds float64        `json:"elapsedSeconds"`
	Attack         attackResult   `json:"attack"`
	WellBehaved    *wbReport      `json:"wellBehaved"`
	Server         *serverFigures `json:"server,omitempty"`
	// BenchCPUSeconds is this command's own CPU time while it attacked, MachineCPUSeconds that
	// of every process on the machine (the node's, its PostgreSQL's and this command's
	// included): on a shared machine, the rest was someone else's, and slowed the node down.
	BenchCPUSeconds   float64 `json:"benchCpuSeconds"`
	MachineCPUSeconds float64 `json:"machineCpuSeconds"`
	// Checks says which targets held: peakRss (with -pid), login, events, and the scenario's
	// own (guesses, emptyUpdates, nulRefused, slowBodiesCut).
	Checks map[string]bool `json:"checks"`
	Pass   bool            `json:"pass"`
	Error  string          `json:"error,omitempty"` // the scenario could not run
}

// attackResult is what one attack got.
type attackResult interface {
	// settled is called once the well-behaved client's last message was delivered: every
	// event the attack caused has been delivered by then.
	settled(w *wellBehaved)
	// check adds the attack's own targets.
	check(c map[string]bool)
}

// scenario is one attack, and what it needs done before the measuring starts.
type scenario struct {
	prepare func(ctx context.Context) error
	attack  func(ctx context.Context, w *wellBehaved) (attackResult, error)
}

func (b *bench) scenario(name string) scenario {
	switch name {
	case "register-storm":
		return scenario{attack: b.registerStorm}
	case "login-burst":
		return scenario{attack: b.loginBurst}
	case "rename-flood":
		return scenario{attack: b.renameFlood}
	case "nul-flood":
		return scenario{attack: b.nulFlood}
	case "anon-replay":
		return scenario{prepare: b.fill, attack: b.anonReplay}
	case "slow-body":
		return scenario{attack: b.slowBodies}
	}
	panic("unknown scenario " + name) // parseOptions admits only the names above
}

func (b *bench) runAll(ctx context.Context) summary {
	start := time.Now()
	s := summary{URL: b.o.url, Run: b.runID, Targets: theTargets, Pass: true}
	for _, name := range b.o.scenarios {
		if ctx.Err() != nil {
			break
		}
		sc := b.runOne(ctx, name)
		s.Pass = s.Pass && sc.Pass
		s.Scenarios = append(s.Scenarios, sc)
	}
	if len(s.Scenarios) < len(b.o.scenarios) {
		s.Pass = false
	}
	s.ElapsedSeconds = time.Since(start).Seconds()
	return s
}

func (b *bench) runOne(ctx context.Context, name string) (s scenarioSummary) {
	s = scenarioSummary{Name: name, Checks: map[string]bool{}}
	start := time.Now()
	defer func() {
		s.ElapsedSeconds = time.Since(start).Seconds()
		s.Pass = s.Error == ""
		for _, ok := range s.Checks {
			s.Pass = s.Pass && ok
		}
		b.report(s)
	}()
	sc := b.scenario(name)
	fmt.Fprintf(b.stderr, "%s: starting\n", name)
	if sc.prepare != nil {
		if err := sc.prepare(ctx); err != nil {
			s.Error = err.Error()
			return s
		}
	}
	w, err := b.startWellBehaved(ctx, name)
	if err != nil {
		s.Error = err.Error()
		return s
	}
	u := watchUsage(b.o.pid)
	bench, _ := cpuTree(os.Getpid())
	machine := machineCPU()
	res, err := sc.attack(ctx, w)
	rep := w.stop(ctx)
	s.WellBehaved, s.Server, s.Attack = &rep, u.finish(), res
	own, _ := cpuTree(os.Getpid())
	s.BenchCPUSeconds, s.MachineCPUSeconds = round2(own-bench), round2(machineCPU()-machine)
	if err != nil {
		s.Error = err.Error()
	}
	if res != nil {
		res.settled(w)
		res.check(s.Checks)
	}
	if s.Server != nil {
		s.Checks["peakRss"] = !s.Server.Exited && s.Server.PeakRSSBytes < theTargets.PeakRSSBytes
	}
	s.Checks["login"] = rep.LoginMs.N > 0 && rep.LoginMs.P99 < theTargets.LoginP99Ms && len(rep.LoginFailures) == 0
	s.Checks["events"] = rep.Delivered > 0 && rep.Lost == 0 && len(rep.PublishFailures) == 0 && rep.EventDelayMs.Max <= theTargets.EventDelayMaxMs
	return s
}

// report prints one scenario's main figures for a person, next to the targets.
func (b *bench) report(s scenarioSummary) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: %.1fs", s.Name, s.ElapsedSeconds)
	if s.Attack != nil {
		a, _ := json.Marshal(s.Attack)
		fmt.Fprintf(&sb, "; attack %s", a)
	}
	if w := s.WellBehaved; w != nil {
		fmt.Fprintf(&sb, "; login p50 %.0f p99 %.0f ms (target < %.0f) failures %v; page p50 %.0f p99 %.0f ms failures %v",
			w.LoginMs.P50, w.LoginMs.P99, theTargets.LoginP99Ms, w.LoginFailures, w.PageMs.P50, w.PageMs.P99, w.PageFailures)
		fmt.Fprintf(&sb, "; events %d/%d delivered, lost %d, refused %v, delay p50 %.0f p99 %.0f max %.0f ms (target <= %.0f)",
			w.Delivered, w.Published, w.Lost, w.PublishFailures, w.EventDelayMs.P50, w.EventDelayMs.P99, w.EventDelayMs.Max, theTargets.EventDelayMaxMs)
	}
	if f := s.Server; f != nil {
		fmt.Fprintf(&sb, "; node peak RSS %d MiB (target < %d), CPU %.1fs + PostgreSQL %.1fs", f.PeakRSSBytes>>20, theTargets.PeakRSSBytes>>20, f.CPUSeconds, f.PostgresCPUSeconds)
		if f.Exited {
			sb.WriteString(", EXITED")
		}
	}
	fmt.Fprintf(&sb, "; this command's CPU %.1fs, the machine's %.1fs", s.BenchCPUSeconds, s.MachineCPUSeconds)
	fmt.Fprintf(&sb, "; checks %v", s.Checks)
	if s.Error != "" {
		fmt.Fprintf(&sb, "; error: %s", s.Error)
	}
	fmt.Fprintln(b.stderr, sb.String())
}
