package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/bootmedia"
	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/initenv"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tlspin"
)

// mediaRecheck is how often the manual menu asks the server again while
// nobody chooses anything: work assigned from the console meanwhile
// starts by itself.
const mediaRecheck = 30 * time.Second

// mediaSession is a machine booted from the manual preboot medium (or
// `preboot agent media`): it asks the server for its work and runs it,
// or offers the manual menu on the console.
type mediaSession struct {
	server, pin string
	mac         string
	ip          string
	console     *ttyLines
	out         io.Writer
	log         *slog.Logger
	// device overrides the job's disk (`agent media --device`).
	device string
	// shellEnv is added to the maintenance shell's environment.
	shellEnv []string
}

// ttyLines reads lines from the console one at a time, on demand, in the
// background: the menu can wait for a choice and for the server at once,
// and no read is pending while the maintenance shell owns the console.
type ttyLines struct {
	fd      int
	want    chan struct{}
	lines   chan string
	eof     chan struct{}
	pending bool
}

func newTTYLines(in *os.File) *ttyLines {
	c := &ttyLines{fd: int(in.Fd()), want: make(chan struct{}), lines: make(chan string), eof: make(chan struct{})}
	go func() {
		r := bufio.NewReader(in)
		for range c.want {
			l, err := r.ReadString('\n')
			if l != "" || err == nil {
				c.lines <- strings.TrimSpace(l)
			}
			if err != nil {
				close(c.eof)
				return
			}
		}
	}()
	return c
}

// read waits for a line; ok is false at the end of input, on ctx's end or
// after timeout (0: none). A read cut short stays pending: its line is
// the next read's.
func (c *ttyLines) read(ctx context.Context, timeout time.Duration) (string, bool) {
	if !c.pending {
		select {
		case c.want <- struct{}{}:
			c.pending = true
		case <-c.eof:
			return "", false
		}
	}
	var tc <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		tc = t.C
	}
	select {
	case l := <-c.lines:
		c.pending = false
		return l, true
	case <-c.eof:
		return "", false
	case <-tc:
		return "", false
	case <-ctx.Done():
		return "", false
	}
}

// secret reads a line with the terminal's echo off (when it is a
// terminal).
func (c *ttyLines) secret(ctx context.Context) (string, bool) {
	t, err := unix.IoctlGetTermios(c.fd, unix.TCGETS)
	if err == nil {
		quiet := *t
		quiet.Lflag &^= unix.ECHO
		if unix.IoctlSetTermios(c.fd, unix.TCSETS, &quiet) == nil {
			defer unix.IoctlSetTermios(c.fd, unix.TCSETS, t) //nolint:errcheck // best effort
		}
	}
	return c.read(ctx, 0)
}

func (m *mediaSession) httpClient() (*http.Client, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	if m.pin != "" {
		tc, err := tlspin.Config(m.pin)
		if err != nil {
			return nil, err
		}
		hc.Transport = tlspin.Transport(tc)
	}
	return hc, nil
}

// ask posts the machine's identity to the server's media endpoint.
func (m *mediaSession) ask(ctx context.Context) (policy.MediaAnswer, error) {
	var ans policy.MediaAnswer
	hc, err := m.httpClient()
	if err != nil {
		return ans, err
	}
	in, _ := agent.GetInfo(ctx, "")
	h := in.Hardware
	arch := "bios"
	if h.Firmware == "uefi" {
		arch = "efi-x64"
	}
	body, _ := json.Marshal(policy.MediaRequest{MAC: m.mac, UUID: h.UUID, Serial: h.Serial, Manufacturer: h.Vendor, Product: h.Product, Arch: arch})
	var last error
	for attempt := range 5 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ans, ctx.Err()
			case <-time.After(time.Duration(attempt) * 2 * time.Second):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.server+policy.MediaPath, bytes.NewReader(body))
		if err != nil {
			return ans, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			last = err
			continue
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(data, &e)
			last = fmt.Errorf("%s: %s: %s", policy.MediaPath, resp.Status, e.Error)
			if resp.StatusCode < 500 {
				return ans, last
			}
			continue
		}
		if err := json.Unmarshal(data, &ans); err != nil {
			return ans, fmt.Errorf("%s: %w", policy.MediaPath, err)
		}
		return ans, nil
	}
	return ans, fmt.Errorf("server %s unreachable: %w", m.server, last)
}

// run asks the server and does what it says until there is an after-job
// action ("reboot", "poweroff", "none") to return.
func (m *mediaSession) run(ctx context.Context) (string, error) {
	for {
		if m.server == "" {
			if !m.askServer(ctx) {
				return "", errors.New("no server: none on the kernel command line and none given at the console")
			}
		}
		ans, err := m.ask(ctx)
		if err != nil {
			fmt.Fprintf(m.out, "\n*** Preboot: %v\n", err)
			if m.console == nil {
				return "", err
			}
			fmt.Fprintln(m.out, "Enter another server URL, an empty line to try again, or \"menu\" for the manual menu:")
			l, ok := m.console.read(ctx, mediaRecheck)
			switch {
			case !ok || l == "":
				continue
			case l == "menu":
				if after, done, err := m.menu(ctx, policy.MediaAnswer{Reason: "server unreachable"}); done || err != nil {
					return after, err
				}
				continue
			default:
				m.server = l
				if !m.askPin(ctx) {
					m.server = ""
				}
				continue
			}
		}
		switch ans.Action {
		case policy.MediaWork:
			fmt.Fprintf(m.out, "\n*** Preboot: job %d: %s %s (%s)\n", ans.Job, ans.Kind, ans.Bundle, ans.Reason)
			out, err := agent.Auto(ctx, agent.Env{Server: m.server, Token: ans.Token, Job: ans.Job, TLS: m.pin},
				agent.AutoOptions{Device: m.device, Logger: m.log, Progress: agentProgressPrinter(m.out)})
			if err == nil || m.console == nil {
				return out.After, err
			}
			fmt.Fprintf(m.out, "\n*** Preboot: job %d failed: %v\n", ans.Job, err)
			if after, done, err := m.menu(ctx, policy.MediaAnswer{Reason: "the job failed"}); done || err != nil {
				return after, err
			}
		case policy.MediaWait:
			fmt.Fprintf(m.out, "*** Preboot: %s; asking again in %d s\n", ans.Reason, ans.RetryAfter)
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(time.Duration(max(ans.RetryAfter, 1)) * time.Second):
			}
		default:
			if m.console == nil {
				return "", fmt.Errorf("manual mode (%s) needs a console", ans.Reason)
			}
			if after, done, err := m.menu(ctx, ans); done || err != nil {
				return after, err
			}
		}
	}
}

func (m *mediaSession) askServer(ctx context.Context) bool {
	if m.console == nil {
		return false
	}
	for {
		fmt.Fprint(m.out, "\nPreboot server URL (e.g. https://preboot.example:8443): ")
		l, ok := m.console.read(ctx, 0)
		if !ok {
			return false
		}
		if _, err := bootmedia.CheckServer(l, ""); err != nil && !strings.Contains(err.Error(), "pin") {
			fmt.Fprintln(m.out, err)
			continue
		}
		m.server = strings.TrimRight(l, "/")
		if m.askPin(ctx) {
			return true
		}
	}
}

// askPin asks for the certificate pin of an https server.
func (m *mediaSession) askPin(ctx context.Context) bool {
	m.pin = ""
	if _, err := bootmedia.CheckServer(m.server, ""); err == nil {
		return true // plain http
	} else if !strings.Contains(err.Error(), "pin") {
		fmt.Fprintln(m.out, err)
		return false
	}
	for {
		fmt.Fprint(m.out, "Its certificate fingerprint (sha256:HEX, as the server logs it): ")
		l, ok := m.console.read(ctx, 0)
		if !ok {
			return false
		}
		if _, err := tlspin.Parse(l); err != nil {
			fmt.Fprintln(m.out, err)
			continue
		}
		m.pin = l
		return true
	}
}

// menu is the manual mode (ZENworks' manual imaging): done reports that
// the machine should stop (after says how); otherwise the caller asks the
// server again. Nobody choosing for mediaRecheck also asks again.
func (m *mediaSession) menu(ctx context.Context, ans policy.MediaAnswer) (after string, done bool, err error) {
	fmt.Fprintf(m.out, "\n=== Preboot manual mode — %s %s, server %s\n", m.mac, m.ip, m.server)
	if ans.Reason != "" {
		fmt.Fprintf(m.out, "    (%s)\n", ans.Reason)
	}
	fmt.Fprint(m.out, "  1) Capture this machine's disk to an image\n"+
		"  2) Restore an image onto this machine's disk\n"+
		"  3) Show disks and image-safe data\n"+
		"  4) Ask the server again for assigned work\n"+
		"  5) Maintenance shell\n"+
		"  6) Reboot\n"+
		"  7) Power off\n"+
		"Choice: ")
	l, ok := m.console.read(ctx, mediaRecheck)
	if !ok {
		fmt.Fprintln(m.out)
		return "", false, ctx.Err()
	}
	switch l {
	case "1", "2":
		kind := store.KindImageCapture
		if l == "2" {
			kind = store.KindImageRestore
		}
		if err := m.quickTask(ctx, kind); err != nil {
			fmt.Fprintf(m.out, "*** %v\n", err)
		}
	case "3":
		in, err := agent.GetInfo(ctx, "")
		if err != nil {
			fmt.Fprintf(m.out, "*** %v\n", err)
		}
		_ = printAgentInfo(m.out, in)
		fmt.Fprint(m.out, "\nEnter to go back. ")
		m.console.read(ctx, 0)
	case "4", "":
	case "5":
		m.shell(ctx)
	case "6":
		return store.AfterReboot, true, nil
	case "7":
		return "poweroff", true, nil
	default:
		fmt.Fprintf(m.out, "*** no choice %q\n", l)
	}
	return "", false, nil
}

// quickTask assigns capture or restore of a named image to this machine
// through the admin API (the quick task of `preboot device capture|
// restore`, so the server records the job as for any other); the next
// question to the server then starts it. It needs an admin API token.
func (m *mediaSession) quickTask(ctx context.Context, kind string) error {
	verb := strings.TrimPrefix(kind, "image-")
	fmt.Fprintf(m.out, "Image to %s: ", verb)
	name, ok := m.console.read(ctx, 0)
	if !ok || name == "" {
		return errors.New("no image name")
	}
	fmt.Fprint(m.out, "Admin API token (`preboot token create`; not echoed): ")
	tok, ok := m.console.secret(ctx)
	fmt.Fprintln(m.out)
	if !ok || tok == "" {
		return errors.New("no token")
	}
	hc, err := m.httpClient()
	if err != nil {
		return err
	}
	c := &apiClient{base: m.server, token: tok, http: hc}
	var params any = bundle.Capture{Image: name}
	if kind == store.KindImageRestore {
		params = bundle.Restore{Image: name}
	}
	desc := fmt.Sprintf("%s image %s (made from the manual preboot medium)", verb, name)
	_, b, _, err := quickAssign(ctx, c, m.mac, verb+"-"+name, kind, desc, params, true)
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, name, err)
	}
	fmt.Fprintf(m.out, "*** assigned bundle %s to %s\n", b.Name, m.mac)
	return nil
}

// shell runs the maintenance shell on the console.
func (m *mediaSession) shell(ctx context.Context) {
	sh := "/bin/busybox"
	args := []string{"sh", "-l"}
	if _, err := os.Stat(sh); err != nil {
		sh, args = "/bin/sh", nil
	}
	cmd := exec.CommandContext(ctx, sh, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "PATH=/sbin:/bin:/usr/sbin:/usr/bin", "HOME=/root", "PS1=preboot# ",
		"PREBOOT_SERVER="+m.server, "PREBOOT_TLS_FINGERPRINT="+m.pin, "PREBOOT_MAC="+m.mac)
	cmd.Env = append(cmd.Env, m.shellEnv...)
	fmt.Fprintln(m.out, "Maintenance shell: `/init agent media` asks the server again, `/init agent capture|restore --device DISK --image NAME`\n"+
		"(with PREBOOT_TOKEN=an admin token) images by hand, `/init agent info` shows the disks; exit to return to the menu.")
	// No console read is pending here (the menu's choice was read).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		m.log.WarnContext(ctx, "shell ended", "err", err)
	}
}

// runMediaInit is the imaging environment's handoff on a boot from the
// medium (preboot.media=1).
func runMediaInit(ctx context.Context, env *initenv.Env, log *slog.Logger) error {
	m := &mediaSession{server: env.Server, pin: env.TLS, mac: env.MAC.String(), ip: env.Addr.String(),
		console: newTTYLines(os.Stdin), out: os.Stderr, log: log}
	fmt.Fprintf(os.Stderr, "\n*** Preboot manual preboot medium: %s (%s), server %s\n", m.mac, m.ip, orNone(m.server))
	after, err := m.run(ctx)
	env.After = initenv.ParseAfter(after)
	return err
}

func orNone(s string) string {
	if s == "" {
		return "(none: asked at the console)"
	}
	return s
}

// newAgentMedia is `preboot agent media`: what a boot from the medium
// does, from the maintenance shell (or any Linux on the machine).
func newAgentMedia(g *globals) *cobra.Command {
	var server, pin, mac, device, logLevel string
	var reboot bool
	c := &cobra.Command{
		Use:   "media [--server URL] [--tls-fingerprint sha256:HEX] [--mac MAC]",
		Short: "Ask the server for this machine's work and run it, else show the manual menu (the boot medium's mode)",
		Long: "Posts this machine's MAC and SMBIOS identity to the server (" + policy.MediaPath + "), as a boot from the\n" +
			"manual preboot medium does: the server registers it, applies its rules and assignments, and hands\n" +
			"back a job, which runs here; with nothing assigned the manual menu offers capture to and restore\n" +
			"from a named image (with an admin token), disks and image-safe data, a shell, reboot.\n" +
			"Defaults come from $PREBOOT_SERVER, $PREBOOT_TLS_FINGERPRINT and $PREBOOT_MAC (set in the medium's shell).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(g.stderr, "auto", logLevel)
			if err != nil {
				return err
			}
			server = firstOf(server, os.Getenv("PREBOOT_SERVER"))
			pin = firstOf(pin, os.Getenv("PREBOOT_TLS_FINGERPRINT"))
			mac = firstOf(mac, os.Getenv("PREBOOT_MAC"))
			if mac == "" {
				in, _ := agent.GetInfo(cmd.Context(), "")
				for _, n := range in.Hardware.NICs {
					if n.MAC != "" && n.State == "up" {
						mac = n.MAC
						break
					}
				}
			}
			if mac == "" {
				return errors.New("no --mac and no NIC with a link")
			}
			if mac, err = store.NormalizeMAC(mac); err != nil {
				return err
			}
			if server != "" {
				if server, err = bootmedia.CheckServer(server, pin); err != nil {
					return err
				}
			}
			m := &mediaSession{server: server, pin: pin, mac: mac, device: device, console: newTTYLines(os.Stdin), out: g.stderr, log: log}
			after, err := m.run(cmd.Context())
			if err != nil {
				return err
			}
			if reboot {
				return agentPowerAction(after)
			}
			fmt.Fprintf(g.stdout, "done (after: %s)\n", firstOf(after, "reboot"))
			return nil
		},
	}
	c.Flags().StringVar(&server, "server", "", "Preboot server URL (default: $PREBOOT_SERVER, else asked)")
	c.Flags().StringVar(&pin, "tls-fingerprint", "", "pin of the server's certificate, sha256:HEX (default: $PREBOOT_TLS_FINGERPRINT)")
	c.Flags().StringVar(&mac, "mac", "", "this machine's MAC (default: $PREBOOT_MAC, else the first NIC with a link)")
	c.Flags().StringVar(&device, "device", "", "disk (block device or disk-image file) the work is done on (default: the job's)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	c.Flags().BoolVar(&reboot, "reboot", false, "reboot or power off afterwards as the job or the menu says")
	return c
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
