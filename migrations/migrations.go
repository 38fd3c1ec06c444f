// Package migrations holds the numbered SQL files that build the tidings schema. Each file is
// applied once, in the order of its number, in its own transaction (see data.Migrate).
package migrations

import "embed"

// FS holds every migration file, named NNNN_description.sql.
//
//go:embed *.sql
var FS embed.FS
