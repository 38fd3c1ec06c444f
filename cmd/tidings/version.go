package main

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
)

// build is what the binary knows of itself, from its build information: `tidings version`,
// the first log line of serve and GET /healthz say it.
type build struct {
	version  string // the main module's version: a tag, a pseudo-version, or "devel"
	commit   string // the version-control revision, 7 characters, or "unknown"
	time     string // the revision's time, RFC 3339, or "unknown"
	modified bool   // the working tree had changes
	goVer    string // the Go release that built it
}

// readBuild reads the binary's build information: vcs.revision, vcs.time and vcs.modified,
// which `go build` records in a checkout (not `go run` or `go test`).
func readBuild() build {
	b := build{version: "devel", commit: "unknown", time: "unknown", goVer: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		b.version = v
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				b.commit = s.Value[:min(7, len(s.Value))]
			}
		case "vcs.time":
			if s.Value != "" {
				b.time = s.Value
			}
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

// String is the version line: tidings v1.2.0 (commit abc1234, built 2026-12-02T13:00:00Z, go1.26.8).
func (b build) String() string {
	modified := ""
	if b.modified {
		modified = ", modified"
	}
	return fmt.Sprintf("tidings %s (commit %s%s, built %s, %s)", b.version, b.commit, modified, b.time, b.goVer)
}

// attrs are the build's fields for a log line.
func (b build) attrs() []any {
	return []any{slog.String("version", b.version), slog.String("commit", b.commit), slog.Bool("modified", b.modified),
		slog.String("built", b.time), slog.String("go", b.goVer)}
}
