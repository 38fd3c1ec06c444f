package data

import (
	"context"
	"fmt"
	"slices"
)

// recentPage is how many rows RecentEvents reads per query while it looks for visible events.
const recentPage = 200

// RecentEvents returns the newest events of eventType with ids at or below upTo that visible
// accepts, at most limit of them, oldest first. visible decides by audience (a viewer's
// CanSee); nil accepts every event. It reads backwards from upTo in pages until it has limit
// events or reaches the start of the log, so its cost grows with the events it must skip.
func RecentEvents(ctx context.Context, db DB, eventType string, upTo int64, limit int, visible func(Audience) bool) ([]Event, error) {
	out := make([]Event, 0, min(limit, recentPage))
	for len(out) < limit && upTo > 0 {
		rows, err := db.Query(ctx,
			"SELECT "+eventColumns+" FROM events WHERE type = $1 AND id <= $2 ORDER BY id DESC LIMIT $3",
			eventType, upTo, recentPage)
		if err != nil {
			return nil, fmt.Errorf("read recent %s events: %w", eventType, err)
		}
		n := 0
		for rows.Next() {
			n++
			e, err := scanEvent(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("read recent %s events: %w", eventType, err)
			}
			upTo = e.ID - 1
			if len(out) < limit && (visible == nil || visible(e.Audience)) {
				out = append(out, e)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read recent %s events: %w", eventType, err)
		}
		if n < recentPage {
			break
		}
	}
	slices.Reverse(out)
	return out, nil
}
