package datatest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Proxy forwards TCP connections on a local port to a PostgreSQL server (over TCP or its Unix
// socket), and can black-hole them: a frozen connection forwards no byte either way and closes
// nothing, as when a failover moves the server's address and the packets of the open
// connections just vanish (no RST). Connect through ConnString.
type Proxy struct {
	// Set at construction.
	ln         net.Listener
	network    string // of the server: "unix" or "tcp"
	address    string
	connString string // the server's, pointed at the proxy

	mu     sync.Mutex
	thawed *sync.Cond              // on mu: broadcast when a connection thaws or closes
	frozen bool                    // guarded by mu: connections accepted from now on start frozen
	closed bool                    // guarded by mu
	conns  map[*proxyConn]struct{} // guarded by mu: the open connections
	opened int                     // guarded by mu: connections accepted so far

	wg sync.WaitGroup // the accept loop and every connection's two pumps
}

// proxyConn is one forwarded connection.
type proxyConn struct {
	client, server net.Conn // set at construction
	frozen         bool     // guarded by Proxy.mu
	closed         bool     // guarded by Proxy.mu
}

// NewProxy starts a proxy to the server of connString (a URL or keyword/value string, such as
// NewDatabase returns) on a free port of 127.0.0.1, and closes it in t.Cleanup.
func NewProxy(t testing.TB, connString string) *Proxy {
	t.Helper()
	p, err := newProxy(connString)
	if err != nil {
		t.Fatalf("datatest: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func newProxy(connString string) (*Proxy, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("proxy: parse connection string: %w", err)
	}
	p := &Proxy{network: "tcp", address: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), conns: map[*proxyConn]struct{}{}}
	if strings.HasPrefix(cfg.Host, "/") {
		p.network, p.address = "unix", filepath.Join(cfg.Host, ".s.PGSQL."+strconv.Itoa(int(cfg.Port)))
	}
	p.thawed = sync.NewCond(&p.mu)
	if p.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if p.connString, err = redirect(connString, p.ln.Addr().String()); err != nil {
		p.ln.Close()
		return nil, err
	}
	p.wg.Go(p.accept)
	return p, nil
}

// redirect returns connString with its host and port replaced by addr.
func redirect(connString, addr string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	if !strings.HasPrefix(connString, "postgres://") && !strings.HasPrefix(connString, "postgresql://") {
		return connString + " host=" + host + " port=" + port, nil // the last keyword wins
	}
	u, err := url.Parse(connString)
	if err != nil {
		return "", fmt.Errorf("proxy: parse connection string: %w", err)
	}
	q := u.Query()
	q.Del("host") // a host parameter (a Unix socket directory) overrides the URL's
	q.Del("port")
	u.Host, u.RawQuery = addr, q.Encode()
	return u.String(), nil
}

// ConnString returns the connection string NewProxy was given, pointed at the proxy.
func (p *Proxy) ConnString() string { return p.connString }

// Freeze black-holes every open connection and every one accepted until Thaw: a network
// partition. New connections are accepted (the handshake is the kernel's) but get no answer.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
	for c := range p.conns {
		c.frozen = true
	}
}

// FreezeOpen black-holes the connections open now, and forwards those accepted later: a failover
// that moved the server's address, which only a fresh connection reaches.
func (p *Proxy) FreezeOpen() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.frozen = true
	}
}

// Thaw forwards again on every connection, delivering what was held (the network heals: TCP
// retransmits what it lost), including closes.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = false
	for c := range p.conns {
		c.frozen = false
	}
	p.thawed.Broadcast()
}

// Conns returns how many connections are open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Opened returns how many connections the proxy has accepted so far.
func (p *Proxy) Opened() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opened
}

// Close stops accepting, closes every connection, frozen or not, and waits for the proxy's
// goroutines. Closing a closed proxy does nothing.
func (p *Proxy) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		p.ln.Close()
		for c := range p.conns {
			p.closeLocked(c)
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		server, err := net.DialTimeout(p.network, p.address, 10*time.Second)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxyConn{client: client, server: server}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		c.frozen = p.frozen
		p.conns[c] = struct{}{}
		p.opened++
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(c, server, client) })
		p.wg.Go(func() { p.pump(c, client, server) })
	}
}

// pump copies src to dst, holding each chunk while c is frozen. When src ends (or dst fails) it
// closes both sides, once c is thawed: a frozen connection does not even pass on its close.
func (p *Proxy) pump(c *proxyConn, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !p.waitThawed(c) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			p.mu.Lock()
			p.closeLocked(c)
			p.mu.Unlock()
			return
		}
	}
}

// waitThawed waits while c is frozen, and reports whether c is still open.
func (p *Proxy) waitThawed(c *proxyConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c.frozen && !c.closed {
		p.thawed.Wait()
	}
	return !c.closed
}

// closeLocked closes both sides of c; the caller holds mu.
func (p *Proxy) closeLocked(c *proxyConn) {
	if c.closed {
		return
	}
	c.closed = true
	delete(p.conns, c)
	c.client.Close()
	c.server.Close()
	p.thawed.Broadcast()
}
