// Package initenv is what the preboot binary does when it runs as pid 1 of
// the imaging environment (the initrd built by package envbuild): mount
// the kernel file systems, read the preboot.* parameters from the kernel
// command line, load the drivers for the hardware it finds (modalias →
// modules.alias → modules.dep, finit_module) and the ones imaging needs
// (ImagingModules; efivarfs mounted on UEFI machines; /tmp a tmpfs of up
// to 75 % of RAM), get an address by DHCPv4 (or, for a machine that
// booted over IPv6, by DHCPv6 or SLAAC as the router advertisement says),
// apply the optional updateDrivers.tgz overlay from the server, and hand
// over to the agent. When the agent returns, it syncs and reboots (or
// powers off); on a fatal error it prints the reason on the console and
// either opens a shell (preboot.debug=1) or reboots after a countdown.
//
// Kernel command line parameters:
//
//	preboot.server=http://IP:PORT  the Preboot server (HTTP API and /files/); IPv6: https://[ADDR]:PORT;
//	                               URL,URL,…: servers sharing one database, the agent goes on with the next when one dies
//	preboot.token=TOKEN            per-job bearer token for the agent API
//	preboot.tls=sha256:HEX         pin of the server's TLS certificate (https servers)
//	preboot.job=ID                 the job this boot is for
//	preboot.images=URL             a restore reads manifest and chunks from this site server (the job's server when it lacks them)
//	preboot.images.tls=sha256:HEX  pin of the site server's TLS certificate
//	preboot.ip=A.B.C.D             the address the machine booted with: asked for again by DHCP (the token works only from it);
//	                               an IPv6 address: the environment comes up on IPv6 (router advertisement, DHCPv6 as iPXE's client, or SLAAC)
//	preboot.mac=MAC                the interface the machine booted from: tried first for DHCP
//	preboot.debug=1                debug logs; a shell instead of a reboot on errors
//	preboot.shell=1                maintenance: a shell on the console instead of the agent
//
// Child processes are not reaped: the environment is short-lived and
// reaping with wait4(-1) would steal exit codes from exec.Cmd.Wait.
package initenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/failover"
)

// After is what the machine does when the agent is done.
type After int

const (
	// Reboot restarts the machine (the default): the next boot finds no
	// work and goes to the local disk.
	Reboot After = iota
	// PowerOff switches the machine off.
	PowerOff
	// Stay keeps the environment running with a shell on the console.
	Stay
)

// ParseAfter maps the job's "after" field ("reboot", "poweroff", "none")
// to an After value; unknown values mean Reboot.
func ParseAfter(s string) After {
	switch strings.ToLower(s) {
	case "poweroff", "power-off", "halt", "shutdown":
		return PowerOff
	case "none", "stay":
		return Stay
	}
	return Reboot
}

func (a After) String() string {
	switch a {
	case PowerOff:
		return "poweroff"
	case Stay:
		return "none"
	}
	return "reboot"
}

// Env is what the environment learnt before the handoff.
type Env struct {
	Server    string            // preboot.server, e.g. http://10.0.0.1:8080 (the first when it lists several)
	Servers   []string          // every URL of preboot.server=URL,URL… (servers sharing one database)
	Token     string            // preboot.token
	TLS       string            // preboot.tls: sha256:HEX of the server's certificate
	Job       string            // preboot.job
	WantIP    netip.Addr        // preboot.ip: the address to ask DHCP for
	BootMAC   net.HardwareAddr  // preboot.mac: the interface to try first
	Debug     bool              // preboot.debug=1
	Shell     bool              // preboot.shell=1
	Params    map[string]string // every key=value on the command line
	Interface string            // the interface that got a lease
	MAC       net.HardwareAddr
	Addr      netip.Prefix // the leased address and its prefix
	Gateway   netip.Addr   // default router (invalid when none)
	DNS       []netip.Addr
	Modules   []string // modules loaded, in load order
	// After is what happens when the handoff returns without error; the
	// handoff sets it from the job ("after": reboot|poweroff|none).
	After After
}

// Handoff is the agent's entry point. It gets the environment and may set
// env.After; when it returns the environment syncs and reboots, powers
// off, or stays, as env.After says (a returned error always reboots,
// after a countdown, unless preboot.debug=1).
type Handoff func(ctx context.Context, env *Env) error

// ParseCmdline parses a kernel command line into the preboot.* fields and
// a map of every key=value (flags without "=" map to ""). Quoted values
// ("a b") keep their spaces.
func ParseCmdline(cmdline string) Env {
	env := Env{Params: map[string]string{}}
	for _, f := range splitCmdline(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		env.Params[k] = v
	}
	env.Servers = failover.Split(env.Params["preboot.server"])
	if len(env.Servers) > 0 {
		env.Server = env.Servers[0]
	}
	env.Token = env.Params["preboot.token"]
	env.TLS = env.Params["preboot.tls"]
	env.Job = env.Params["preboot.job"]
	if a, err := netip.ParseAddr(env.Params["preboot.ip"]); err == nil && !a.IsUnspecified() {
		// IPv4 or IPv6 (without the server's zone: it names the
		// server's interface, not this machine's).
		env.WantIP = a.Unmap().WithZone("")
	}
	if m, err := net.ParseMAC(env.Params["preboot.mac"]); err == nil {
		env.BootMAC = m
	}
	env.Debug = truthy(env.Params["preboot.debug"])
	env.Shell = truthy(env.Params["preboot.shell"])
	return env
}

func truthy(s string) bool {
	switch strings.ToLower(s) {
	case "1", "y", "yes", "true", "on":
		return true
	}
	return false
}

// splitCmdline splits on spaces outside double quotes and drops the quotes,
// as the kernel does.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// Options tune Run; the zero value is right for the real environment.
type Options struct {
	// RebootDelay is the countdown before rebooting after a fatal error
	// (default 30 s).
	RebootDelay time.Duration
	// DHCPTimeout bounds the search for a lease on all interfaces
	// (default 2 minutes).
	DHCPTimeout time.Duration
	// NICTimeout bounds the wait for the first Ethernet interface
	// (default 30 s).
	NICTimeout time.Duration
}

func (o *Options) defaults() {
	if o.RebootDelay <= 0 {
		o.RebootDelay = 30 * time.Second
	}
	if o.DHCPTimeout <= 0 {
		o.DHCPTimeout = 2 * time.Minute
	}
	if o.NICTimeout <= 0 {
		o.NICTimeout = 30 * time.Second
	}
}

// ConsoleLogger returns a text logger on /dev/console (stderr when the
// console cannot be opened); debug enables debug-level records.
func ConsoleLogger(debug bool) *slog.Logger {
	var w io.Writer = os.Stderr
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		w = f
	}
	lv := slog.LevelInfo
	if debug {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
}

// Run is pid 1 of the imaging environment. It refuses to run as any other
// process (it mounts file systems and reboots the machine). It does not
// return unless rebooting fails; logger may be nil (console logger).
func Run(ctx context.Context, logger *slog.Logger, handoff Handoff) error {
	return RunWithOptions(ctx, logger, handoff, Options{})
}

// RunWithOptions is Run with tunables.
func RunWithOptions(ctx context.Context, logger *slog.Logger, handoff Handoff, opts Options) error {
	if os.Getpid() != 1 {
		return errors.New("initenv: not pid 1: the imaging environment init only runs as the initrd's /init")
	}
	opts.defaults()
	mountErr := mountAll()
	cmdline, _ := os.ReadFile("/proc/cmdline")
	env := ParseCmdline(string(cmdline))
	if logger == nil {
		logger = ConsoleLogger(env.Debug)
	}
	fmt.Fprintf(os.Stderr, "\nPreboot imaging environment (pid 1)\n")
	if mountErr != nil {
		logger.Warn("mount", "err", mountErr)
	}
	err := boot(ctx, logger, handoff, &env, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\n*** PREBOOT-ENV-FATAL: %v\n", err)
		logger.Error("imaging environment failed", "err", err)
		if env.Debug {
			fmt.Fprintln(os.Stderr, "*** preboot.debug=1: starting a shell; the machine reboots when it exits")
			runShell(ctx, &env, logger)
		} else {
			countdown(opts.RebootDelay)
		}
		return finish(logger, Reboot)
	}
	if env.After == Stay {
		fmt.Fprintln(os.Stderr, "*** job done (after=none): starting a shell; the machine reboots when it exits")
		runShell(ctx, &env, logger)
		return finish(logger, Reboot)
	}
	return finish(logger, env.After)
}

// boot does everything up to and including the handoff.
func boot(ctx context.Context, logger *slog.Logger, handoff Handoff, env *Env, opts Options) error {
	_ = unix.Sethostname([]byte("preboot"))
	logger.Info("kernel command line", "server", env.Server, "job", env.Job, "debug", env.Debug, "shell", env.Shell)
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	modDir := filepath.Join("/lib/modules", release)
	idx, err := ParseModuleIndex(modDir)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", release, err)
	}
	loader := &Loader{Dir: modDir, SysDir: "/sys", Index: idx, Logger: logger}
	mods, err := loader.Coldplug(ctx, 8, 500*time.Millisecond)
	env.Modules = append(env.Modules, mods...)
	if err != nil {
		return fmt.Errorf("load drivers: %w", err)
	}
	logger.Info("drivers loaded", "count", len(mods), "modules", strings.Join(mods, ","))
	env.Modules = append(env.Modules, prepareImaging(ctx, logger, loader, "/sys", "/dev", "/proc/misc")...)

	if _, err := bringUpNetwork(ctx, logger, loader, env, opts); err != nil {
		return err
	}
	env.Server = serverOnLink(env.Server, env.Interface)
	for i, s := range env.Servers {
		env.Servers[i] = serverOnLink(s, env.Interface)
	}

	if env.Server != "" {
		extra, err := ApplyUpdateDriversTLS(ctx, logger, env.Server, env.TLS, "/", loader)
		env.Modules = append(env.Modules, extra...)
		if err != nil {
			return fmt.Errorf("updateDrivers.tgz: %w", err)
		}
	}

	if env.Shell {
		fmt.Fprintln(os.Stderr, "*** preboot.shell=1: maintenance shell; the machine reboots when it exits")
		runShell(ctx, env, logger)
		env.After = Reboot
		return nil
	}
	if handoff == nil {
		return errors.New("no agent to hand over to")
	}
	logger.Info("handing over to the agent", "server", env.Server, "job", env.Job, "interface", env.Interface, "addr", env.Addr)
	if err := handoff(ctx, env); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// mountAll mounts the kernel file systems pid 1 needs; already-mounted
// ones are fine.
func mountAll() error {
	err := mountUnder("/", kernelMounts(), true)
	_ = os.Symlink("/proc/self/fd", "/dev/fd")
	_ = os.Symlink("/proc/mounts", "/etc/mtab")
	return err
}

// runShell runs busybox sh on the console with the environment exported.
func runShell(ctx context.Context, env *Env, logger *slog.Logger) {
	sh := "/bin/busybox"
	if _, err := os.Stat(sh); err != nil {
		logger.Error("no shell in this environment", "path", sh)
		return
	}
	cmd := exec.CommandContext(ctx, sh, "sh", "-l")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(),
		"PATH=/sbin:/bin:/usr/sbin:/usr/bin", "HOME=/root", "TERM=linux", "PS1=preboot# ",
		"PREBOOT_SERVER="+env.Server, "PREBOOT_TOKEN="+env.Token, "PREBOOT_JOB="+env.Job, "PREBOOT_TLS_FINGERPRINT="+env.TLS)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		logger.Warn("shell ended", "err", err)
	}
}

func countdown(d time.Duration) {
	for left := d; left > 0; left -= time.Second {
		fmt.Fprintf(os.Stderr, "\rrebooting in %2d s ", int(left/time.Second))
		time.Sleep(time.Second)
	}
	fmt.Fprintln(os.Stderr)
}

// finish syncs and reboots or powers off. It only returns on failure.
func finish(logger *slog.Logger, a After) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if a == PowerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	logger.Info("imaging environment done", "after", a.String())
	fmt.Fprintf(os.Stderr, "*** %s\n", a)
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	select {} // the kernel is going down
}
