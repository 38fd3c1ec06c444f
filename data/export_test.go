package data

// PendingCalls returns how many Publish calls wait for a batch; for tests.
func PendingCalls(p *Publisher) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}
