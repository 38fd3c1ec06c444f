package data

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Event is one stored event. Data is its raw JSON.
type Event struct {
	ID       int64
	Type     string
	Data     json.RawMessage
	Audience Audience
	Time     time.Time
}

// NewEvent is an event to append. A nil Data is stored as JSON null.
type NewEvent struct {
	Type     string
	Data     json.RawMessage
	Audience Audience
}

// MaxTypeLen is the longest event type the store accepts, in bytes.
const MaxTypeLen = 200

// ErrInvalidEvent is returned for an event that the store refuses (empty or overlong type,
// data that is not JSON or that PostgreSQL's jsonb cannot hold, an invalid audience).
var ErrInvalidEvent = errors.New("data: invalid event")

// Validate checks what the events table would refuse, so that bad input is a clear error
// before any transaction starts, and never fails a group commit that it would have joined:
// a type that is not UTF-8 or holds U+0000, data that is not JSON, and JSON that PostgreSQL's
// jsonb refuses although encoding/json takes it (U+0000 anywhere in a string, object keys
// included; see jsonb.go).
func (e NewEvent) Validate() error {
	if e.Type == "" || len(e.Type) > MaxTypeLen {
		return fmt.Errorf("%w: type must be 1 to %d bytes", ErrInvalidEvent, MaxTypeLen)
	}
	if !utf8.ValidString(e.Type) || strings.IndexByte(e.Type, 0) >= 0 {
		return fmt.Errorf("%w: type must be UTF-8 without U+0000", ErrInvalidEvent)
	}
	if IsControl(e.Type) {
		return fmt.Errorf("%w: types under %q are reserved", ErrInvalidEvent, ControlTypePrefix)
	}
	if e.Data != nil && !json.Valid(e.Data) {
		return fmt.Errorf("%w: data is not valid JSON", ErrInvalidEvent)
	}
	if e.Data != nil {
		if err := jsonbProblem(e.Data); err != nil {
			return fmt.Errorf("%w: data: %w", ErrInvalidEvent, err)
		}
	}
	if _, err := e.Audience.sqlValue(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	return nil
}

// DB is what the functions of this package that work inside a caller's transaction need: a
// pgx.Tx, a *pgxpool.Pool or a *pgx.Conn.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ControlTypePrefix starts the types of control events: session and user changes that every
// node acts on and that no client ever sees. Only the server appends them (AppendControl).
const ControlTypePrefix = "tidings."

// IsControl reports whether an event type is a control event's.
func IsControl(eventType string) bool { return strings.HasPrefix(eventType, ControlTypePrefix) }

// AppendEvents appends evs in q's transaction and returns their ids, in order. The events exist
// if and only if that transaction commits. From this call until commit, the transaction holds
// the event log's counter row, so other event writers wait: append as late as you can.
func AppendEvents(ctx context.Context, q DB, evs []NewEvent) ([]int64, error) {
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			return nil, err
		}
	}
	return appendEvents(ctx, q, evs)
}

// AppendControl appends control events (types under ControlTypePrefix) in q's transaction.
func AppendControl(ctx context.Context, q DB, evs ...NewEvent) error {
	for _, e := range evs {
		if !IsControl(e.Type) {
			return fmt.Errorf("%w: %q is not a control event type", ErrInvalidEvent, e.Type)
		}
	}
	_, err := appendEvents(ctx, q, evs)
	return err
}

func appendEvents(ctx context.Context, q DB, evs []NewEvent) ([]int64, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	types := make([]string, len(evs))
	datas := make([]string, len(evs))
	auds := make([]*string, len(evs))
	for i, e := range evs {
		types[i] = e.Type
		datas[i] = "null"
		if e.Data != nil {
			datas[i] = string(e.Data)
		}
		auds[i], _ = e.Audience.sqlValue()
	}
	rows, err := q.Query(ctx, "SELECT tidings_append_events($1::text[], $2::text[]::jsonb[], $3::text[]::jsonb[])", types, datas, auds)
	if err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	if len(ids) != len(evs) {
		return nil, fmt.Errorf("append events: got %d ids for %d events", len(ids), len(evs))
	}
	return ids, nil
}

// Events reads the event log.
type Events struct {
	pool *pgxpool.Pool
}

// NewEvents returns the event log stored in pool's database.
func NewEvents(pool *pgxpool.Pool) *Events { return &Events{pool: pool} }

// Watermark returns the safe watermark: every event with an id at or below it has committed,
// and no event with a lower id can appear later.
func (s *Events) Watermark(ctx context.Context) (int64, error) {
	var last int64
	if err := s.pool.QueryRow(ctx, "SELECT last_id FROM event_log_state").Scan(&last); err != nil {
		return 0, fmt.Errorf("read watermark: %w", err)
	}
	return last, nil
}

// Bounds is where the log stands, read in one snapshot.
type Bounds struct {
	// Watermark: every event with an id at or below it has committed, and no event with a
	// lower id can appear later.
	Watermark int64
	// PrunedThrough: retention has deleted every event with an id at or below it. A client
	// that resumes after a smaller id has lost events.
	PrunedThrough int64
	// Time is when the event asked for was stored; nil when the log does not hold it.
	Time *time.Time
}

// Bounds reads the watermark, what retention has removed, and the time of event id (0 asks
// for none), in one statement: one snapshot, one round trip.
func (s *Events) Bounds(ctx context.Context, id int64) (Bounds, error) {
	var b Bounds
	err := s.pool.QueryRow(ctx, `
		SELECT s.last_id, f.pruned_through, (SELECT time FROM events WHERE id = $1)
		FROM event_log_state s, event_log_floor f`, id).Scan(&b.Watermark, &b.PrunedThrough, &b.Time)
	if err != nil {
		return b, fmt.Errorf("read the log's bounds: %w", err)
	}
	return b, nil
}

// Watermark returns the safe watermark as db sees it: in a transaction, as of the statement,
// so that a caller holding locks knows which appends its reads reflect (auth.Resolution).
func Watermark(ctx context.Context, db DB) (int64, error) {
	var last int64
	if err := db.QueryRow(ctx, "SELECT last_id FROM event_log_state").Scan(&last); err != nil {
		return 0, fmt.Errorf("read watermark: %w", err)
	}
	return last, nil
}

// After returns up to limit events with ids greater than after, in id order. Because writers
// are serialized on the counter row, what it returns is always a gapless run unless retention
// pruned events: the first id differs from after+1 exactly when events after `after` are gone.
func (s *Events) After(ctx context.Context, after int64, limit int) ([]Event, error) {
	rows, err := s.pool.Query(ctx,
		"SELECT "+eventColumns+" FROM events WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	defer rows.Close()
	evs := make([]Event, 0, min(limit, 1024))
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("read events after %d: %w", after, err)
		}
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return evs, nil
}

// eventColumns are what scanEvent reads, in its order.
const eventColumns = "id, type, data, audience, time"

// scanEvent reads one row of eventColumns.
func scanEvent(row pgx.Row) (Event, error) {
	var e Event
	var aud []byte
	if err := row.Scan(&e.ID, &e.Type, (*[]byte)(&e.Data), &aud, &e.Time); err != nil {
		return e, err
	}
	if aud != nil {
		if err := json.Unmarshal(aud, &e.Audience); err != nil {
			return e, fmt.Errorf("event %d: audience: %w", e.ID, err)
		}
	}
	return e, nil
}

// pruneLockKey is the advisory lock that lets one node at a time prune.
const pruneLockKey = 0x7469_6469_6e67_7302 // "tidings" + 2

// pruneBatch is how many events one prune transaction deletes at most.
const pruneBatch = 10000

// PruneOlderThan deletes the events older than cutoff, oldest first, in transactions of at most
// 10,000 events, and returns how many it deleted. Only a prefix of the log is ever deleted, so
// a reader can tell pruning from a gap. When another node is pruning, it returns at once.
func (s *Events) PruneOlderThan(ctx context.Context, cutoff time.Time) (int64, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(pruneLockKey)).Scan(&locked); err != nil {
		return 0, fmt.Errorf("prune events: lock: %w", err)
	}
	if !locked {
		return 0, nil
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(pruneLockKey))
	var total int64
	for {
		n, err := pruneOnce(ctx, conn.Conn(), cutoff, pruneBatch)
		total += n
		if err != nil || n < pruneBatch {
			return total, err
		}
	}
}

// pruneOnce deletes, in one transaction, the oldest run of up to batch events older than cutoff.
func pruneOnce(ctx context.Context, conn *pgx.Conn, cutoff time.Time, batch int) (deleted int64, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The run ends before the first event at or after the cutoff.
		var through int64
		err := tx.QueryRow(ctx, `
			WITH head AS (SELECT id, time FROM events ORDER BY id LIMIT $2)
			SELECT coalesce(max(id), 0) FROM head
			WHERE id < coalesce((SELECT min(id) FROM head WHERE time >= $1), 9223372036854775807)`,
			cutoff, batch).Scan(&through)
		if err != nil || through == 0 {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM events WHERE id <= $1", through)
		if err != nil {
			return err
		}
		deleted = tag.RowsAffected()
		// Every node learns from here that ids up to through are gone, whatever it caches.
		_, err = tx.Exec(ctx, "UPDATE event_log_floor SET pruned_through = greatest(pruned_through, $1)", through)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return deleted, nil
}

// IsInvalidInput reports whether err is PostgreSQL refusing a value (such as an audience that
// publish_event rejects), as opposed to a failure of the database itself.
func IsInvalidInput(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code[:2] == "22" || pgErr.Code[:2] == "23")
}

// ControlCloseStreams is the control event that closes the streams of some sessions or users on
// every node; its data is a CloseStreams.
const ControlCloseStreams = ControlTypePrefix + "close-streams"

// CloseStreams says which streams to close, and with which close code and reason.
type CloseStreams struct {
	SessionIDs []int64 `json:"sessionIds,omitempty"`
	UserIDs    []int64 `json:"userIds,omitempty"`
	Code       int     `json:"code"`
	Reason     string  `json:"reason"`
}

// Event returns the control event that carries c.
func (c CloseStreams) Event() NewEvent {
	b, _ := json.Marshal(c) // plain ints and strings always encode
	return NewEvent{Type: ControlCloseStreams, Data: b}
}
