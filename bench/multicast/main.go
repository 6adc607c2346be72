// Command multicast is the mass-deployment benchmark of issue 10: one
// synthetic disk image restored onto N receivers at once in the namespace
// lab of e2e/nslab (bridge with IGMP snooping and a querier, the server's
// link shaped by tbf), side by side in one run:
//
//   - udpcast: Debian's udp-sender/udp-receiver as FOG runs them
//     (--min-receivers N --max-bitrate RATE --nopointopoint, the receiver
//     piped into zstd -d), sending the zstd-compressed image file;
//   - unicast: N parallel `curl URL | zstd -d` of the same file from a
//     plain Go file server in the server namespace;
//   - preboot-http: `preboot agent restore` over HTTP, one download each;
//   - preboot-mcast: `preboot agent restore --multicast` against
//     `preboot serve --multicast-interface eth0 --multicast-rate RATE`;
//   - preboot-peers: `preboot agent restore --peers`.
//
// The Preboot columns are skipped, with a note, when the binary has no
// --multicast/--peers flag. Every output is compared with the source
// (Preboot's outputs except the 4 KiB image-safe block a restore writes);
// a mismatch, an error or a timeout counts as a failed receiver.
//
//	sudo bench/multicast/run.sh                 # builds, runs, writes docs/benchmarks-multicast.md
//	go build -o /tmp/mcbench ./bench/multicast && sudo /tmp/mcbench -h
//
// It is a benchmark, not a test: it needs root, iproute2, nftables,
// udpcast, zstd, curl and e2fsprogs, sends traffic only inside the
// namespaces it creates (preboot-bench-mc-*), stops every process it
// started by PID and removes the namespaces when it ends.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/preboot/preboot/e2e/nslab"
)

// Tool names, in table order.
const (
	toolUDPCast      = "udpcast"
	toolUnicast      = "unicast"
	toolPrebootHTTP  = "preboot-http"
	toolPrebootMcast = "preboot-mcast"
	toolPrebootPeers = "preboot-peers"
)

var allTools = []string{toolUDPCast, toolUnicast, toolPrebootHTTP, toolPrebootMcast, toolPrebootPeers}

// scenario is one row group of the table: N receivers and what is done to
// them.
type scenario struct {
	Name  string
	N     int
	Loss  int  // permille of multicast data lost at every receiver
	Slow  bool // the last receiver's port shaped to a quarter of the link
	Late  bool // the last receiver starts at 50 % of the others' time
	Block bool // every receiver drops all multicast
	Tools []string
	About string
}

func scenarios() []scenario {
	every := []string{toolUDPCast, toolUnicast, toolPrebootHTTP, toolPrebootMcast}
	return []scenario{
		{Name: "clean-1", N: 1, Tools: every, About: "one receiver"},
		{Name: "clean-8", N: 8, Tools: every, About: "8 receivers"},
		{Name: "clean-32", N: 32, Tools: every, About: "32 receivers"},
		{Name: "loss3-8", N: 8, Loss: 30, Tools: every, About: "3 % random loss of multicast data (239.0.0.0/8) at every receiver"},
		{Name: "slow-8", N: 8, Slow: true, Tools: every, About: "one receiver's port shaped to a quarter of the link"},
		{Name: "late-8", N: 8, Late: true, Tools: every, About: "one receiver starts at 50 % of the others' clean-8 time"},
		{Name: "blocked-8", N: 8, Block: true, Tools: []string{toolUnicast, toolPrebootHTTP, toolPrebootMcast, toolPrebootPeers},
			About: "every receiver drops all multicast (udpcast cannot run)"},
	}
}

type config struct {
	prebootBin   string
	prebootLabel string
	work         string
	keep         bool
	rate         string // server link, tc syntax
	senderRate   string // udp-sender --max-bitrate / preboot --multicast-rate
	dataBytes    int64
	seed         uint64
	rounds       int
	scenarios    []string
	tools        []string
	mdOut        string
	runTimeout   time.Duration
	compression  int
}

func main() {
	var c config
	var scen, tools, data string
	flag.StringVar(&c.prebootBin, "preboot", "", "preboot binary (static build); empty = skip the Preboot columns")
	flag.StringVar(&c.prebootLabel, "preboot-label", "", "how the report names that binary's source, e.g. a commit")
	flag.StringVar(&c.work, "work", "", "work directory (default: a new directory under /dev/shm, removed at the end)")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (logs, outputs)")
	flag.StringVar(&c.rate, "rate", "20mbit", "server link rate (tc tbf)")
	flag.StringVar(&c.senderRate, "sender-rate", "18m", "sender cap: udp-sender --max-bitrate and preboot --multicast-rate")
	flag.StringVar(&data, "data", "16MiB", "bytes of file content in the synthetic image (KiB, MiB suffixes)")
	flag.Uint64Var(&c.seed, "seed", 1, "seed of the synthetic image")
	flag.IntVar(&c.rounds, "rounds", 1, "rounds of the whole matrix (the table shows medians)")
	flag.StringVar(&scen, "scenarios", "", "comma-separated scenarios (default: all): "+strings.Join(scenarioNames(), ","))
	flag.StringVar(&tools, "tools", "", "comma-separated tools (default: all): "+strings.Join(allTools, ","))
	flag.StringVar(&c.mdOut, "md", "", "also write the markdown report to this file")
	flag.DurationVar(&c.runTimeout, "run-timeout", 0, "deadline of one run (default: 60 s + 3 × N × image / link rate)")
	flag.IntVar(&c.compression, "zstd-level", 3, "zstd level of the udpcast/unicast payload (Preboot's default is 3)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags]\n       %s fileserve -dir DIR -listen ADDR\n", os.Args[0], os.Args[0])
		flag.PrintDefaults()
	}
	if len(os.Args) > 1 && os.Args[1] == "fileserve" {
		os.Exit(fileserve(os.Args[2:]))
	}
	flag.Parse()
	var err error
	if c.dataBytes, err = parseSize(data); err != nil {
		fatal(err)
	}
	c.scenarios = splitList(scen)
	c.tools = splitList(tools)
	for _, s := range c.scenarios {
		if !slices.Contains(scenarioNames(), s) {
			fatal(fmt.Errorf("unknown scenario %q", s))
		}
	}
	for _, t := range c.tools {
		if !slices.Contains(allTools, t) {
			fatal(fmt.Errorf("unknown tool %q", t))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "multicast bench:", err)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func scenarioNames() []string {
	var n []string
	for _, s := range scenarios() {
		n = append(n, s.Name)
	}
	return n
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// fileserve is the unicast baseline's HTTP server: files of a directory,
// nothing else (Go's http.FileServer: sendfile, no compression).
func fileserve(args []string) int {
	fs := flag.NewFlagSet("fileserve", flag.ExitOnError)
	dir := fs.String("dir", ".", "directory to serve")
	listen := fs.String("listen", ":8000", "address")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fileserve:", err)
		return 1
	}
	fmt.Println("fileserve listening on", ln.Addr())
	srv := &http.Server{Handler: http.FileServer(http.Dir(*dir)), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "fileserve:", err)
		return 1
	}
	return 0
}

// checkTools says which command is missing for the benchmark.
func checkTools() error {
	if err := nslab.Available(); err != nil {
		return err
	}
	for _, t := range []string{"udp-sender", "udp-receiver", "zstd", "curl", "mkfs.ext4", "bash"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("missing %s (Debian: apt-get install udpcast zstd curl e2fsprogs): %w", t, err)
		}
	}
	return nil
}
