package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// config is every setting of PROTOCOL.md section 5. Each flag's default is its environment
// variable, and each variable's default is the documented one.
type config struct {
	databaseURL    string
	addr           string
	dataDir        string
	apiKey         string
	allowedOrigins []string
	sessionRotate  time.Duration
	sessionExpire  time.Duration
	sessionGrace   time.Duration
	retention      time.Duration
	pruneInterval  time.Duration
	dev            bool
	pprofAddr      string
	maxPerSession  int
	maxPerAddress  int
}

// parseConfig reads flags over environment variables over defaults, and checks every value,
// naming the bad setting in its error.
func parseConfig(name string, args []string, getenv func(string) string, out io.Writer) (config, error) {
	var c config
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.databaseURL, "database-url", env("DATABASE_URL", ""), "PostgreSQL URL; empty runs a managed local PostgreSQL in the data directory (DATABASE_URL)")
	fs.StringVar(&c.addr, "addr", env("TIDINGS_ADDR", "127.0.0.1:8080"), "listen address (TIDINGS_ADDR)")
	fs.StringVar(&c.dataDir, "data-dir", env("TIDINGS_DATA_DIR", "./data"), "managed database and other local state (TIDINGS_DATA_DIR)")
	// A secret is never a flag value: it would show in ps, shell history and pprof's cmdline.
	c.apiKey = getenv("TIDINGS_API_KEY")
	apiKeyFile := fs.String("api-key-file", env("TIDINGS_API_KEY_FILE", ""), "file holding the bearer key for POST /api/publish, instead of TIDINGS_API_KEY; neither: publishing over HTTP is off (TIDINGS_API_KEY_FILE)")
	fs.StringVar(&c.pprofAddr, "pprof-addr", env("TIDINGS_PPROF_ADDR", ""), "serve net/http/pprof on this separate address (e.g. 127.0.0.1:6060); empty: off (TIDINGS_PPROF_ADDR)")
	origins := fs.String("allowed-origins", env("TIDINGS_ALLOWED_ORIGINS", ""), "comma-separated allowed origins; empty: same host only (TIDINGS_ALLOWED_ORIGINS)")
	durations := []struct {
		p         *time.Duration
		flag, env string
		def, help string
	}{
		{&c.sessionRotate, "session-rotate", "TIDINGS_SESSION_ROTATE", "1h", "session rotation period"},
		{&c.sessionExpire, "session-expire", "TIDINGS_SESSION_EXPIRE", "336h", "session lifetime since its last rotation"},
		{&c.sessionGrace, "session-grace", "TIDINGS_SESSION_GRACE", "30s", "how long a rotated session stays usable"},
		{&c.retention, "retention", "TIDINGS_RETENTION", "168h", "how long events are kept for replay"},
		{&c.pruneInterval, "prune-interval", "TIDINGS_PRUNE_INTERVAL", "1m", "how often one node prunes old events"},
	}
	raw := make([]*string, len(durations))
	for i, d := range durations {
		raw[i] = fs.String(d.flag, env(d.env, d.def), d.help+" ("+d.env+")")
	}
	perSession := fs.String("max-streams-per-session", env("TIDINGS_MAX_STREAMS_PER_SESSION", "16"), "streams one session may hold open on a node; -1: no limit (TIDINGS_MAX_STREAMS_PER_SESSION)")
	perAddress := fs.String("max-streams-per-address", env("TIDINGS_MAX_STREAMS_PER_ADDRESS", "0"), "streams one remote address may hold open on a node; 0: no limit (TIDINGS_MAX_STREAMS_PER_ADDRESS)")
	devDefault := env("TIDINGS_DEV", "false")
	dev := fs.String("dev", devDefault, "development mode: cookie tidings-session without Secure (TIDINGS_DEV)")
	for _, a := range args {
		if name := strings.TrimLeft(a, "-"); a != name && (name == "api-key" || strings.HasPrefix(name, "api-key=")) {
			return c, errors.New("-api-key is not a flag: a key on the command line shows in ps and shell history; set TIDINGS_API_KEY, or -api-key-file")
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for i, d := range durations {
		v, err := time.ParseDuration(*raw[i])
		if err != nil || v <= 0 {
			return c, fmt.Errorf("invalid %s (-%s) %q: want a positive Go duration such as 90s or 1h", d.env, d.flag, *raw[i])
		}
		*d.p = v
	}
	var err error
	if c.maxPerSession, err = strconv.Atoi(*perSession); err != nil || c.maxPerSession == 0 || c.maxPerSession < -1 {
		return c, fmt.Errorf("invalid TIDINGS_MAX_STREAMS_PER_SESSION (-max-streams-per-session) %q: want a positive number, or -1 for no limit", *perSession)
	}
	if c.maxPerAddress, err = strconv.Atoi(*perAddress); err != nil || c.maxPerAddress < 0 {
		return c, fmt.Errorf("invalid TIDINGS_MAX_STREAMS_PER_ADDRESS (-max-streams-per-address) %q: want 0 (no limit) or a positive number", *perAddress)
	}
	if c.dev, err = strconv.ParseBool(*dev); err != nil {
		return c, fmt.Errorf("invalid TIDINGS_DEV (-dev) %q: want true or false", *dev)
	}
	if *apiKeyFile != "" {
		if c.apiKey != "" {
			return c, errors.New("invalid TIDINGS_API_KEY_FILE (-api-key-file): TIDINGS_API_KEY is set too; set one of them")
		}
		b, err := os.ReadFile(*apiKeyFile)
		if err != nil {
			return c, fmt.Errorf("invalid TIDINGS_API_KEY_FILE (-api-key-file): %w", err)
		}
		if c.apiKey = strings.TrimSpace(string(b)); c.apiKey == "" {
			return c, fmt.Errorf("invalid TIDINGS_API_KEY_FILE (-api-key-file): %s holds no key", *apiKeyFile)
		}
	}
	for o := range strings.SplitSeq(*origins, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			return c, fmt.Errorf("invalid TIDINGS_ALLOWED_ORIGINS (-allowed-origins) entry %q: want scheme://host[:port]", o)
		}
		c.allowedOrigins = append(c.allowedOrigins, o)
	}
	if c.addr == "" {
		return c, fmt.Errorf("invalid TIDINGS_ADDR (-addr): empty")
	}
	if c.databaseURL == "" && c.dataDir == "" {
		return c, fmt.Errorf("invalid TIDINGS_DATA_DIR (-data-dir): empty, and no DATABASE_URL is set")
	}
	return c, nil
}
