package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestFindBin(t *testing.T) {
	root := t.TempDir()
	_, err := findBin(filepath.Join(root, "*/bin/postgres"))
	if err == nil || !strings.Contains(err.Error(), "install Debian's postgresql package") {
		t.Fatalf("no binaries: %v", err)
	}
	for _, v := range []string{"9.6", "15", "16"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"postgres", "initdb"} {
			if v == "16" && f == "initdb" {
				continue // incomplete: ignored
			}
			if err := os.WriteFile(filepath.Join(bin, f), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := findBin(filepath.Join(root, "*/bin/postgres"))
	if err != nil || got != filepath.Join(root, "15", "bin") {
		t.Fatalf("findBin = %s, %v; want the 15 one", got, err)
	}
}

// TestCluster starts a cluster, checks how it runs (unix socket only, an
// unprivileged user when we are root), creates databases and stops it.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "preboot-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.Stop()
		}
	}()
	if _, err := os.Stat(filepath.Join(c.Dir(), ".s.PGSQL.5432")); err != nil {
		t.Fatalf("no unix socket: %v", err)
	}
	if os.Geteuid() == 0 {
		status, err := os.ReadFile("/proc/" + strconv.Itoa(c.PID()) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] == "0" {
				t.Fatal("postgres runs as root")
			}
		}
		if u, err := user.Lookup("postgres"); err == nil {
			if fi, err := os.Stat(c.Dir()); err != nil || strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)) != u.Uid {
				t.Fatalf("cluster directory not owned by postgres: %v", err)
			}
		}
	}
	var dsns []string
	for i := 0; i < 2; i++ {
		dsn, err := c.CreateDatabase(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dsns = append(dsns, dsn)
	}
	if dsns[0] == dsns[1] {
		t.Fatalf("two databases with one DSN: %s", dsns[0])
	}
	db, err := sql.Open("pgx", dsns[1])
	if err != nil {
		t.Fatal(err)
	}
	var listen, fsync, name string
	if err := db.QueryRowContext(ctx, `SELECT current_setting('listen_addresses'), current_setting('fsync'), current_database()`).Scan(&listen, &fsync, &name); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if listen != "" || fsync != "off" || name != "t_2" {
		t.Fatalf("listen_addresses %q, fsync %s, database %s", listen, fsync, name)
	}
	pid := c.PID()
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	// Stop waited for the server: its PID is gone (it was our child, reaped).
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("server pid %d after Stop: %v", pid, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
