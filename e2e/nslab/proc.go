package nslab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command returns a command that runs name with args inside namespace ns
// (`ip netns exec NS NAME ARGS...`: ip execs the program, so the
// process's PID is the program's). It runs in a process group of its own,
// so that [Proc.Kill] also reaches a pipeline's other processes. Start it
// with [Lab.Start] to have it killed at Close, or run it yourself.
func (l *Lab) Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	return cmd
}

// Run runs name with args inside namespace ns and returns its combined
// output; a non-zero exit is an error carrying the output.
func (l *Lab) Run(ctx context.Context, ns, name string, args ...string) (string, error) {
	cmd := l.Command(ctx, ns, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s %s: %w: %s", ns, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Proc is a process the lab started. Close kills it (SIGKILL to its
// process group, by PID) if it is still running.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	Started time.Time

	done  chan struct{}
	err   error     // Wait's result, set before done is closed
	ended time.Time // set before done is closed
}

// Start starts cmd (usually from [Lab.Command]; set its Stdout and Stderr
// first) in a process group of its own and tracks it: a process still
// running at Close is killed then. Name is used in messages.
func (l *Lab) Start(name string, cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	p := &Proc{Name: name, Cmd: cmd, done: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("start %s: the lab is closed", name)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.Started = time.Now()
	l.procs = append(l.procs, p)
	l.logf("nslab %s: started %s (pid %d): %s", l.ID, name, cmd.Process.Pid, strings.Join(cmd.Args, " "))
	go func() {
		p.err = cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	return p, nil
}

// StartIn is Start(name, Command(ctx, ns, argv[0], argv[1:]...)) with the
// process's stdout and stderr appended to logFile ("" = discarded).
func (l *Lab) StartIn(ctx context.Context, ns, name, logFile string, argv ...string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, errors.New("StartIn: empty command")
	}
	cmd := l.Command(ctx, ns, argv[0], argv[1:]...)
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		defer f.Close() // the child has its own copy once started
		cmd.Stdout, cmd.Stderr = f, f
	}
	return l.Start(name, cmd)
}

// PID is the process's ID (also its process group's).
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns exec.Cmd.Wait's result.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// WaitTimeout waits at most d; it returns an error if the process is
// still running then (it is not killed).
func (p *Proc) WaitTimeout(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s (pid %d) still running after %v", p.Name, p.PID(), d)
	}
}

// Elapsed is the time from Start to exit (or to now while it runs).
func (p *Proc) Elapsed() time.Duration {
	select {
	case <-p.done:
		return p.ended.Sub(p.Started)
	default:
		return time.Since(p.Started)
	}
}

// Kill sends SIGKILL to the process and its process group (by PID) and
// returns at once; Wait to see it gone. Killing an exited process is a
// no-op.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	return killGroup(p.PID())
}

// Signal sends sig to the process alone (say SIGTERM for a graceful stop).
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.Cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to grace, then kills (SIGKILL) and waits.
func (p *Proc) Stop(grace time.Duration) error {
	_ = p.Signal(syscall.SIGTERM)
	if p.WaitTimeout(grace) == nil || p.Exited() {
		return nil
	}
	if err := p.Kill(); err != nil {
		return err
	}
	<-p.done
	return nil
}

// stop kills the process (and its group) and waits for it.
func (p *Proc) stop() {
	if p.Exited() {
		return
	}
	_ = killGroup(p.PID())
	<-p.done
}

// killGroup sends SIGKILL to process group pid (the process started with
// Setpgid), falling back to the process alone.
func killGroup(pid int) error {
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
	}
	return nil
}

// InNamespace runs fn on an OS thread that joined namespace ns: sockets fn
// creates (net.ListenPacket, net.Dial, ipv4.NewPacketConn…) belong to that
// namespace and stay usable afterwards from any goroutine. The thread is
// thrown away when fn returns; fn must not start goroutines that expect to
// be in ns.
func InNamespace(ns string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine exits with the thread locked, so
		// the runtime destroys the thread instead of reusing it.
		runtime.LockOSThread()
		fd, err := unix.Open(filepath.Join("/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			ch <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}
