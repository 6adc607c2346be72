// Package pgtest runs throwaway PostgreSQL servers for tests, from the
// binaries of Debian's postgresql package (/usr/lib/postgresql/<ver>/bin).
// A server listens only on a unix socket in its own directory, runs with
// fsync off, and, when the tests run as root, as an unprivileged user
// (postgres refuses root).
//
// One server per test binary, one fresh database per test:
//
//	var pg pgtest.Shared
//
//	func TestMain(m *testing.M) { os.Exit(pg.Main(m)) }
//
//	func TestX(t *testing.T) {
//		dsn := pg.Database(t) // CREATE DATABASE t_<n>
//		...
//	}
//
// Missing binaries make the tests fail (not skip), with a message saying
// to install postgresql; `make test` installs it.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Port names the socket file (.s.PGSQL.<port>); nothing listens on TCP.
const Port = 5432

// superuser is the database superuser initdb creates.
const superuser = "postgres"

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	dir   string // socket directory; the data directory is dir/data
	cmd   *exec.Cmd
	done  chan struct{} // closed when the server process has exited
	err   error         // its exit status, once done is closed
	admin *sql.DB
	seq   atomic.Int64
}

// FindBin returns the bin directory of the newest PostgreSQL installed
// (or $PREBOOT_PG_BIN), or an error saying how to install it.
func FindBin() (string, error) {
	if d := os.Getenv("PREBOOT_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("PREBOOT_PG_BIN=%s: %w (install Debian's postgresql package, or unset PREBOOT_PG_BIN)", d, err)
		}
		return d, nil
	}
	return findBin("/usr/lib/postgresql/*/bin/postgres")
}

// findBin picks the newest of the directories holding postgres and initdb
// that pattern (a glob of postgres binaries) matches.
func findBin(pattern string) (string, error) {
	matches, _ := filepath.Glob(pattern)
	var dirs []string
	for _, m := range matches {
		if _, err := os.Stat(filepath.Join(filepath.Dir(m), "initdb")); err == nil {
			dirs = append(dirs, filepath.Dir(m))
		}
	}
	if len(dirs) == 0 {
		return "", fmt.Errorf("PostgreSQL server binaries not found (%s and initdb): "+
			"install Debian's postgresql package (apt-get install postgresql; `make test` installs it)", pattern)
	}
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int {
		switch va, vb := version(a), version(b); {
		case va < vb:
			return -1
		case va > vb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return dirs[len(dirs)-1], nil
}

// credential returns who the server runs as: nil (the current user)
// unless we are root, then the postgres user or else nobody.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("running as root and neither a postgres nor a nobody user exists to run PostgreSQL as")
}

// reachable reports an error if a parent of dir cannot be searched by
// the user the server runs as.
func reachable(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		if ok {
			search := mode&0o001 != 0 || (st.Uid == cred.Uid && mode&0o100 != 0) || (st.Gid == cred.Gid && mode&0o010 != 0)
			if !search {
				return fmt.Errorf("%s (mode %o) cannot be searched by uid %d, which PostgreSQL runs as: use a directory made by os.MkdirTemp itself, not one inside it", d, mode, cred.Uid)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// Start creates a cluster in dir (which should be empty or missing; its
// parents must be searchable by the postgres user when running as root)
// and starts its server. Stop it with Stop.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	bin, err := FindBin()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if len(dir)+len("/.s.PGSQL.5432") > 100 {
		return nil, fmt.Errorf("pgtest: %s is too long a path for a unix socket", dir)
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := reachable(dir, cred); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()

	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C", "HOME=" + dir}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return cmd
	}

	initdb := command("initdb", "-D", data, "-U", superuser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if err := runBounded(ctx, initdb, 2*time.Minute); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, tail(logPath))
	}

	srv := command("postgres", "-D", data, "-k", dir, "-p", strconv.Itoa(Port),
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning")
	// Should the test binary die, the server goes with it. Pdeathsig
	// fires when the *thread* that started the process ends, and Go ends
	// a thread whose goroutine exits while locked to it (tests that enter
	// a network namespace do that): so a goroutine locked to its own
	// thread starts the server and stays until it has exited.
	srv.SysProcAttr.Pdeathsig = syscall.SIGINT
	c := &Cluster{dir: dir, cmd: srv, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := srv.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = srv.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("pgtest: start postgres: %w", err)
	}

	c.admin, err = sql.Open("pgx", c.DSN("postgres"))
	if err == nil {
		err = c.waitReady(ctx, 60*time.Second)
	}
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("pgtest: %w\n%s", err, tail(logPath))
	}
	return c, nil
}

// waitReady polls the server until it accepts connections.
func (c *Cluster) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.admin.PingContext(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("postgres exited: %v", c.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %v: %w", limit, err)
		}
	}
}

// runBounded runs cmd, killing it after limit.
func runBounded(ctx context.Context, cmd *exec.Cmd, limit time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	case <-time.After(limit):
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("%s did not finish in %v", filepath.Base(cmd.Path), limit)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Dir is the cluster's directory (socket, data, postgres.log).
func (c *Cluster) Dir() string { return c.dir }

// PID is the server's process ID.
func (c *Cluster) PID() int { return c.cmd.Process.Pid }

// DSN returns the connection string of a database of the cluster.
func (c *Cluster) DSN(dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.dir, Port, superuser, dbname)
}

// CreateDatabase creates a new, empty database t_<n> and returns its DSN.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("t_%d", c.seq.Add(1))
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := c.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return c.DSN(name), nil
}

// Stop shuts the server down (fast shutdown, SIGINT, then SIGKILL after
// 30 s) and waits for it to exit. The directory is left in place.
func (c *Cluster) Stop() error {
	if c.admin != nil {
		c.admin.Close()
	}
	select {
	case <-c.done:
		return nil
	default:
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
		return nil
	case <-time.After(30 * time.Second):
	}
	c.cmd.Process.Kill()
	<-c.done
	return fmt.Errorf("pgtest: postgres (pid %d) ignored SIGINT for 30s and was killed", c.PID())
}

// Shared is one cluster shared by the tests of a test binary; see the
// package documentation.
type Shared struct {
	c   *Cluster
	err error
}

// Main starts the cluster in a new temporary directory, runs the tests
// and stops and removes the cluster. A cluster that cannot start does not
// stop the tests: each Database call fails its test with the reason.
func (s *Shared) Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "preboot-pg-")
	if err != nil {
		s.err = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	s.c, s.err = Start(ctx, dir)
	cancel()
	if s.err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", s.err)
		return max(m.Run(), 1)
	}
	code := m.Run()
	if err := s.c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// Cluster returns the shared cluster, failing t if it did not start.
func (s *Shared) Cluster(t testing.TB) *Cluster {
	t.Helper()
	switch {
	case s.err != nil:
		t.Fatalf("PostgreSQL test cluster: %v", s.err)
	case s.c == nil:
		t.Fatal("pgtest: no cluster: call Shared.Main from TestMain")
	}
	return s.c
}

// Database creates a fresh database for t and returns its DSN.
func (s *Shared) Database(t testing.TB) string {
	t.Helper()
	dsn, err := s.Cluster(t).CreateDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}
