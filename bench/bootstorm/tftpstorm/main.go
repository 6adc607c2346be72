// Command tftpstorm isolates the TFTP part of the boot storm: -serve runs Preboot's TFTP server
// (tftp.Server) on a loopback address with a pprof endpoint; without it, it runs N lock-step
// clients (as bench/bootstorm's, EDK2-like: blksize 1468, tsize) against a TFTP server, arrivals
// spread over SPREAD, and prints the transfer times and the per-block round trips the clients
// saw (ACK sent to next DATA received). Bounded: N <= 2000, every transfer has a deadline.
//
//	go run ./bench/bootstorm/tftpstorm -serve -addr 127.0.0.1:6969 -root DIR -pprof 127.0.0.1:6060
//	go run ./bench/bootstorm/tftpstorm -addr 127.0.0.1:6969 -file ipxe.efi -n 300 -spread 3s
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/preboot/preboot/tftp"
)

func main() {
	serve := flag.Bool("serve", false, "run the server instead of the clients")
	addr := flag.String("addr", "127.0.0.1:6969", "server address")
	root := flag.String("root", "", "directory served (-serve)")
	pprofAddr := flag.String("pprof", "", "pprof HTTP address (-serve), loopback only")
	file := flag.String("file", "ipxe.efi", "file the clients download")
	n := flag.Int("n", 300, "clients (at most 2000)")
	spread := flag.Duration("spread", 3*time.Second, "arrivals spread over this time")
	blksize := flag.Int("blksize", 1468, "blksize asked for")
	timeout := flag.Duration("timeout", time.Second, "client retransmission timeout")
	limit := flag.Duration("limit", 120*time.Second, "deadline of the whole run")
	src := flag.String("src", "127.1.0.1", "first client source address; client i binds it + i (one address per client, as on a segment: the server caps transfers per address)")
	flag.Parse()
	if *serve {
		if err := runServer(*addr, *root, *pprofAddr); err != nil {
			fmt.Fprintln(os.Stderr, "tftpstorm:", err)
			os.Exit(1)
		}
		return
	}
	if *n < 1 || *n > 2000 {
		fmt.Fprintln(os.Stderr, "tftpstorm: 1 <= -n <= 2000")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	first, err := netip.ParseAddr(*src)
	if err != nil || !first.Is4() {
		fmt.Fprintln(os.Stderr, "tftpstorm: -src: an IPv4 address")
		os.Exit(2)
	}
	runClients(ctx, *addr, first, *file, *n, *spread, *blksize, *timeout)
}

func runServer(addr, root, pprofAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if pprofAddr != "" {
		ln, err := net.Listen("tcp", pprofAddr)
		if err != nil {
			return fmt.Errorf("pprof listen: %w", err)
		}
		if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			ln.Close()
			return fmt.Errorf("pprof address %s is not loopback", pprofAddr)
		}
		go func() { _ = http.Serve(ln, nil) }()
	}
	s := &tftp.Server{Root: root, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	return s.ListenAndServe(ctx, addr)
}

type result struct {
	d    time.Duration
	rtts []time.Duration
	err  error
}

func runClients(ctx context.Context, addr string, first netip.Addr, file string, n int, spread time.Duration, blksize int, timeout time.Duration) {
	srv, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tftpstorm:", err)
		os.Exit(1)
	}
	res := make([]result, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(int64(spread) * int64(i) / int64(n)))
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			a := first.As4()
			v := binary.BigEndian.Uint32(a[:]) + uint32(i)
			local := net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
			rtts, err := get(ctx, local, srv, file, blksize, timeout)
			res[i] = result{time.Since(t0), rtts, err}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	var ds, rt []time.Duration
	fails := 0
	for _, r := range res {
		if r.err != nil {
			fails++
			continue
		}
		ds = append(ds, r.d)
		rt = append(rt, r.rtts...)
	}
	slices.Sort(ds)
	slices.Sort(rt)
	fmt.Printf("clients %d failures %d total %.2fs | transfer p50 %.3fs p99 %.3fs max %.3fs | block RTT p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms (%d)\n",
		n, fails, total.Seconds(), q(ds, .5).Seconds(), q(ds, .99).Seconds(), q(ds, 1).Seconds(),
		ms(q(rt, .5)), ms(q(rt, .9)), ms(q(rt, .99)), ms(q(rt, 1)), len(rt))
	for _, r := range res {
		if r.err != nil {
			fmt.Println("error:", r.err)
			break
		}
	}
}

func q(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// get downloads file lock-step and returns the round trip of every block.
func get(ctx context.Context, local net.IP, srv *net.UDPAddr, file string, blksize int, timeout time.Duration) ([]time.Duration, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: local})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rrq := binary.BigEndian.AppendUint16(nil, 1)
	for _, s := range []string{file, "octet", "blksize", strconv.Itoa(blksize), "tsize", "0"} {
		rrq = append(append(rrq, s...), 0)
	}
	last, to := rrq, srv
	if _, err := conn.WriteToUDP(rrq, srv); err != nil {
		return nil, err
	}
	sentAt := time.Now()
	var peer *net.UDPAddr
	var rtts []time.Duration
	size, next, tries := 512, uint16(1), 0
	buf := make([]byte, 65536)
	send := func(b []byte) error {
		last, to = b, peer
		sentAt = time.Now()
		_, err := conn.WriteToUDP(b, peer)
		return err
	}
	for {
		dl := time.Now().Add(timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(dl) {
			dl = d
		}
		_ = conn.SetReadDeadline(dl)
		m, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if tries++; tries > 6 {
					return nil, fmt.Errorf("block %d: no answer", next)
				}
				_, _ = conn.WriteToUDP(last, to)
				continue
			}
			return nil, err
		}
		if m < 4 || (peer != nil && !from.IP.Equal(peer.IP)) || (peer != nil && from.Port != peer.Port) {
			continue
		}
		switch binary.BigEndian.Uint16(buf) {
		case 5:
			return nil, fmt.Errorf("error %d: %s", binary.BigEndian.Uint16(buf[2:]), buf[4:m])
		case 6:
			if peer != nil {
				continue
			}
			peer = from
			size = blksize
			tries = 0
			if err := send([]byte{0, 4, 0, 0}); err != nil {
				return nil, err
			}
		case 3:
			if peer == nil {
				peer = from
			}
			block := binary.BigEndian.Uint16(buf[2:])
			if block != next {
				_ = send([]byte{0, 4, byte((next - 1) >> 8), byte(next - 1)})
				continue
			}
			if tries == 0 && next > 1 {
				rtts = append(rtts, time.Since(sentAt))
			}
			tries = 0
			next++
			if err := send([]byte{0, 4, byte(block >> 8), byte(block)}); err != nil {
				return nil, err
			}
			if m-4 < size {
				return rtts, nil
			}
		}
	}
}
