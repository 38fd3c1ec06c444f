package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"time"

	"tidings/data/datatest"
	"tidings/realtime/client"
	"tidings/web"
	"tidings/web/webtest"
)

// A program that follows a tidings server's stream: every event exactly once and in id order,
// across reconnects. Here a backend publishes one event through POST /api/publish.
func Example() {
	srv := startServer() // test scaffolding: a tidings node on a fresh database
	defer srv.stop()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := int64(0) // follow the log from its start, so nothing published meanwhile is missed
	c := client.New(client.Config{URL: srv.url, LastEventID: &first})
	go c.Run(ctx) // connects and reconnects until ctx ends, then closes Events

	srv.publish(`{"type":"greeting","data":{"text":"hello"}}`)

	ev := <-c.Events()
	fmt.Println(ev.ID, ev.Type, string(ev.Data))

	cancel()
	for range c.Events() { // closed once Run has returned
	}
	// Output: 1 greeting {"text": "hello"}
}

// A signed-in client publishes over its own stream and gets the event back. Only an account
// may publish, so the client's HTTP client carries a session cookie.
func ExampleClient_Publish() {
	srv := startServer() // test scaffolding: a tidings node on a fresh database
	defer srv.stop()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ready := make(chan struct{})
	var once sync.Once
	c := client.New(client.Config{
		URL:        srv.url,
		HTTPClient: srv.register("ada"), // its cookie jar holds ada's session
		OnReady:    func(int64) { once.Do(func() { close(ready) }) },
	})
	go c.Run(ctx)
	select { // Publish needs a live connection
	case <-ready:
	case <-ctx.Done():
	}

	id, err := c.Publish(ctx, "message", map[string]string{"text": "hi"})
	if err != nil {
		log.Fatal(err)
	}
	for ev := range c.Events() { // in id order, with every other event ada may see
		if ev.ID == id {
			fmt.Println(ev.Type, string(ev.Data))
			break
		}
	}

	cancel()
	for range c.Events() {
	}
	// Output: message {"text": "hi", "userId": 1, "userName": "ada"}
}

// A desktop program holds a bearer session: it signs in once and keeps the token where it keeps
// secrets; the next start begins from the kept token, with no password. Every successor the
// server hands over replaces the kept token (OnToken); "" means the session ended.
func ExampleLogin() {
	srv := startServer() // test scaffolding: a tidings node on a fresh database
	defer srv.stop()
	srv.register("ada") // the user exists

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var keychain keychain // the program's secret store: a file of its own, the OS keychain
	if keychain.load() == "" {
		in, err := client.Login(ctx, nil, srv.url, "ada", "password-ada")
		if err != nil {
			log.Fatal(err)
		}
		keychain.save(in.Token)
	}
	ready := make(chan struct{})
	var once sync.Once
	c := client.New(client.Config{
		URL:     srv.url,
		Token:   keychain.load(),
		OnToken: keychain.save,
		OnReady: func(int64) { once.Do(func() { close(ready) }) },
	})
	go c.Run(ctx)
	select {
	case <-ready:
	case <-ctx.Done():
	}

	id, err := c.Publish(ctx, "message", map[string]string{"text": "from the desktop"})
	if err != nil {
		log.Fatal(err)
	}
	for ev := range c.Events() {
		if ev.ID == id {
			fmt.Println(ev.Type, string(ev.Data))
			break
		}
	}

	cancel()
	for range c.Events() {
	}
	// Output: message {"text": "from the desktop", "userId": 1, "userName": "ada"}
}

// keychain stands for where a program keeps its secrets.
type keychain struct {
	mu    sync.Mutex
	token string
}

func (k *keychain) load() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.token
}

func (k *keychain) save(token string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.token = token
}

// exampleServer is one tidings node on its own fresh database, for the examples.
type exampleServer struct {
	url  string
	stop func()
}

// exampleAPIKey is the bearer key of the examples' POST /api/publish.
const exampleAPIKey = "example-key"

// startServer starts a node on a fresh database; stop ends everything it started. A failure
// ends the test binary: an example has no testing.T to report to.
func startServer() *exampleServer {
	pool, closeDatabase, err := datatest.CreateDatabase(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	n, err := webtest.Start(pool, webtest.Options{Web: web.Config{Dev: true, APIKey: exampleAPIKey}})
	if err != nil {
		log.Fatal(err)
	}
	return &exampleServer{url: n.URL, stop: func() {
		n.Stop()
		if err := closeDatabase(); err != nil {
			log.Fatal(err)
		}
	}}
}

// publish stores events as a backend does: POST /api/publish with the API key.
func (s *exampleServer) publish(body string) {
	req, err := http.NewRequest("POST", s.url+"/api/publish", strings.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+exampleAPIKey)
	req.Header.Set("Content-Type", "application/json")
	s.do(http.DefaultClient, req, http.StatusOK)
}

// register creates an account and returns an HTTP client whose cookie jar holds its session.
func (s *exampleServer) register(name string) *http.Client {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	body := fmt.Sprintf(`{"name":%q,"password":"password-%s"}`, name, name)
	req, err := http.NewRequest("POST", s.url+"/api/auth/register", strings.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	s.do(hc, req, http.StatusCreated)
	return hc
}

func (s *exampleServer) do(hc *http.Client, req *http.Request, want int) {
	resp, err := hc.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		log.Fatalf("%s %s: got %s, want %d", req.Method, req.URL.Path, resp.Status, want)
	}
}
