package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func collect(lines *[]string) func(string) {
	return func(l string) { *lines = append(*lines, l) }
}

func TestRunScript(t *testing.T) {
	ctx := context.Background()
	var lines []string
	script := `echo "one $PREBOOT_X"
echo two >&2
printf 'three\r\nfour\n'
printf '%s' "$(pwd)" > pwd.txt; cat pwd.txt; echo
[ -t 0 ] && echo "stdin is a tty" || true
printf 'tail without newline'`
	err := RunScript(ctx, ScriptOptions{Script: script, Env: []string{"PREBOOT_X=x-value"}, Output: collect(&lines)})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 6 || lines[0] != "one x-value" || lines[1] != "two" || lines[2] != "three" ||
		lines[3] != "four" || lines[5] != "tail without newline" {
		t.Fatalf("lines %q", lines)
	}
	// The working directory is a temporary one, removed afterwards.
	if !strings.Contains(lines[4], "preboot-script-") {
		t.Errorf("working directory %q", lines[4])
	}
	if _, err := os.Stat(lines[4]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("working directory %s left behind: %v", lines[4], err)
	}

	// A long line is cut, the lines after it still arrive.
	lines = nil
	if err := RunScript(ctx, ScriptOptions{Script: "head -c 20000 /dev/zero | tr '\\0' a; echo; echo after", Output: collect(&lines)}); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || len(lines[0]) > scriptMaxLine+20 || !strings.HasSuffix(lines[0], "(line cut)") || lines[1] != "after" {
		t.Errorf("long line: %d lines, first %d bytes, %q", len(lines), len(lines[0]), lines[len(lines)-1])
	}
}

func TestRunScriptFails(t *testing.T) {
	ctx := context.Background()
	var lines []string
	script := "for i in $(seq 1 15); do echo line $i; done\necho 'no such thing' >&2\nexit 7\necho never\n"
	err := RunScript(ctx, ScriptOptions{Script: script, Output: collect(&lines)})
	var se *ScriptError
	if !errors.As(err, &se) || se.ExitCode != 7 || se.TimedOut {
		t.Fatalf("err %v, want exit status 7", err)
	}
	if len(se.Tail) != scriptTailLines || se.Tail[len(se.Tail)-1] != "no such thing" || se.Tail[0] != "line 7" {
		t.Errorf("tail %q", se.Tail)
	}
	if msg := err.Error(); !strings.Contains(msg, "status 7") || !strings.Contains(msg, "line 15\nno such thing") {
		t.Errorf("message %q", msg)
	}
	if len(lines) != 16 {
		t.Errorf("%d lines, want 16", len(lines))
	}
	// Plain `sh FILE`: a failing command in the middle does not stop it,
	// `set -e` does.
	if err := RunScript(ctx, ScriptOptions{Script: "false\necho went on\n"}); err != nil {
		t.Errorf("a failing command in the middle failed the script: %v", err)
	}
	if err := RunScript(ctx, ScriptOptions{Script: "set -e\nfalse\necho went on\n"}); !errors.As(err, &se) || se.ExitCode != 1 {
		t.Errorf("set -e: %v", err)
	}
	// Killed by a signal.
	if err := RunScript(ctx, ScriptOptions{Script: "echo bye\nkill -TERM $$\n"}); !errors.As(err, &se) || se.Signal == "" ||
		!strings.Contains(err.Error(), "signal") {
		t.Errorf("signal: %v", err)
	}
	// No shell.
	if err := RunScript(ctx, ScriptOptions{Script: "true", Shell: "/nonexistent/sh"}); err == nil {
		t.Error("a missing shell ran")
	}
}

// TestRunScriptTimeout: the timeout kills the script and what it started
// in the background.
func TestRunScriptTimeout(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "bg.pid")
	var lines []string
	script := "sleep 300 &\necho $! > " + pidFile + "\necho started\nsleep 300\n"
	err := RunScript(context.Background(), ScriptOptions{Script: script, Timeout: 500 * time.Millisecond, Output: collect(&lines)})
	var se *ScriptError
	if !errors.As(err, &se) || !se.TimedOut || !strings.Contains(err.Error(), "timed out after 500ms") ||
		!strings.Contains(err.Error(), "started") {
		t.Fatalf("err %v, want a timeout with the output", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("pid file %q", b)
	}
	// Killed: gone, or a zombie waiting for its new parent to reap it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			break
		}
		if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background process %d still running after the timeout: %s", pid, st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A cancelled context ends the script too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	if err := RunScript(ctx, ScriptOptions{Script: "sleep 300\n"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
