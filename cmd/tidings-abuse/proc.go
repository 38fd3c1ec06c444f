package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverFigures is what the node spent during one scenario, read from Linux's /proc.
type serverFigures struct {
	// PeakRSSBytes is the node's largest resident memory during the scenario: sampled every
	// 20 ms, or the kernel's high-water mark (VmHWM) when that rose during the scenario.
	PeakRSSBytes  int64 `json:"peakRssBytes"`
	StartRSSBytes int64 `json:"startRssBytes"`
	// CPUSeconds is the node process's; PostgresCPUSeconds its descendants', that is its
	// managed PostgreSQL's (zero with an external DATABASE_URL). When the node exited, both
	// are as last sampled, at most 200 ms before.
	CPUSeconds         float64 `json:"cpuSeconds"`
	PostgresCPUSeconds float64 `json:"postgresCpuSeconds"`
	// Exited says the node was gone at the end of the scenario.
	Exited bool `json:"exited,omitempty"`
}

// usage samples one process during a scenario.
type usage struct {
	// Set at construction.
	pid                int
	startCPU, startPG  float64
	startRSS, startHWM int64
	stop, done         chan struct{}

	mu      sync.Mutex
	peak    int64   // guarded by mu
	cpu, pg float64 // guarded by mu: as last sampled
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times (100 on every Linux).
const clockTicks = 100

// watchUsage starts sampling pid; nil when pid is not given.
func watchUsage(pid int) *usage {
	if pid <= 0 {
		return nil
	}
	u := &usage{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	u.startRSS, u.startHWM, _ = memory(pid)
	u.startCPU, u.startPG = cpuTree(pid)
	u.peak, u.cpu, u.pg = u.startRSS, u.startCPU, u.startPG
	go func() {
		defer close(u.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-u.stop:
				return
			case <-t.C:
			}
			rss, _, err := memory(pid)
			if err != nil {
				continue
			}
			u.mu.Lock()
			u.peak = max(u.peak, rss)
			u.mu.Unlock()
			if i%10 == 0 {
				cpu, pg := cpuTree(pid)
				u.mu.Lock()
				u.cpu, u.pg = cpu, pg
				u.mu.Unlock()
			}
		}
	}()
	return u
}

// finish stops the sampling and returns the figures; nil when not sampling.
func (u *usage) finish() *serverFigures {
	if u == nil {
		return nil
	}
	close(u.stop)
	<-u.done
	f := &serverFigures{StartRSSBytes: u.startRSS, PeakRSSBytes: u.peak}
	cpu, pg := u.cpu, u.pg
	if rss, hwm, err := memory(u.pid); err != nil {
		f.Exited = true
	} else {
		f.PeakRSSBytes = max(f.PeakRSSBytes, rss)
		if hwm > u.startHWM {
			f.PeakRSSBytes = max(f.PeakRSSBytes, hwm) // the process's peak ever, reached during this scenario
		}
		cpu, pg = cpuTree(u.pid)
	}
	f.CPUSeconds, f.PostgresCPUSeconds = round2(cpu-u.startCPU), round2(pg-u.startPG)
	return f
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// memory is a process's resident memory and its high-water mark, from /proc/PID/status.
func memory(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, field := range []struct {
			prefix string
			v      *int64
		}{{"VmRSS:", &rss}, {"VmHWM:", &hwm}} {
			if v, ok := strings.CutPrefix(sc.Text(), field.prefix); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					return 0, 0, fmt.Errorf("/proc/%d/status: %q: %w", pid, sc.Text(), err)
				}
				*field.v = kb * 1024
			}
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status (a zombie?)", pid)
	}
	return rss, hwm, sc.Err()
}

// procStat is what cpuTree needs of /proc/PID/stat.
type procStat struct {
	ppid int
	// cpu is utime+stime+cutime+cstime: the process's own time and that of its children it
	// has reaped (so a PostgreSQL backend that ended still counts, in its postmaster).
	own, cpu float64
}

// cpuTree is the CPU seconds of pid itself and of all its descendants.
func cpuTree(pid int) (own, descendants float64) {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	stats := make(map[int]procStat, len(paths))
	children := map[int][]int{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		s := string(b)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		id, _ := strconv.Atoi(strings.TrimSpace(s[:lp]))
		// After the command name: state ppid … utime(11) stime(12) cutime(13) cstime(14).
		f := strings.Fields(s[rp+1:])
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		var t [4]float64
		for i := range t {
			t[i], _ = strconv.ParseFloat(f[11+i], 64)
		}
		stats[id] = procStat{ppid: ppid, own: (t[0] + t[1]) / clockTicks, cpu: (t[0] + t[1] + t[2] + t[3]) / clockTicks}
		children[ppid] = append(children[ppid], id)
	}
	own = stats[pid].own
	queue := children[pid]
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		descendants += stats[id].cpu
		queue = append(queue, children[id]...)
	}
	return own, descendants
}

// machineCPU is the CPU seconds every process on the machine has spent since boot: /proc/stat's
// first line, all but idle and iowait.
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		t, _ := strconv.ParseFloat(v, 64)
		busy += t
	}
	return busy / clockTicks
}
