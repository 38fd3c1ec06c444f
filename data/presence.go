// Presence and signals: the database side of docs/protocol.md section 8
// (migrations/0008_presence.sql).
//
// Two UNLOGGED tables hold who is online. presence_nodes has one row per node: node (its id),
// seq (of its last write) and beat (the database's now() at its last write or beat, never a
// node's clock). presence_users holds each node's published set, one row per (node, user_id),
// and goes with its node row (ON DELETE CASCADE). A node's beat older than the reap age makes it
// dead: readers skip it, and the next beat of another node deletes it. Being unlogged, both
// tables are emptied by a crash or a failover: the next Flush or Beat then finds its row gone
// (ErrNodeGone) and the node writes its whole set again (Replace).
//
// Every write notifies the other nodes on PresenceChannel, in its own transaction, with JSON:
// {"node":"a","seq":8,"on":[7],"off":[12]} (a delta), {"node":"a","seq":9,"full":true} (re-read
// node a: a Replace, or a delta that would not fit in a notification) or {"gone":["b"]} (nodes
// reaped). Signals travel on SignalsChannel with the body given to Signal.
//
// Any role that may connect may NOTIFY any channel, so every payload is signed: it starts with
// 32 hex digits, the first 16 bytes of HMAC-SHA256(key, channel + "\n" + body), followed by the
// body. The key is 32 random bytes in the table ephemeral_key, which only the owner of tidings'
// tables may read (not tidings_publisher): the first NewPresence inserts it (ON CONFLICT DO
// NOTHING) and every node reads back the one stored. Listen drops a payload whose signature
// does not match. The signature does not hide a payload (any role may LISTEN) and does not stop
// a payload seen once from being sent again: receivers order a node's writes by seq, and the
// tables stay the truth (Nodes).

package data

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PresenceChannel and SignalsChannel are the NOTIFY channels of the ephemeral path.
const (
	PresenceChannel = "presence"
	SignalsChannel  = "signals"
)

// MaxSignalPayload bounds one signals notification's body (before signing), in bytes.
const MaxSignalPayload = 7000

// ErrNodeGone: the node's presence row is gone (reaped, or the unlogged table was emptied by a
// crash or a failover): the caller must Replace its whole set.
var ErrNodeGone = errors.New("data: presence node gone")

const (
	// maxNotifyPayload bounds a signed payload: PostgreSQL refuses one of 8,000 bytes or more.
	maxNotifyPayload = 7900
	// maxNodeLen bounds a node id, in bytes (as the table's CHECK does).
	maxNodeLen = 128
	// keyLen is the length of the signing key; tagLen the part of its HMAC that a payload
	// carries, written as 2*tagLen hex digits.
	keyLen = 32
	tagLen = 16
)

// Presence reads and writes the presence tables and sends and receives the signed
// notifications of the ephemeral channels (the tables, the payloads and their signature are
// described at the top of data/presence.go). It is safe for concurrent use.
type Presence struct {
	// Set at construction, never changed.
	pool *pgxpool.Pool
	key  []byte // signs and verifies every ephemeral payload
}

// NewPresence reads (creating it on first use) the signing key of ephemeral notifications.
func NewPresence(ctx context.Context, pool *pgxpool.Pool) (*Presence, error) {
	key := make([]byte, keyLen)
	rand.Read(key) // never fails
	// Nodes starting at once each offer a key; one is stored, and every node reads that one.
	if _, err := pool.Exec(ctx, "INSERT INTO ephemeral_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", key); err != nil {
		return nil, fmt.Errorf("create ephemeral key: %w", err)
	}
	var stored []byte
	if err := pool.QueryRow(ctx, "SELECT key FROM ephemeral_key WHERE id = 1").Scan(&stored); err != nil {
		return nil, fmt.Errorf("read ephemeral key: %w", err)
	}
	if len(stored) != keyLen {
		return nil, fmt.Errorf("read ephemeral key: %d bytes, want %d", len(stored), keyLen)
	}
	return &Presence{pool: pool, key: stored}, nil
}

// Replace sets node's whole set of online users (upserting its row with seq and beat = now()),
// and notifies {"node","seq","full":true}.
func (p *Presence) Replace(ctx context.Context, node string, seq int64, users []int64) error {
	if err := validNode(node); err != nil {
		return fmt.Errorf("replace presence: %w", err)
	}
	payload := p.sign(PresenceChannel, encodePresence(&PresenceMessage{Node: node, Seq: seq, Full: true}))
	// One statement, one transaction: the users that left go, those that came are added, and
	// the notification leaves at commit. Disjoint rows, so the parts never meet.
	_, err := p.pool.Exec(ctx, `
		WITH n AS (
			INSERT INTO presence_nodes (node, seq, beat) VALUES ($1, $2, now())
			ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, beat = excluded.beat
			RETURNING node
		), gone AS (
			DELETE FROM presence_users u
			WHERE u.node = $1 AND NOT EXISTS (SELECT FROM unnest($3::bigint[]) AS x(id) WHERE x.id = u.user_id)
		), came AS (
			INSERT INTO presence_users (node, user_id)
			SELECT n.node, x.id FROM n, unnest($3::bigint[]) AS x(id)
			ON CONFLICT DO NOTHING
		)
		SELECT pg_notify($4, $5) FROM n`, node, seq, nonNil(users), PresenceChannel, payload)
	if err != nil {
		return fmt.Errorf("replace presence: %w", err)
	}
	return nil
}

// Flush applies node's changes since its last write in one transaction: its row's seq and beat;
// ErrNodeGone (nothing written) when the row is missing. Notifies the delta, or full when the
// signed payload would not fit in 7,900 bytes. on and off must be disjoint.
func (p *Presence) Flush(ctx context.Context, node string, seq int64, on, off []int64) error {
	if err := validNode(node); err != nil {
		return fmt.Errorf("flush presence: %w", err)
	}
	if err := disjoint(on, off); err != nil {
		return fmt.Errorf("flush presence: %w", err)
	}
	payload := ""
	// Each id takes at least 2 bytes ("7,"): a longer delta cannot fit, so skip encoding it.
	if 2*(len(on)+len(off)) < maxNotifyPayload {
		payload = p.sign(PresenceChannel, encodePresence(&PresenceMessage{Node: node, Seq: seq, On: on, Off: off}))
	}
	if payload == "" || len(payload) > maxNotifyPayload {
		payload = p.sign(PresenceChannel, encodePresence(&PresenceMessage{Node: node, Seq: seq, Full: true}))
	}
	// One statement: no row for node, and nothing else is written nor notified. One DELETE
	// for every user that left and one INSERT for every user that came.
	tag, err := p.pool.Exec(ctx, `
		WITH n AS (
			UPDATE presence_nodes SET seq = $2, beat = now() WHERE node = $1 RETURNING node
		), gone AS (
			DELETE FROM presence_users u USING n, unnest($3::bigint[]) AS x(id)
			WHERE u.node = n.node AND u.user_id = x.id
		), came AS (
			INSERT INTO presence_users (node, user_id)
			SELECT n.node, x.id FROM n, unnest($4::bigint[]) AS x(id)
			ON CONFLICT DO NOTHING
		)
		SELECT pg_notify($5, $6) FROM n`, node, seq, nonNil(off), nonNil(on), PresenceChannel, payload)
	if err != nil {
		return fmt.Errorf("flush presence: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNodeGone
	}
	return nil
}

// Beat renews node's beat (ErrNodeGone when its row is missing), and removes every node whose
// beat is older than reapAfter (their users with them, ON DELETE CASCADE), notifying
// {"gone":[...]} when it removed any. Returns the nodes it removed. When node's row is
// missing, it removes nothing.
func (p *Presence) Beat(ctx context.Context, node string, reapAfter time.Duration) ([]string, error) {
	if err := validNode(node); err != nil {
		return nil, fmt.Errorf("beat presence: %w", err)
	}
	if reapAfter <= 0 {
		return nil, fmt.Errorf("beat presence: reap age %v, want more than 0", reapAfter)
	}
	var gone []string
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		gone = nil
		var found bool
		// node itself is never reaped here: it is renewed in the same statement.
		err := tx.QueryRow(ctx, `
			WITH b AS (
				UPDATE presence_nodes SET beat = now() WHERE node = $1 RETURNING node
			), r AS (
				DELETE FROM presence_nodes
				WHERE node <> $1 AND beat < now() - $2 * interval '1 microsecond' AND EXISTS (SELECT FROM b)
				RETURNING node
			)
			SELECT EXISTS (SELECT FROM b), coalesce((SELECT array_agg(node ORDER BY node) FROM r), '{}')`,
			node, reapAfter.Microseconds()).Scan(&found, &gone)
		if err != nil {
			return err
		}
		if !found {
			return ErrNodeGone
		}
		if len(gone) == 0 {
			return nil
		}
		// The others learn it in this transaction, or the nodes stay deleted unannounced.
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x", PresenceChannel, p.goneNotices(gone))
		return err
	})
	if errors.Is(err, ErrNodeGone) {
		return nil, ErrNodeGone
	}
	if err != nil {
		return nil, fmt.Errorf("beat presence: %w", err)
	}
	return gone, nil
}

// goneNotices returns the signed {"gone":[...]} payloads that announce nodes, as few as fit.
func (p *Presence) goneNotices(nodes []string) []string {
	var notices []string
	var batch []string
	size := 0
	budget := maxNotifyPayload - 2*tagLen - len(`{"gone":[]}`)
	for _, n := range nodes {
		b, _ := json.Marshal(n) // a string never fails
		if len(batch) > 0 && size+len(b)+1 > budget {
			notices = append(notices, p.sign(PresenceChannel, encodePresence(&PresenceMessage{Gone: batch})))
			batch, size = nil, 0
		}
		batch = append(batch, n)
		size += len(b) + 1
	}
	return append(notices, p.sign(PresenceChannel, encodePresence(&PresenceMessage{Gone: batch})))
}

// Leave makes node's users count for linger more, then lets the others reap it: its beat is set to
// now() - reapAfter + linger. Used at a graceful shutdown, so that clients moving to
// another node within the grace cause no presence change. ErrNodeGone when its row is missing.
func (p *Presence) Leave(ctx context.Context, node string, reapAfter, linger time.Duration) error {
	if err := validNode(node); err != nil {
		return fmt.Errorf("leave presence: %w", err)
	}
	if reapAfter <= 0 || linger < 0 {
		return fmt.Errorf("leave presence: reap age %v and linger %v, want more than 0 and at least 0", reapAfter, linger)
	}
	tag, err := p.pool.Exec(ctx, "UPDATE presence_nodes SET beat = now() - $2 * interval '1 microsecond' WHERE node = $1",
		node, (reapAfter - linger).Microseconds())
	if err != nil {
		return fmt.Errorf("leave presence: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNodeGone
	}
	return nil
}

// PresenceNode is one live node's published set.
type PresenceNode struct {
	ID    string
	Seq   int64
	Users []int64 // ascending
}

// Nodes returns every node whose beat is within reapAfter, with its seq and users, read in one
// statement (a consistent snapshot), ordered by node.
func (p *Presence) Nodes(ctx context.Context, reapAfter time.Duration) ([]PresenceNode, error) {
	rows, err := p.pool.Query(ctx, `
		SELECT n.node, n.seq,
		       coalesce(array_agg(u.user_id ORDER BY u.user_id) FILTER (WHERE u.user_id IS NOT NULL), '{}')
		FROM presence_nodes n LEFT JOIN presence_users u ON u.node = n.node
		WHERE n.beat >= now() - $1 * interval '1 microsecond'
		GROUP BY n.node, n.seq
		ORDER BY n.node`, reapAfter.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("read presence nodes: %w", err)
	}
	nodes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (PresenceNode, error) {
		var n PresenceNode
		err := row.Scan(&n.ID, &n.Seq, &n.Users)
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("read presence nodes: %w", err)
	}
	return nodes, nil
}

// PresenceMark is where one live node's published set stands: its id and the seq of its last
// write.
type PresenceMark struct {
	ID  string
	Seq int64
}

// BoundsAndMarks returns where the log stands (as Events.Bounds with no event asked for) and
// every node whose beat is within reapAfter, with the seq of its last write, ordered by node:
// one statement, one snapshot, so that a signed-in stream learns where to start and whether
// its node's view of the others is as new as the tables, without a read of its own.
func (p *Presence) BoundsAndMarks(ctx context.Context, reapAfter time.Duration) (Bounds, []PresenceMark, error) {
	var b Bounds
	var nodes []string
	var seqs []int64
	err := p.pool.QueryRow(ctx, `
		SELECT s.last_id, f.pruned_through, m.nodes, m.seqs
		FROM event_log_state s, event_log_floor f, LATERAL (
			SELECT coalesce(array_agg(node ORDER BY node), '{}') AS nodes,
			       coalesce(array_agg(seq ORDER BY node), '{}') AS seqs
			FROM presence_nodes
			WHERE beat >= now() - $1 * interval '1 microsecond') m`,
		reapAfter.Microseconds()).Scan(&b.Watermark, &b.PrunedThrough, &nodes, &seqs)
	if err != nil {
		return b, nil, fmt.Errorf("read the log's bounds and the presence marks: %w", err)
	}
	marks := make([]PresenceMark, len(nodes))
	for i := range nodes {
		marks[i] = PresenceMark{ID: nodes[i], Seq: seqs[i]}
	}
	return b, marks, nil
}

// Online returns the users online on any live node (beat within reapAfter) who still exist,
// ascending, read from the tables: what the page and GET /api/presence answer. Never nil.
func (p *Presence) Online(ctx context.Context, reapAfter time.Duration) ([]int64, error) {
	rows, err := p.pool.Query(ctx, `
		SELECT x.id FROM users x
		WHERE x.id IN (
			SELECT u.user_id FROM presence_users u JOIN presence_nodes n ON n.node = u.node
			WHERE n.beat >= now() - $1 * interval '1 microsecond')
		ORDER BY x.id`, reapAfter.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("read online users: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read online users: %w", err)
	}
	return nonNil(ids), nil
}

// Signal notifies body (at most MaxSignalPayload bytes, else an error) on SignalsChannel, signed.
// body must be UTF-8 without U+0000, which a notification cannot carry.
func (p *Presence) Signal(ctx context.Context, body []byte) error {
	if len(body) > MaxSignalPayload {
		return fmt.Errorf("signal: body of %d bytes, over %d", len(body), MaxSignalPayload)
	}
	if !utf8.Valid(body) || bytes.IndexByte(body, 0) >= 0 {
		return errors.New("signal: body must be UTF-8 without U+0000")
	}
	if _, err := p.pool.Exec(ctx, "SELECT pg_notify($1, $2)", SignalsChannel, p.sign(SignalsChannel, body)); err != nil {
		return fmt.Errorf("signal: %w", err)
	}
	return nil
}

// PresenceMessage is one verified notification of the ephemeral channels.
type PresenceMessage struct {
	Channel string   // PresenceChannel or SignalsChannel
	Node    string   // presence: the node that wrote (empty for gone)
	Seq     int64    // presence: its seq after the write
	Full    bool     // presence: re-read the node (Nodes)
	On, Off []int64  // presence: the delta
	Gone    []string // presence: nodes reaped
	Body    []byte   // signals: the body as given to Signal
}

// Listen holds a dedicated connection that LISTENs on both channels (the same reconnecting
// loop as Events.Listen), verifies and decodes each payload, and calls report: ListenerUp after
// every (re)connect (the caller must re-read: it may have missed notifications),
// ListenerNotified with a message, ListenerDown. A payload that fails its signature or decoding
// is dropped and logged at Warn (never reported; at most one log line a second, with the count
// of drops). The message is nil but for ListenerNotified. report must not block for long.
func (p *Presence) Listen(ctx context.Context, cfg ListenerConfig, report func(ListenerState, *PresenceMessage)) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Owned by the listener's goroutine, the only caller of the function below.
	var dropped int
	var lastLog time.Time
	return listen(ctx, p.pool, cfg, "presence", []string{PresenceChannel, SignalsChannel}, func(st ListenerState, n *pgconn.Notification) {
		if st != ListenerNotified {
			report(st, nil)
			return
		}
		msg, err := decodeEphemeral(p.key, n.Channel, n.Payload)
		if err == nil {
			report(st, msg)
			return
		}
		// Forged (any role may NOTIFY) or broken: never believed. senderPid names the session
		// that sent it (pg_stat_activity).
		dropped++
		if time.Since(lastLog) >= time.Second {
			log.Warn("dropped an ephemeral notification", "channel", n.Channel, "senderPid", n.PID, "err", err, "dropped", dropped)
			dropped, lastLog = 0, time.Now()
		}
	})
}

// sign returns body on channel with its signature in front.
func (p *Presence) sign(channel string, body []byte) string {
	return signEphemeral(p.key, channel, body)
}

// signEphemeral returns the payload that carries body on channel: the hex of the first tagLen
// bytes of HMAC-SHA256(key, channel + "\n" + body), then body.
func signEphemeral(key []byte, channel string, body []byte) string {
	buf := make([]byte, 2*tagLen, 2*tagLen+len(body))
	hex.Encode(buf, ephemeralMAC(key, channel, body))
	return string(append(buf, body...))
}

func ephemeralMAC(key []byte, channel string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(channel))
	m.Write([]byte{'\n'})
	m.Write(body)
	return m.Sum(nil)[:tagLen]
}

// errForged is a payload whose signature does not match.
var errForged = errors.New("bad signature")

// decodeEphemeral verifies payload, received on channel, and decodes it.
func decodeEphemeral(key []byte, channel, payload string) (*PresenceMessage, error) {
	if len(payload) < 2*tagLen {
		return nil, errForged
	}
	body := []byte(payload[2*tagLen:])
	want := make([]byte, 2*tagLen)
	hex.Encode(want, ephemeralMAC(key, channel, body))
	if !hmac.Equal([]byte(payload[:2*tagLen]), want) {
		return nil, errForged
	}
	switch channel {
	case SignalsChannel:
		return &PresenceMessage{Channel: channel, Body: body}, nil
	case PresenceChannel:
		m, err := decodePresence(body)
		if err != nil {
			return nil, err
		}
		m.Channel = channel
		return m, nil
	}
	return nil, fmt.Errorf("unknown channel %q", channel)
}

// presencePayload is the JSON of a notification on PresenceChannel.
type presencePayload struct {
	Node string   `json:"node,omitempty"`
	Seq  int64    `json:"seq,omitempty"`
	Full bool     `json:"full,omitempty"`
	On   []int64  `json:"on,omitempty"`
	Off  []int64  `json:"off,omitempty"`
	Gone []string `json:"gone,omitempty"`
}

// encodePresence returns the JSON of m's presence fields.
func encodePresence(m *PresenceMessage) []byte {
	b, _ := json.Marshal(presencePayload{Node: m.Node, Seq: m.Seq, Full: m.Full, On: m.On, Off: m.Off, Gone: m.Gone})
	return b // a struct of strings, numbers and booleans never fails
}

// decodePresence parses the body of a presence notification: a delta or a full from one
// node, or the nodes reaped; anything else (unknown fields, trailing data, a mix) is refused.
func decodePresence(body []byte) (*PresenceMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var v presencePayload
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode presence: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode presence: data after the object")
	}
	m := &PresenceMessage{Node: v.Node, Seq: v.Seq, Full: v.Full, On: v.On, Off: v.Off, Gone: v.Gone}
	switch {
	case v.Gone != nil:
		if v.Node != "" || v.Seq != 0 || v.Full || v.On != nil || v.Off != nil || len(v.Gone) == 0 {
			return nil, errors.New("decode presence: gone is a non-empty list of nodes, alone")
		}
		for _, n := range v.Gone {
			if err := validNode(n); err != nil {
				return nil, fmt.Errorf("decode presence: gone: %w", err)
			}
		}
	case v.Node != "":
		if err := validNode(v.Node); err != nil {
			return nil, fmt.Errorf("decode presence: %w", err)
		}
		if v.Full && (v.On != nil || v.Off != nil) {
			return nil, errors.New("decode presence: full with a delta")
		}
	default:
		return nil, errors.New("decode presence: neither node nor gone")
	}
	return m, nil
}

// validNode checks a node id: 1 to maxNodeLen bytes of UTF-8 without control characters.
func validNode(node string) error {
	if len(node) == 0 || len(node) > maxNodeLen || !utf8.ValidString(node) {
		return fmt.Errorf("node id %q: want 1 to %d bytes of UTF-8", node, maxNodeLen)
	}
	for _, r := range node {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("node id %q: holds a control character", node)
		}
	}
	return nil
}

// disjoint checks that no user is both in on and in off.
func disjoint(on, off []int64) error {
	if len(on) == 0 || len(off) == 0 {
		return nil
	}
	seen := make(map[int64]struct{}, len(off))
	for _, id := range off {
		seen[id] = struct{}{}
	}
	for _, id := range on {
		if _, ok := seen[id]; ok {
			return fmt.Errorf("user %d both on and off", id)
		}
	}
	return nil
}

// nonNil returns s, or an empty slice for nil: an array parameter is then '{}', not NULL.
func nonNil(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}
