package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// ScriptOptions configure RunScript.
type ScriptOptions struct {
	// Script is the shell script's text.
	Script string
	// Shell runs it (/bin/sh when empty) as `SHELL FILE`: no -e, so the
	// exit status is the last command's unless the script says `set -e`.
	Shell string
	// Timeout kills the script's whole process group (1 h when 0).
	Timeout time.Duration
	// Env is added to the agent's environment (KEY=value).
	Env []string
	// Output gets stdout and stderr, merged in the order written, one
	// line at a time without the newline (lines longer than 8 KiB are
	// cut). It is called from one goroutine.
	Output func(line string)
}

// ScriptError is a script that failed: a non-zero exit, a signal, or the
// timeout. Tail holds its last output lines.
type ScriptError struct {
	ExitCode int    // -1 when killed by a signal
	Signal   string // the signal, when killed
	TimedOut bool
	Timeout  time.Duration
	Tail     []string
}

func (e *ScriptError) Error() string {
	var b strings.Builder
	switch {
	case e.TimedOut:
		fmt.Fprintf(&b, "script timed out after %s (its process group was killed)", e.Timeout)
	case e.Signal != "":
		fmt.Fprintf(&b, "script killed by signal %s", e.Signal)
	default:
		fmt.Fprintf(&b, "script exited with status %d", e.ExitCode)
	}
	if len(e.Tail) > 0 {
		fmt.Fprintf(&b, "; last output lines:\n%s", strings.Join(e.Tail, "\n"))
	} else {
		b.WriteString("; it printed nothing")
	}
	return b.String()
}

const (
	scriptTailLines = 10
	scriptMaxLine   = 8 << 10
	// scriptDrain bounds the wait for output still in the pipe after the
	// script ended (a daemon that left the process group may hold it).
	scriptDrain = 5 * time.Second
)

// RunScript writes the script to a file in a new temporary directory (its
// working directory, removed afterwards) and runs it with /bin/sh, stdin
// from /dev/null, in a process group of its own. When the script ends, or
// the timeout or ctx ends it, the whole group is killed, so nothing it
// started keeps running. A non-zero exit, a signal or the timeout is a
// *ScriptError carrying the last lines of output.
func RunScript(ctx context.Context, o ScriptOptions) error {
	if runtime.GOOS != "linux" {
		return errors.New("script: scripts run only on Linux (the imaging environment)")
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	shell := o.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	dir, err := os.MkdirTemp("", "preboot-script-")
	if err != nil {
		return fmt.Errorf("script: %w", err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(file, []byte(o.Script), 0o700); err != nil {
		return fmt.Errorf("script: %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("script: %w", err)
	}
	defer pr.Close()

	cmd := exec.Command(shell, file)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = pw, pw // one pipe: the lines keep their order
	cmd.Env = scriptEnv(o.Env)
	startProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("script: start %s: %w", shell, err)
	}
	pw.Close()

	tail := make([]string, 0, scriptTailLines)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		readLines(pr, func(line string) {
			if len(tail) == scriptTailLines {
				copy(tail, tail[1:])
				tail = tail[:scriptTailLines-1]
			}
			tail = append(tail, line)
			if o.Output != nil {
				o.Output(line)
			}
		})
	}()

	exited := make(chan struct{})
	go func() {
		_ = waitExited(cmd.Process.Pid)
		close(exited)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	timedOut, cancelled := false, false
	select {
	case <-exited:
	case <-timer.C:
		timedOut = true
	case <-ctx.Done():
		cancelled = true
	}
	// The script's shell is gone or going; whatever it left behind goes
	// too. It is not reaped yet, so the group id is still its own.
	_ = killProcessGroup(cmd.Process.Pid)
	<-exited
	waitErr := cmd.Wait()
	select {
	case <-readDone:
	case <-time.After(scriptDrain):
		pr.Close() // unblocks the reader
		<-readDone
	}

	switch {
	case cancelled:
		return fmt.Errorf("script: %w", ctx.Err())
	case timedOut:
		return &ScriptError{ExitCode: -1, TimedOut: true, Timeout: timeout, Tail: tail}
	case waitErr == nil:
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(waitErr, &ee) {
		return fmt.Errorf("script: %w", waitErr)
	}
	se := &ScriptError{ExitCode: ee.ExitCode(), Tail: tail}
	if se.ExitCode < 0 {
		se.Signal = strings.TrimPrefix(ee.String(), "signal: ")
	}
	return se
}

// scriptEnv is the agent's environment plus extra, with a PATH for the
// imaging environment when none is set (pid 1 gets none from the kernel).
func scriptEnv(extra []string) []string {
	env := os.Environ()
	if os.Getenv("PATH") == "" {
		env = append(env, "PATH=/sbin:/bin:/usr/sbin:/usr/bin")
	}
	if os.Getenv("HOME") == "" {
		env = append(env, "HOME=/root")
	}
	return append(env, extra...)
}

// readLines calls fn for every line of r (without the line end), cutting
// lines longer than scriptMaxLine, until EOF or an error.
func readLines(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var cur []byte
	cut := false
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > 0 {
			full := frag[len(frag)-1] == '\n'
			if full {
				frag = frag[:len(frag)-1]
			}
			if len(cur)+len(frag) > scriptMaxLine {
				cut = true
			}
			room := max(scriptMaxLine-len(cur), 0)
			cur = append(cur, frag[:min(room, len(frag))]...)
			if full {
				fn(finishLine(cur, cut))
				cur, cut = cur[:0], false
			}
		}
		if err == nil || errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(cur) > 0 {
			fn(finishLine(cur, cut))
		}
		return
	}
}

func finishLine(b []byte, cut bool) string {
	s := strings.TrimSuffix(string(b), "\r")
	if cut {
		s += " …(line cut)"
	}
	return s
}
