package nslab

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The nftables table the impairments live in, one per receiver namespace:
// a filter chain on the prerouting hook at priority -300 (before conntrack
// and everything else), so dropped packets never reach a socket.
const (
	nftTable = "nslab"
	nftChain = "pre"
)

// AddLoss drops permille/1000 of the packets sent to 239.0.0.0/8 (the
// multicast data groups: Preboot's 239.255.0.0/16, udpcast's with
// --mcast-data-address 239.x) that receiver i receives, at random
// (nftables `numgen random mod 1000 < permille drop`; measured 2.89 % for
// 30). Rules add up: call ResetReceiver to remove them.
func (l *Lab) AddLoss(i, permille int) error {
	if permille < 0 || permille > 1000 {
		return fmt.Errorf("loss %d‰: want 0..1000", permille)
	}
	return l.nftRule(i, fmt.Sprintf("ip daddr 239.0.0.0/8 numgen random mod 1000 < %d counter drop", permille))
}

// DropMulticast drops every multicast packet (224.0.0.0/4, IGMP queries
// included) receiver i receives, like a switch that blocks multicast. What
// the receiver sends is untouched.
func (l *Lab) DropMulticast(i int) error {
	return l.nftRule(i, "ip daddr 224.0.0.0/4 counter drop")
}

// Dropped is the number of packets receiver i's impairment rules dropped
// so far (the sum of their counters; 0 without rules).
func (l *Lab) Dropped(i int) (int64, error) {
	r, err := l.receiver(i)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := run(ctx, "ip", "netns", "exec", r.NS, "nft", "list", "chain", "ip", nftTable, nftChain)
	if err != nil {
		if strings.Contains(out, "No such file") {
			return 0, nil
		}
		return 0, err
	}
	var n int64
	f := strings.Fields(out)
	for k := 0; k+3 < len(f); k++ {
		if f[k] == "counter" && f[k+1] == "packets" {
			v, err := strconv.ParseInt(f[k+2], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("nft counter %q: %w", f[k+2], err)
			}
			n += v
		}
	}
	return n, nil
}

// nftRule adds rule to receiver i's prerouting chain, creating the table
// and chain the first time.
func (l *Lab) nftRule(i int, rule string) error {
	r, err := l.receiver(i)
	if err != nil {
		return err
	}
	script := fmt.Sprintf("add table ip %[1]s\nadd chain ip %[1]s %[2]s { type filter hook prerouting priority -300; policy accept; }\nadd rule ip %[1]s %[2]s %[3]s\n",
		nftTable, nftChain, rule)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", r.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s (%s): %w: %s", r.NS, rule, err, strings.TrimSpace(string(out)))
	}
	l.logf("nslab %s: receiver %d: nft %s", l.ID, i, rule)
	return nil
}

// ShapeReceiver limits what reaches receiver i to rate (tc syntax, e.g.
// "5mbit"): tbf on the egress of its bridge port, as a slow NIC or a
// congested access port would. Packets beyond the queue (50 ms) are
// dropped, multicast included.
func (l *Lab) ShapeReceiver(i int, rate string) error {
	r, err := l.receiver(i)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.tbf(ctx, l.SwitchNS, r.Port, rate); err != nil {
		return err
	}
	l.logf("nslab %s: receiver %d: bridge port %s shaped to %s", l.ID, i, r.Port, rate)
	return nil
}

// ShapeReceiverFraction shapes receiver i's bridge port to a fraction of
// the server link's rate (1/4: a quarter). It fails on an unshaped lab.
func (l *Lab) ShapeReceiverFraction(i int, fraction float64) error {
	bps, err := ParseRate(l.Rate)
	if err != nil {
		return err
	}
	if fraction <= 0 {
		return fmt.Errorf("fraction %v: want > 0", fraction)
	}
	return l.ShapeReceiver(i, strconv.FormatInt(int64(float64(bps)*fraction/1000), 10)+"kbit")
}

// ResetReceiver removes receiver i's impairments: the nftables table and
// the shaping of its bridge port.
func (l *Lab) ResetReceiver(i int) error {
	r, err := l.receiver(i)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := run(ctx, "ip", "netns", "exec", r.NS, "nft", "delete", "table", "ip", nftTable); err != nil &&
		!strings.Contains(out, "No such file") {
		return err
	}
	if out, err := run(ctx, "ip", "netns", "exec", l.SwitchNS, "tc", "qdisc", "del", "dev", r.Port, "root"); err != nil &&
		!strings.Contains(out, "No such file") && !strings.Contains(out, "Cannot delete qdisc with handle of zero") &&
		!strings.Contains(out, "Cannot find specified qdisc") {
		return err
	}
	return nil
}

// ResetAll is ResetReceiver for every receiver.
func (l *Lab) ResetAll() error {
	for i := range l.Receivers {
		if err := l.ResetReceiver(i); err != nil {
			return err
		}
	}
	return nil
}

// ParseRate parses a tc rate ("20mbit", "500kbit", "1gbit", "64000bit",
// plain bits/s) into bits per second.
func ParseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSuffix(t, u.suf), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("rate %q: want a tc rate such as 20mbit", s)
	}
	return int64(v * float64(mult)), nil
}

// Counter reads one statistic of interface dev in namespace ns from
// /sys/class/net/DEV/statistics/STAT inside the namespace (ip netns exec
// mounts the namespace's own sysfs): tx_bytes, rx_bytes, tx_packets,
// rx_packets, rx_dropped…
func (l *Lab) Counter(ns, dev, stat string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := run(ctx, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+dev+"/statistics/"+stat)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %s %s: %w", ns, dev, stat, err)
	}
	return v, nil
}

// TxBytes is the bytes the server's eth0 has sent (link level: Ethernet,
// IP and UDP/TCP headers included; what tbf dropped is not counted).
func (l *Lab) TxBytes() (int64, error) { return l.Counter(l.ServerNS, Iface, "tx_bytes") }

// RxBytes is the bytes receiver i's eth0 has received.
func (l *Lab) RxBytes(i int) (int64, error) {
	r, err := l.receiver(i)
	if err != nil {
		return 0, err
	}
	return l.Counter(r.NS, Iface, "rx_bytes")
}

// MDB is the bridge's multicast database (`bridge mdb show`): which port
// joined which group.
func (l *Lab) MDB() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return run(ctx, "ip", "netns", "exec", l.SwitchNS, "bridge", "mdb", "show")
}
