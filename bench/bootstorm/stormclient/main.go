// Command stormclient simulates a boot storm: N new PXE clients (random
// MACs and UUIDs) booting at once, each as UEFI x64 firmware and then
// iPXE would, against whatever answers on its network segment:
//
//  1. EDK2's PXE: DHCP DISCOVER (option 60 PXEClient:Arch:00007:UNDI:003016,
//     93, 94, 97) until it holds the site server's address offer and a
//     boot offer, REQUEST/ACK with the site server, the 4011 boot server
//     request when the boot offer names no file, TFTP of the boot
//     program (lock-step, blksize 1468, as EDK2);
//  2. iPXE: DISCOVER again with user class iPXE, the same REQUEST/4011
//     steps, the script it names (HTTP, or TFTP), and the chain to the
//     URL in it with ${mac:hexhyp}, ${uuid}, ${serial}, ... filled in as
//     iPXE does, until a script that chains no further.
//
// All clients share one socket on UDP 68 (answers are told apart by
// transaction ID); each binds its 4011, TFTP and HTTP sockets to the
// address the site server leased it (bench/bootstorm/run.sh puts the
// lease pool on the interface beforehand). Time is measured from the
// first DISCOVER to the last script. Client i starts at i*spread/n;
// every client stops at -timeout, the run at spread+timeout.
//
// It prints a JSON summary on stdout (see summary).
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

type config struct {
	iface    string
	n        int
	spread   time.Duration
	timeout  time.Duration
	blksize  int
	window   int
	tftpWait time.Duration
	name     string
}

type clientStats struct {
	naks         int
	dhcpRetries  int
	tftpTimeouts int
}

type result struct {
	OK       bool          `json:"ok"`
	Err      string        `json:"err,omitempty"`
	Total    time.Duration `json:"total"`
	PXE      time.Duration `json:"pxe_dhcp"` // DISCOVER → ACK (and 4011)
	TFTP     time.Duration `json:"tftp"`
	IPXE     time.Duration `json:"ipxe_dhcp"`
	Script   time.Duration `json:"script"` // iPXE's script fetches
	Retries  int           `json:"dhcp_retries"`
	Timeouts int           `json:"tftp_timeouts"`
	Bytes    int           `json:"tftp_bytes"`
	Final    string        `json:"-"`
}

func main() {
	var c config
	flag.StringVar(&c.iface, "iface", "", "interface of the simulated clients (required)")
	flag.IntVar(&c.n, "n", 1000, "clients")
	flag.DurationVar(&c.spread, "spread", 10*time.Second, "clients start evenly over this time")
	flag.DurationVar(&c.timeout, "timeout", 120*time.Second, "a client that has no script after this long failed")
	flag.IntVar(&c.blksize, "blksize", 1468, "TFTP block size asked for (EDK2: 1468)")
	flag.IntVar(&c.window, "windowsize", 0, "TFTP windowsize asked for (0: lock-step, as EDK2's default)")
	flag.DurationVar(&c.tftpWait, "tftp-timeout", time.Second, "TFTP retransmission timeout")
	flag.StringVar(&c.name, "name", "", "label of the run in the summary")
	verbose := flag.Bool("v", false, "log each failure")
	flag.Parse()
	if c.iface == "" || c.n < 1 || c.n > 10000 {
		fmt.Fprintln(os.Stderr, "stormclient: -iface required, 1 <= -n <= 10000")
		os.Exit(2)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(context.Background(), c.spread+c.timeout+10*time.Second)
	defer cancel()
	mux, err := newDHCPMux(ctx, c.iface)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stormclient:", err)
		os.Exit(1)
	}
	defer mux.close()

	results := make([]result, c.n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range c.n {
		at := start.Add(time.Duration(int64(c.spread) * int64(i) / int64(c.n)))
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, c.timeout)
			defer ccancel()
			results[i] = bootOne(cctx, c, mux, i)
			if !results[i].OK {
				log.Info("client failed", "i", i, "err", results[i].Err)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	s := summarize(c, results, wall)
	if err := json.NewEncoder(os.Stdout).Encode(s); err != nil {
		fmt.Fprintln(os.Stderr, "stormclient:", err)
		os.Exit(1)
	}
}

// summary is the JSON stormclient prints.
type summary struct {
	Name      string                `json:"name"`
	Clients   int                   `json:"clients"`
	OK        int                   `json:"ok"`
	Failures  int                   `json:"failures"`
	P50       float64               `json:"p50_s"`
	P99       float64               `json:"p99_s"`
	Max       float64               `json:"max_s"`
	Wall      float64               `json:"total_s"` // first DISCOVER to the last client's end
	Phases    map[string][2]float64 `json:"phases_p50_p99_s"`
	Retries   int                   `json:"dhcp_retries"`
	Timeouts  int                   `json:"tftp_timeouts"`
	TFTPBytes int                   `json:"tftp_bytes_per_client"`
	Errors    map[string]int        `json:"errors,omitempty"` // first words of the errors, counted
	Final     string                `json:"final_script_sample,omitempty"`
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d))*p+0.999999) - 1
	return d[max(0, min(i, len(d)-1))].Seconds()
}

func summarize(c config, rs []result, wall time.Duration) summary {
	s := summary{Name: c.name, Clients: len(rs), Wall: wall.Seconds(), Phases: map[string][2]float64{}, Errors: map[string]int{}}
	var tot, pxe, tf, ip, sc []time.Duration
	for _, r := range rs {
		s.Retries += r.Retries
		s.Timeouts += r.Timeouts
		if !r.OK {
			s.Failures++
			k := r.Err
			if len(k) > 110 {
				k = k[:110]
			}
			s.Errors[k]++
			continue
		}
		s.OK++
		s.TFTPBytes = r.Bytes
		s.Final = r.Final
		tot, pxe, tf, ip, sc = append(tot, r.Total), append(pxe, r.PXE), append(tf, r.TFTP), append(ip, r.IPXE), append(sc, r.Script)
	}
	s.P50, s.P99 = pct(tot, .5), pct(tot, .99)
	s.Max = pct(tot, 1)
	for name, d := range map[string][]time.Duration{"pxe_dhcp": pxe, "tftp": tf, "ipxe_dhcp": ip, "script": sc} {
		s.Phases[name] = [2]float64{pct(d, .5), pct(d, .99)}
	}
	return s
}

// hardware is what the simulated machine's SMBIOS says.
type hardware struct {
	mac                                  net.HardwareAddr
	uuid                                 [16]byte
	serial, manufacturer, product, asset string
}

func newHardware(i int) hardware {
	var h hardware
	h.mac = make(net.HardwareAddr, 6)
	rand.Read(h.mac)
	h.mac[0] = 0x02 // locally administered, unicast: a new device every run
	rand.Read(h.uuid[:])
	h.serial = fmt.Sprintf("STORM-%06d-%x", i, h.mac[3:])
	h.manufacturer = "Preboot Storm"
	h.product = "PXE Client (UEFI x64)"
	h.asset = fmt.Sprintf("asset %d", i)
	return h
}

func (h hardware) uuidString() string {
	u := h.uuid
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func bootOne(ctx context.Context, c config, mux *dhcpMux, i int) (r result) {
	hw := newHardware(i)
	st := &clientStats{}
	defer func() { r.Retries, r.Timeouts = st.dhcpRetries+st.naks, st.tftpTimeouts }()
	fail := func(err error) result {
		r.Err = err.Error()
		return r
	}
	start := time.Now()

	// 1. The firmware's PXE.
	uuidOpt := append([]byte{0}, hw.uuid[:]...)
	pxeMods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, byte(iana.EFI_X86_64)}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, uuidOpt),
		dhcpv4.WithGeneric(dhcpv4.OptionMaximumDHCPMessageSize, []byte{0x05, 0xc0}),
		requested(1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135),
	}
	ip, proxy, err := dhcpRound(ctx, c, mux, hw, pxeMods, pxeBackoff, st)
	if err != nil {
		return fail(fmt.Errorf("pxe: %w", err))
	}
	r.PXE = time.Since(start)
	file := bootFile(proxy)
	if file == "" {
		return fail(fmt.Errorf("pxe: the boot offer names no boot file"))
	}
	next := proxy.ServerIPAddr
	if next == nil || next.IsUnspecified() {
		next = proxy.ServerIdentifier()
	}
	t := time.Now()
	prog, err := tftpGet(ctx, ip, next, file, c.blksize, c.window, c.tftpWait, st)
	if err != nil {
		return fail(fmt.Errorf("pxe: %w", err))
	}
	r.TFTP, r.Bytes = time.Since(t), len(prog)

	// 2. iPXE, started from what TFTP brought.
	t = time.Now()
	ipxeMods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003010")),
		dhcpv4.WithUserClass("iPXE", false),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, byte(iana.EFI_X86_64)}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 16}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, uuidOpt),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0x23, 0x01, 0x01, 0x24, 0x01, 0x01, 0x13, 0x01, 0x01, 0x11, 0x01, 0x01}),
		requested(1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203),
	}
	_, proxy, err = dhcpRound(ctx, c, mux, hw, ipxeMods, ipxeBackoff, st)
	if err != nil {
		return fail(fmt.Errorf("ipxe: %w", err))
	}
	r.IPXE = time.Since(t)
	t = time.Now()
	url := bootFile(proxy)
	next = proxy.ServerIPAddr
	if next == nil || next.IsUnspecified() {
		next = proxy.ServerIdentifier()
	}
	client := &http.Client{
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}).DialContext,
			DisableKeepAlives: true, // iPXE opens a connection per request
		},
	}
	var script string
	for hop := 0; ; hop++ {
		if hop > 3 {
			return fail(fmt.Errorf("ipxe: more than 3 chains"))
		}
		if strings.HasPrefix(url, "http://") {
			script, err = httpGet(ctx, client, url)
		} else {
			var b []byte
			b, err = tftpGet(ctx, ip, next, url, c.blksize, c.window, c.tftpWait, st)
			script = string(b)
		}
		if err != nil {
			return fail(fmt.Errorf("ipxe: %w", err))
		}
		if !strings.HasPrefix(script, "#!ipxe") {
			return fail(fmt.Errorf("ipxe: %s is not an iPXE script: %.40q", url, script))
		}
		chain := chainURL(script)
		if chain == "" {
			break
		}
		url = expand(chain, hw)
	}
	r.Script = time.Since(t)
	r.Total = time.Since(start)
	r.OK = true
	r.Final = strings.ReplaceAll(firstLines(script, 3), "\n", " | ")
	return r
}

// ipxeBackoff is iPXE's DHCP retransmission (1 s doubling).
var ipxeBackoff = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}

// dhcpRound is one DHCP exchange of a boot stage: DISCOVER (site offer
// and boot offer), REQUEST/ACK with the site server, and the 4011
// request when the boot offer names no boot file. It returns the leased
// address and the packet naming the boot file.
func dhcpRound(ctx context.Context, c config, mux *dhcpMux, hw hardware, mods []dhcpv4.Modifier, backoff []time.Duration, st *clientStats) (net.IP, *dhcpv4.DHCPv4, error) {
	var o offers
	var ack *dhcpv4.DHCPv4
	for try := 0; ; try++ {
		d, err := dhcpv4.NewDiscovery(hw.mac, append(mods, dhcpv4.WithBroadcast(true))...)
		if err != nil {
			return nil, nil, err
		}
		if o, err = mux.discover(ctx, d, backoff, st); err != nil {
			return nil, nil, err
		}
		ack, err = mux.request(ctx, o.site, mods, st)
		if err == nil {
			break
		}
		// A NAK (the address went to another client meanwhile):
		// start over, as firmware does, a few times.
		if !errors.Is(err, errNAK) || try >= 3 {
			return nil, nil, err
		}
		st.naks++
	}
	ip := ack.YourIPAddr
	proxy := o.proxy
	if bootFile(proxy) == "" {
		var err error
		if proxy, err = bootServerRequest(ctx, c.iface, hw.mac, ip, o.proxy, mods, st); err != nil {
			return nil, nil, err
		}
	}
	return ip, proxy, nil
}

func httpGet(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", "iPXE/1.21.1+ (g988d2)")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

var chainRe = regexp.MustCompile(`(?m)^\s*chain\s+(?:--\S+\s+)*(\S+)`)

// chainURL is the URL of the script's first chain command, or "".
func chainURL(script string) string {
	m := chainRe.FindStringSubmatch(script)
	if m == nil {
		return ""
	}
	return m[1]
}

var varRe = regexp.MustCompile(`\$\{([a-z0-9_]+)(?::([a-z]+))?\}`)

// expand fills in iPXE's settings as iPXE would for this machine.
func expand(s string, hw hardware) string {
	return varRe.ReplaceAllStringFunc(s, func(v string) string {
		m := varRe.FindStringSubmatch(v)
		var val string
		switch m[1] {
		case "mac":
			val = hw.mac.String()
			if m[2] == "hexhyp" {
				val = strings.ReplaceAll(val, ":", "-")
			}
			return val
		case "uuid":
			val = hw.uuidString()
		case "serial":
			val = hw.serial
		case "manufacturer":
			val = hw.manufacturer
		case "product":
			val = hw.product
		case "asset":
			val = hw.asset
		case "buildarch":
			val = "x86_64"
		case "platform":
			val = "efi"
		}
		if m[2] == "uristring" {
			return uriString(val)
		}
		return val
	})
}

// uriString escapes as iPXE's uristring type: everything but RFC 3986's
// unreserved characters (and, as iPXE, "+" is not touched by the server).
func uriString(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// requested is option 55 with these codes, in this order.
func requested(codes ...byte) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionParameterRequestList, codes)
}
