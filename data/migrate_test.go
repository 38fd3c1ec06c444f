package data_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/migrations"
)

// TestSchemaNeedsARelease: a schema that a newer release contracted (tidings_schema names a
// migration this binary lacks) is refused at migrate, naming that migration; a schema that a
// newer release only expanded (more migrations, needs unchanged) is not, so that two releases
// run side by side during a rolling upgrade.
func TestSchemaNeedsARelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := datatest.NewPool(t) // migrated
	if err := data.Migrate(ctx, pool, migrations.FS, nil); err != nil {
		t.Fatalf("migrate with nothing pending: %v", err)
	}

	// A newer release's migration that only expands: recorded, needs unchanged.
	next := releaseWith(t, "9000_expand.sql", "CREATE TABLE expanded (id int);")
	if err := data.Migrate(ctx, pool, next, nil); err != nil {
		t.Fatalf("the newer release's migrate: %v", err)
	}
	if err := data.Migrate(ctx, pool, migrations.FS, nil); err != nil {
		t.Fatalf("this release on the expanded schema: %v, want it to run", err)
	}

	// The newer release contracts, and says so.
	contract := releaseWith(t, "9001_contract.sql", "DROP TABLE login_failures; UPDATE tidings_schema SET needs_migration = 9001;")
	if err := data.Migrate(ctx, pool, contract, nil); err != nil {
		t.Fatalf("the contracting release's migrate: %v", err)
	}
	err := data.Migrate(ctx, pool, migrations.FS, nil)
	if !errors.Is(err, data.ErrSchemaTooNew) || !strings.Contains(err.Error(), "9001") {
		t.Fatalf("this release on the contracted schema: got %v, want ErrSchemaTooNew naming 9001", err)
	}
	if err := data.Migrate(ctx, pool, contract, nil); err != nil {
		t.Fatalf("the contracting release itself: %v, want it to run", err)
	}
}

// releaseWith returns this release's migrations plus more (name, SQL, name, SQL…): a newer
// release.
func releaseWith(t *testing.T, more ...string) fstest.MapFS {
	t.Helper()
	files := fstest.MapFS{}
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		body, err := fs.ReadFile(migrations.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = &fstest.MapFile{Data: body}
	}
	for i := 0; i+1 < len(more); i += 2 {
		files[more[i]] = &fstest.MapFile{Data: []byte(more[i+1])}
	}
	return files
}
