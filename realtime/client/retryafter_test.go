package client

import (
	"net/http"
	"testing"
	"time"
)

// TestRetryAfter: both forms of Retry-After are read; what is absent, invalid or past waits
// nothing.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"1", time.Second},
		{"120", 2 * time.Minute},
		{"-3", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999", 0},
		{"3600", maxRetryAfter},
		{now.Add(24 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		h := http.Header{}
		if tc.value != "" {
			h.Set("Retry-After", tc.value)
		}
		if got := retryAfter(h, now); got != tc.want {
			t.Errorf("Retry-After %q: got %v, want %v", tc.value, got, tc.want)
		}
	}
}
