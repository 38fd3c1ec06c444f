package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"tidings/data"
	"tidings/web"
)

// config is every setting of docs/protocol.md section 5. Each flag's default is its
// environment variable, and each variable's default is the documented one.
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
	presenceGrace  time.Duration
	presenceWait   time.Duration
	dev            bool
	devPublic      bool
	pprofAddr      string
	metricsAddr    string
	maxPerSession  int
	maxPerAddress  int
	trustedProxies []netip.Prefix
	allowedHosts   []string
	dbWait         time.Duration // 0: one try
	logFormat      string        // "text" or "json"
	logLevel       slog.Level
	accessLog      bool
}

// usageError is a command line that cannot be parsed (an unknown flag, a flag without its value,
// a stray argument): main prints it with the command's usage on standard error and exits 2.
type usageError struct {
	err   error
	usage string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// flagUsage is the usage of the command name with the flags of fs.
func flagUsage(name, synopsis string, fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s %s\n\nEvery flag defaults to the environment variable in its parentheses (docs/protocol.md section 5).\n\n", name, synopsis)
	out := fs.Output()
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(out)
	return b.String()
}

// parseFlags parses args with fs. On -h, -help or --help it prints the usage to stdout and
// returns flag.ErrHelp; any other failure is a *usageError.
func parseFlags(fs *flag.FlagSet, synopsis string, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard) // the flag package's own messages: ours are below
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, flagUsage(fs.Name(), synopsis, fs))
		return err
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err != nil {
		return &usageError{err: err, usage: flagUsage(fs.Name(), synopsis, fs)}
	}
	return nil
}

// envBool reads the boolean variable key (true, false, 1, 0, as strconv.ParseBool takes them),
// def when it is empty; a value it cannot read is an error naming key and flag.
func envBool(getenv func(string) string, key, flagName string, def bool) (bool, error) {
	v := getenv(key)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def, fmt.Errorf("invalid %s (-%s) %q: want true or false", key, flagName, v)
	}
	return b, nil
}

// parseConfig reads flags over environment variables over defaults, and checks every value,
// naming the bad setting in its error. define adds a command's own flags (user create's). A
// command line that cannot be parsed is a *usageError; -h prints the usage to stdout and
// returns flag.ErrHelp.
func parseConfig(name string, args []string, getenv func(string) string, stdout io.Writer, define ...func(*flag.FlagSet)) (config, error) {
	var c config
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&c.databaseURL, "database-url", env("DATABASE_URL", ""), "PostgreSQL URL; empty runs a managed local PostgreSQL in the data directory (DATABASE_URL)")
	fs.StringVar(&c.addr, "addr", env("TIDINGS_ADDR", "127.0.0.1:8080"), "listen address (TIDINGS_ADDR)")
	fs.StringVar(&c.dataDir, "data-dir", env("TIDINGS_DATA_DIR", "./data"), "managed database and other local state (TIDINGS_DATA_DIR)")
	// A secret is never a flag value: it would show in ps, shell history and pprof's cmdline.
	c.apiKey = getenv("TIDINGS_API_KEY")
	apiKeyFile := fs.String("api-key-file", env("TIDINGS_API_KEY_FILE", ""), "file holding the bearer key for POST /api/publish, instead of TIDINGS_API_KEY; neither: publishing over HTTP is off (TIDINGS_API_KEY_FILE)")
	fs.StringVar(&c.pprofAddr, "pprof-addr", env("TIDINGS_PPROF_ADDR", ""), "serve net/http/pprof on this separate address (e.g. 127.0.0.1:6060), the metrics address when that is set; empty: off (TIDINGS_PPROF_ADDR)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", env("TIDINGS_METRICS_ADDR", ""), "serve /metrics (and pprof, when on) only on this address; empty: /metrics on the main listener (TIDINGS_METRICS_ADDR)")
	proxies := fs.String("trusted-proxies", env("TIDINGS_TRUSTED_PROXIES", ""), "comma-separated CIDRs of proxies whose X-Forwarded-For / Forwarded give the client address; empty: none (TIDINGS_TRUSTED_PROXIES)")
	hosts := fs.String("allowed-hosts", env("TIDINGS_ALLOWED_HOSTS", ""), "comma-separated Host values answered, others get 421; empty: any, but only loopback names on a loopback address (TIDINGS_ALLOWED_HOSTS)")
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
		{&c.presenceGrace, "presence-grace", "TIDINGS_PRESENCE_GRACE", "5s", "how long a user stays online after their last stream closed"},
		{&c.presenceWait, "presence-timeout", "TIDINGS_PRESENCE_TIMEOUT", "15s", "at most how long the streams of a dead node still count as open"},
	}
	raw := make([]*string, len(durations))
	for i, d := range durations {
		raw[i] = fs.String(d.flag, env(d.env, d.def), d.help+" ("+d.env+")")
	}
	perSession := fs.String("max-streams-per-session", env("TIDINGS_MAX_STREAMS_PER_SESSION", "16"), "streams one session may hold open on a node; -1: no limit (TIDINGS_MAX_STREAMS_PER_SESSION)")
	perAddress := fs.String("max-streams-per-address", env("TIDINGS_MAX_STREAMS_PER_ADDRESS", "1000"), "streams one client address may hold open on a node, loopback ones unlimited; 0: no limit (TIDINGS_MAX_STREAMS_PER_ADDRESS)")
	dbWait := fs.String("db-wait", env("TIDINGS_DB_WAIT", "5m"), "how long a starting node waits for PostgreSQL, trying again with backoff, before it gives up; 0: one try (TIDINGS_DB_WAIT)")
	fs.StringVar(&c.logFormat, "log-format", env("TIDINGS_LOG_FORMAT", "text"), "log lines on standard error as text or json (TIDINGS_LOG_FORMAT)")
	logLevel := fs.String("log-level", env("TIDINGS_LOG_LEVEL", "info"), "the least important log lines written: debug, info, warn or error (TIDINGS_LOG_LEVEL)")
	// Booleans are boolean flags: -dev alone means true, -dev=false works.
	bools := []struct {
		p               *bool
		flag, env, help string
		err             error // of the variable, reported unless the flag is given
	}{
		{p: &c.dev, flag: "dev", env: "TIDINGS_DEV", help: "development mode: cookie tidings-session without Secure"},
		{p: &c.devPublic, flag: "dev-public", env: "TIDINGS_DEV_PUBLIC", help: "allow development mode on an address that is not loopback"},
		{p: &c.accessLog, flag: "access-log", env: "TIDINGS_ACCESS_LOG", help: "log one line per HTTP request: method, path without the query, status, bytes, duration, request id, client address"},
	}
	for i := range bools {
		b := &bools[i]
		def, err := envBool(getenv, b.env, b.flag, false)
		b.err = err
		fs.BoolVar(b.p, b.flag, def, b.help+" ("+b.env+")")
	}
	for _, d := range define {
		d(fs)
	}
	synopsis := "[flags]"
	if strings.HasSuffix(name, "user create") {
		synopsis = "--name N --password-file F [--type regular|crew|admin] [flags]"
	}
	for _, a := range args {
		if name := strings.TrimLeft(a, "-"); a != name && (name == "api-key" || strings.HasPrefix(name, "api-key=")) {
			return c, &usageError{err: errors.New("-api-key is not a flag: a key on the command line shows in ps and shell history; set TIDINGS_API_KEY, or -api-key-file"),
				usage: flagUsage(fs.Name(), synopsis, fs)}
		}
	}
	if err := parseFlags(fs, synopsis, args, stdout); err != nil {
		return c, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, b := range bools {
		if b.err != nil && !set[b.flag] {
			return c, b.err
		}
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
		return c, fmt.Errorf("invalid TIDINGS_MAX_STREAMS_PER_ADDRESS (-max-streams-per-address) %q: want a positive number, or 0 for no limit", *perAddress)
	}
	if c.dbWait, err = time.ParseDuration(*dbWait); err != nil || c.dbWait < 0 {
		return c, fmt.Errorf("invalid TIDINGS_DB_WAIT (-db-wait) %q: want a Go duration such as 5m, or 0 for one try", *dbWait)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return c, fmt.Errorf("invalid TIDINGS_LOG_FORMAT (-log-format) %q: want text or json", c.logFormat)
	}
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	var ok bool
	if c.logLevel, ok = levels[strings.ToLower(*logLevel)]; !ok {
		return c, fmt.Errorf("invalid TIDINGS_LOG_LEVEL (-log-level) %q: want debug, info, warn or error", *logLevel)
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
	for p := range strings.SplitSeq(*proxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			a, aerr := netip.ParseAddr(p)
			if aerr != nil || a.Zone() != "" {
				return c, fmt.Errorf("invalid TIDINGS_TRUSTED_PROXIES (-trusted-proxies) entry %q: want a CIDR such as 10.0.0.0/8 or fd00::/8, or one address", p)
			}
			prefix = netip.PrefixFrom(a, a.BitLen())
		}
		if prefix.Addr().Is4In6() { // an IPv4-mapped prefix: client addresses are unmapped
			if prefix.Bits() < 96 {
				return c, fmt.Errorf("invalid TIDINGS_TRUSTED_PROXIES (-trusted-proxies) entry %q: an IPv4-mapped prefix shorter than /96", p)
			}
			prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
		}
		c.trustedProxies = append(c.trustedProxies, prefix.Masked())
	}
	for h := range strings.SplitSeq(*hosts, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if u, err := url.Parse("//" + h); err != nil || u.Host != h || u.User != nil || !hostName(u.Hostname()) || strings.HasSuffix(h, ":") {
			return c, fmt.Errorf("invalid TIDINGS_ALLOWED_HOSTS (-allowed-hosts) entry %q: want a Host value, name or name:port, such as tidings.example.com or [::1]:8080", h)
		}
		c.allowedHosts = append(c.allowedHosts, h)
	}
	for _, a := range []struct{ name, flag, value string }{
		{"TIDINGS_METRICS_ADDR", "metrics-addr", c.metricsAddr},
		{"TIDINGS_PPROF_ADDR", "pprof-addr", c.pprofAddr},
	} {
		if _, _, err := net.SplitHostPort(a.value); a.value != "" && err != nil {
			return c, fmt.Errorf("invalid %s (-%s) %q: want host:port, such as 127.0.0.1:9090", a.name, a.flag, a.value)
		}
	}
	if c.metricsAddr != "" && c.pprofAddr != "" && c.pprofAddr != c.metricsAddr {
		return c, fmt.Errorf("invalid TIDINGS_PPROF_ADDR (-pprof-addr) %q: with TIDINGS_METRICS_ADDR set, pprof is served only there; set both to %q", c.pprofAddr, c.metricsAddr)
	}
	for o := range strings.SplitSeq(*origins, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if err := web.CheckOrigin(o); err != nil {
			return c, fmt.Errorf("invalid TIDINGS_ALLOWED_ORIGINS (-allowed-origins) entry %q: %w", o, err)
		}
		c.allowedOrigins = append(c.allowedOrigins, o)
	}
	if c.addr == "" {
		return c, fmt.Errorf("invalid TIDINGS_ADDR (-addr): empty")
	}
	if c.databaseURL != "" {
		if err := data.CheckURL(c.databaseURL); err != nil {
			return c, fmt.Errorf("invalid DATABASE_URL (-database-url): %w", err)
		}
	}
	if c.databaseURL == "" && c.dataDir == "" {
		return c, fmt.Errorf("invalid TIDINGS_DATA_DIR (-data-dir): empty, and no DATABASE_URL is set")
	}
	return c, nil
}

// hostName reports whether s is a DNS name or an IP address, as a Host header names a server.
func hostName(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return s != ""
}

// loopbackAddr reports whether the listen address addr is on loopback: localhost, or an
// address of 127.0.0.0/8 or ::1. Any other name is taken as public, whatever it resolves to.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// checkDev refuses development mode on an address that is not loopback unless
// TIDINGS_DEV_PUBLIC allows it: its session cookie lacks Secure and the __Host- prefix, so it
// would cross the network in the clear, and a warning in a log goes unread.
func (c config) checkDev() error {
	if !c.dev || c.devPublic || loopbackAddr(c.addr) {
		return nil
	}
	return fmt.Errorf("TIDINGS_DEV=true (-dev) with TIDINGS_ADDR=%s (-addr), which is not a loopback address: "+
		"development mode sends the session cookie without Secure, readable on the network; listen on 127.0.0.1, "+
		"or set TIDINGS_DEV_PUBLIC=true (-dev-public) if this is really meant", c.addr)
}
