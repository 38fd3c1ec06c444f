package web

import "testing"

// TestStreamGroup: close waits for the running streams and refuses new ones, and a stream may
// be added while another goroutine is already waiting (the race a sync.WaitGroup forbids).
func TestStreamGroup(t *testing.T) {
	t.Parallel()
	var g streamGroup
	if !g.add() {
		t.Fatal("add refused before close")
	}
	added := make(chan bool)
	go func() { added <- g.add() }() // concurrently with close
	idle := g.close()
	second := <-added
	select {
	case <-idle:
		t.Fatal("idle while a stream runs")
	default:
	}
	if g.add() {
		t.Fatal("add accepted after close")
	}
	g.done()
	if second {
		select {
		case <-idle:
			t.Fatal("idle while the second stream runs")
		default:
		}
		g.done()
	}
	<-idle // closed: every stream is done
	if g.close() != idle {
		t.Fatal("a second close made a new channel")
	}
}
