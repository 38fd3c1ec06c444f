package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverUsage is what the server process spent during the run (Linux /proc).
type serverUsage struct {
	CPUSeconds    float64 `json:"cpuSeconds"`
	PeakRSSBytes  int64   `json:"peakRssBytes"`
	StartRSSBytes int64   `json:"startRssBytes"`
}

// usageSampler reads a process's CPU time and resident memory.
type usageSampler struct {
	pid      int
	startCPU float64

	mu      sync.Mutex
	peakRSS int64 // guarded by mu
	start   int64
}

// meter measures a run: its time, the server's usage, this process's CPU and the machine's.
type meter struct {
	start      time.Time
	usage      *usageSampler // nil without a server pid
	selfCPU    float64
	machineCPU float64
}

// startMeter starts measuring a run against the server process pid (0: none).
func startMeter(pid int) *meter {
	m := &meter{start: time.Now(), usage: startUsage(pid)}
	m.selfCPU, _ = cpuSeconds(os.Getpid())
	m.machineCPU, _ = machineBusySeconds()
	return m
}

// selfCPUSeconds is this process's CPU time so far.
func selfCPUSeconds() float64 {
	cpu, _ := cpuSeconds(os.Getpid())
	return cpu
}

// finish writes what the run took into s.
func (m *meter) finish(s *summary) {
	s.Elapsed = time.Since(m.start)
	s.ElapsedSeconds = math.Round(s.Elapsed.Seconds()*100) / 100
	s.Server = m.usage.finish()
	if cpu, err := cpuSeconds(os.Getpid()); err == nil {
		s.GeneratorCPUSeconds = math.Round((cpu-m.selfCPU)*100) / 100
	}
	if cpu, err := machineBusySeconds(); err == nil {
		s.MachineCPUSeconds = math.Round((cpu-m.machineCPU)*100) / 100
	}
}

// clockTicks is the kernel's USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func startUsage(pid int) *usageSampler {
	if pid <= 0 {
		return nil
	}
	u := &usageSampler{pid: pid}
	u.startCPU, _ = cpuSeconds(pid)
	u.start, _ = rssBytes(pid)
	u.peakRSS = u.start
	return u
}

func (u *usageSampler) sample() {
	if u == nil {
		return
	}
	if rss, err := rssBytes(u.pid); err == nil {
		u.mu.Lock()
		u.peakRSS = max(u.peakRSS, rss)
		u.mu.Unlock()
	}
}

func (u *usageSampler) finish() *serverUsage {
	if u == nil {
		return nil
	}
	u.sample()
	cpu, err := cpuSeconds(u.pid)
	if err != nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return &serverUsage{CPUSeconds: cpu - u.startCPU, PeakRSSBytes: u.peakRSS, StartRSSBytes: u.start}
}

// cpuSeconds is utime+stime of a process.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks, nil
}

// rssBytes is a process's resident memory.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// machineBusySeconds is the CPU time every process on the machine has spent (/proc/stat: all
// but idle and iowait): what a run spent beyond the server's and the generator's own was
// spent by something else, which makes its figures worse.
func machineBusySeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	var busy float64
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return busy / clockTicks, nil
}
