package data

// PublisherCalls returns how many Publish calls are in the batch being committed and how many
// wait for the next one; for tests.
func PublisherCalls(p *Publisher) (batching, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.batching, len(p.pending)
}

// PruneLockKey is the advisory lock that lets one node at a time prune; for tests.
const PruneLockKey = pruneLockKey
