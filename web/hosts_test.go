package web

import "testing"

func TestHosts(t *testing.T) {
	t.Parallel()
	loopback := newHosts(nil, true)
	anyHost := newHosts(nil, false)
	listed := newHosts([]string{"Tidings.Example.com", "[::1]:8080", "10.0.0.11:8080"}, true)
	for _, c := range []struct {
		host                  string
		loopback, any, inList bool
	}{
		{"", true, true, true},
		{"localhost", true, true, false},
		{"LOCALHOST:8080", true, true, false},
		{"127.0.0.1:8080", true, true, false},
		{"127.5.6.7", true, true, false},
		{"[::1]:8080", true, true, true},
		{"[::1]:9090", true, true, false},
		{"[::1]", true, true, false},
		{"evil.example", false, true, false},
		{"evil.example:8080", false, true, false},
		{"localhost.evil.example", false, true, false},
		{"127.0.0.1.evil.example", false, true, false},
		{"10.0.0.11:8080", false, true, true},
		{"10.0.0.11", false, true, false},
		{"tidings.example.com", false, true, true},
		{"tidings.example.com:443", false, true, true},
		{"TIDINGS.example.com.", false, true, true},
		{"example.com", false, true, false},
	} {
		if got := loopback.allow(c.host); got != c.loopback {
			t.Errorf("loopback listener, Host %q: got %v, want %v", c.host, got, c.loopback)
		}
		if got := anyHost.allow(c.host); got != c.any {
			t.Errorf("public listener, Host %q: got %v, want %v", c.host, got, c.any)
		}
		if got := listed.allow(c.host); got != c.inList {
			t.Errorf("a list, Host %q: got %v, want %v", c.host, got, c.inList)
		}
	}
}
