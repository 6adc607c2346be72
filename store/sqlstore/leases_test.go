package sqlstore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestGroupSync: every caller returns after a sync, and a failing sync is
// reported to the callers it covered.
func TestGroupSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f-wal")
	g := newGroupSync(path)
	if err := g.sync(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("sync of a missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 32)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.sync()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if g.started > 33 || g.completed != g.started || g.running {
		t.Fatalf("started %d completed %d running %v", g.started, g.completed, g.running)
	}
}
