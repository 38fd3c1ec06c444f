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

// SignEphemeral returns body signed with key for channel, as a node sends it; for tests.
func SignEphemeral(key []byte, channel string, body []byte) string {
	return signEphemeral(key, channel, body)
}

// DecodeEphemeral verifies and decodes a payload received on channel, as Presence.Listen does;
// for tests.
func DecodeEphemeral(key []byte, channel, payload string) (*PresenceMessage, error) {
	return decodeEphemeral(key, channel, payload)
}

// EncodePresence returns the JSON body of a presence notification; for tests.
func EncodePresence(m *PresenceMessage) []byte { return encodePresence(m) }

// MaxNotifyPayload bounds a signed payload; for tests.
const MaxNotifyPayload = maxNotifyPayload
