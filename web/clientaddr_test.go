package web

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	const proxy = "10.0.0.1:5555"
	cases := []struct {
		name   string
		remote string
		xff    []string
		fwd    []string
		want   string
	}{
		{"an untrusted peer's headers are ignored", "203.0.113.9:5555", []string{"198.51.100.7"}, []string{"for=198.51.100.8"}, "203.0.113.9"},
		{"no header: the proxy itself", proxy, nil, nil, "10.0.0.1"},
		{"one hop", proxy, []string{"198.51.100.7"}, nil, "198.51.100.7"},
		{"what the client sent is left of its address", proxy, []string{"1.1.1.1, 198.51.100.7"}, nil, "198.51.100.7"},
		{"two trusted proxies", proxy, []string{"198.51.100.7, 10.0.0.2"}, nil, "198.51.100.7"},
		{"several header lines are one list", proxy, []string{"1.1.1.1", "198.51.100.7,10.0.0.2"}, nil, "198.51.100.7"},
		{"every hop trusted: the farthest", proxy, []string{"10.0.0.3, 10.0.0.2"}, nil, "10.0.0.3"},
		{"an unreadable hop: the proxy that wrote it", proxy, []string{"198.51.100.7, unknown, 10.0.0.2"}, nil, "10.0.0.2"},
		{"an empty header", proxy, []string{""}, nil, "10.0.0.1"},
		{"a port", proxy, []string{"198.51.100.7:4711"}, nil, "198.51.100.7"},
		{"IPv6", proxy, []string{"2001:db8::1"}, nil, "2001:db8::1"},
		{"IPv6 in brackets with a port", proxy, []string{"[2001:db8::1]:4711"}, nil, "2001:db8::1"},
		{"IPv4-mapped", proxy, []string{"::ffff:198.51.100.7"}, nil, "198.51.100.7"},
		{"a zone is dropped", proxy, []string{"fe80::1%eth0"}, nil, "fe80::1"},
		{"Forwarded", proxy, nil, []string{"for=198.51.100.7;proto=https;by=10.0.0.1"}, "198.51.100.7"},
		{"Forwarded, right-most untrusted", proxy, nil, []string{`for=1.1.1.1, for="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::17"},
		{"Forwarded, names in any case", proxy, nil, []string{`For="198.51.100.7:80"`}, "198.51.100.7"},
		{"Forwarded, a comma and a semicolon in a quoted value", proxy, nil, []string{`for="_a,b;c", for=198.51.100.7`}, "198.51.100.7"},
		{"Forwarded, several lines", proxy, nil, []string{"for=1.1.1.1", "for=198.51.100.7;proto=http, for=10.0.0.2"}, "198.51.100.7"},
		{"Forwarded unknown", proxy, nil, []string{"for=unknown"}, "10.0.0.1"},
		{"Forwarded without for", proxy, nil, []string{"proto=https"}, "10.0.0.1"},
		{"Forwarded with a quote that does not end", proxy, nil, []string{`for=198.51.100.7, for="198.51.100.8`}, "10.0.0.1"},
		{"X-Forwarded-For wins over Forwarded", proxy, []string{"198.51.100.7"}, []string{"for=1.1.1.1"}, "198.51.100.7"},
		{"an IPv6 proxy", "[::1]:80", []string{"198.51.100.7"}, nil, "198.51.100.7"},
		{"an IPv4-mapped peer", "[::ffff:10.0.0.1]:80", []string{"198.51.100.7"}, nil, "198.51.100.7"},
		{"a peer that is no address", "pipe", []string{"198.51.100.7"}, nil, "invalid IP"},
	}
	for _, c := range cases {
		h := http.Header{}
		for _, v := range c.xff {
			h.Add("X-Forwarded-For", v)
		}
		for _, v := range c.fwd {
			h.Add("Forwarded", v)
		}
		if got := ClientIP(c.remote, h, trusted); got.String() != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}

	// A chain longer than maxHops is read from the right only: the spoofed left end is never
	// reached, however long the header.
	long := "1.1.1.1" + strings.Repeat(", 10.0.0.9", 100)
	if got := ClientIP(proxy, http.Header{"X-Forwarded-For": {long}}, trusted); got.String() != "10.0.0.9" {
		t.Errorf("a long chain: got %s, want 10.0.0.9", got)
	}
	long = "for=1.1.1.1" + strings.Repeat(", for=10.0.0.9", 100)
	if got := ClientIP(proxy, http.Header{"Forwarded": {long}}, trusted); got.String() != "10.0.0.9" {
		t.Errorf("a long Forwarded chain: got %s, want 10.0.0.9", got)
	}
}

func TestAddrKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ addr, remote, want string }{
		{"198.51.100.7", "", "198.51.100.7"},
		{"2001:db8:1:2:3:4:5:6", "", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::ffff", "", "2001:db8:1:2::/64"},
		{"::1", "", "::1"}, // a loopback key is still seen as one
		{"", "pipe", "pipe"},
		{"", "host:9", "host"},
	} {
		var a netip.Addr
		if c.addr != "" {
			a = netip.MustParseAddr(c.addr)
		}
		if got := addrKey(a, c.remote); got != c.want {
			t.Errorf("%s %s: got %s, want %s", c.addr, c.remote, got, c.want)
		}
	}
}

// FuzzClientIP: any headers from a trusted peer give a valid, unzoned, unmapped address, and
// X-Forwarded-For is read as a plain split of its hops would read it.
func FuzzClientIP(f *testing.F) {
	for _, s := range [][2]string{
		{"198.51.100.7, 10.0.0.2", ""},
		{"", `for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.2`},
		{"unknown,,", `for="a\"b,c";by=x`},
		{"[::ffff:10.0.0.1]:1", `for="`},
	} {
		f.Add(s[0], s[1], true)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	f.Fuzz(func(t *testing.T, xff, fwd string, peerTrusted bool) {
		remote := "203.0.113.1:9"
		if peerTrusted {
			remote = "10.0.0.1:9"
		}
		h := http.Header{}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		if fwd != "" {
			h.Set("Forwarded", fwd)
		}
		got := ClientIP(remote, h, trusted)
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("got %v", got)
		}
		if !peerTrusted && got.String() != "203.0.113.1" {
			t.Fatalf("an untrusted peer: got %v", got)
		}
		if peerTrusted && xff != "" {
			want := netip.MustParseAddr("10.0.0.1")
			hops := strings.Split(xff, ",")
			for i := len(hops) - 1; i >= 0 && i >= len(hops)-maxHops; i-- {
				a, ok := parseHop(hops[i])
				if !ok {
					break
				}
				if want = a; !inPrefixes(a, trusted) {
					break
				}
			}
			if got != want {
				t.Fatalf("X-Forwarded-For %q: got %v, want %v", xff, got, want)
			}
		}
	})
}
