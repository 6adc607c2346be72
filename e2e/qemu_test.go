package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS.fd"
	// Secure Boot: SMM-enforced variables, Microsoft's keys enrolled.
	ovmfCodeSecure = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	ovmfVarsMS     = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// vmConfig describes one QEMU guest.
type vmConfig struct {
	Name  string   // used in file names and messages
	Dir   string   // where the serial log and firmware variables go
	Netns string   // network namespace to run QEMU in ("" = current)
	UEFI  bool     // OVMF instead of SeaBIOS
	Args  []string // devices: NICs, disks
	// Reboot lets a guest reboot inside the same QEMU process (the
	// imaging scenarios); by default QEMU exits on reboot (-no-reboot).
	Reboot bool
	// SecureBoot: OVMF enforcing Secure Boot with Microsoft's keys (q35
	// with SMM, secure flash); implies UEFI.
	SecureBoot bool
}

// vm is a running QEMU process. Its serial console goes to SerialLog.
type vm struct {
	*running
	t         testing.TB
	cfg       vmConfig
	SerialLog string
	DebugLog  string
}

func requireQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not installed: apt-get install qemu-system-x86 (see e2e/README.md)")
	}
}

// startVM starts QEMU (TCG: KVM is not available here) and registers a
// cleanup that kills it by PID. QEMU exits on guest reboot (-no-reboot) and
// on poweroff.
func startVM(t testing.TB, cfg vmConfig) *vm {
	t.Helper()
	v := &vm{
		t:         t,
		cfg:       cfg,
		SerialLog: filepath.Join(cfg.Dir, cfg.Name+"-serial.log"),
		DebugLog:  filepath.Join(cfg.Dir, cfg.Name+"-firmware.log"),
	}
	args := []string{
		"-accel", "tcg",
		"-m", "512",
		"-nodefaults",
		"-display", "none",
		"-monitor", "none",
		// The serial console goes to QEMU's stdout; lineStamper writes it
		// to SerialLog with the time since start on each line.
		"-serial", "stdio",
		// SeaBIOS (and debug builds of OVMF) log to I/O port 0x402.
		"-debugcon", "file:" + v.DebugLog,
		"-global", "isa-debugcon.iobase=0x402",
	}
	if !cfg.Reboot {
		args = append(args, "-no-reboot")
	}
	if cfg.SecureBoot {
		vars := filepath.Join(cfg.Dir, cfg.Name+"-OVMF_VARS_4M.ms.fd")
		if err := copyFile(ovmfVarsMS, vars, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args,
			"-machine", "q35,smm=on",
			"-global", "driver=cfi.pflash01,property=secure,value=on",
			"-global", "ICH9-LPC.disable_s3=1",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCodeSecure,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	} else if cfg.UEFI {
		vars := filepath.Join(cfg.Dir, cfg.Name+"-OVMF_VARS.fd")
		if err := copyFile(ovmfVars, vars, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,file="+vars)
	}
	args = append(args, cfg.Args...)
	var argv []string
	if cfg.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", cfg.Netns}, "qemu-system-x86_64")
	} else {
		argv = []string{"qemu-system-x86_64"}
	}
	argv = append(argv, args...)
	stderr, err := os.Create(filepath.Join(cfg.Dir, cfg.Name+"-qemu.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	serial, err := os.Create(v.SerialLog)
	if err != nil {
		stderr.Close()
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = &lineStamper{w: serial, start: time.Now(), bol: true}
	cmd.Stderr = stderr
	t.Logf("vm %s: %s", cfg.Name, strings.Join(argv, " "))
	if v.running, err = startRunning(cmd, stderr, serial); err != nil {
		stderr.Close()
		serial.Close()
		t.Fatalf("start qemu: %v", err)
	}
	t.Cleanup(func() {
		v.stop()
		if t.Failed() {
			t.Logf("vm %s serial console (tail):\n%s", cfg.Name, tailFile(v.SerialLog, 60))
			t.Logf("vm %s qemu stderr (tail):\n%s", cfg.Name, tailFile(filepath.Join(cfg.Dir, cfg.Name+"-qemu.stderr"), 20))
			t.Logf("vm %s firmware debug log (tail):\n%s", cfg.Name, tailFile(v.DebugLog, 20))
		}
	})
	return v
}

// lineStamper prefixes every line written through it with the time since
// start, so a slow boot shows where the time went.
type lineStamper struct {
	w     io.Writer
	start time.Time
	bol   bool // at the beginning of a line
}

func (l *lineStamper) Write(p []byte) (int, error) {
	var buf bytes.Buffer
	for _, c := range p {
		if l.bol {
			fmt.Fprintf(&buf, "[%7.2fs] ", time.Since(l.start).Seconds())
			l.bol = false
		}
		buf.WriteByte(c)
		if c == '\n' {
			l.bol = true
		}
	}
	if _, err := l.w.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// serial returns the serial console output so far.
func (v *vm) serial() string {
	b, _ := os.ReadFile(v.SerialLog)
	return string(b)
}

// waitFor polls the serial console until every one of the markers has
// appeared, the context ends, or QEMU exits without having printed them.
func (v *vm) waitFor(ctx context.Context, markers ...string) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		exited := v.exited() // read before the log, so a final write is seen
		out := v.serial()
		var missing []string
		for _, m := range markers {
			if !strings.Contains(out, m) {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if exited {
			return fmt.Errorf("vm %s: qemu exited (%v) before the console showed %q", v.cfg.Name, v.err, missing)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("vm %s: console did not show %q: %w", v.cfg.Name, missing, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitExit waits for QEMU to exit by itself (guest poweroff).
func (v *vm) waitExit(ctx context.Context) error {
	select {
	case <-v.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("vm %s did not power off: %w", v.cfg.Name, ctx.Err())
	}
}

// tailFile returns the last n lines of a file, for failure messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	b = bytes.ReplaceAll(b, []byte("\r"), nil)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func copyFile(src, dst string, perm os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// run runs a command and returns its combined output; the error names the
// command and carries its output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
