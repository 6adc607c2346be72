package mcast

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
)

// wireOverhead is what a packet costs on an Ethernet link beyond its UDP
// payload: IPv4 (20) and UDP (8) headers, Ethernet header and FCS (18).
// The pacer counts it so that the configured rate is the link's.
const wireOverhead = 46

// conn sends packets to multicast groups out of one interface.
type conn struct {
	pc   *ipv4.PacketConn
	ifi  *net.Interface
	src  netip.Addr
	msgs []ipv4.Message
}

// openConn opens a UDP socket bound to the interface's IPv4 address that
// sends multicast out of that interface with the given TTL.
func openConn(ifname string, ttl int, loop bool) (*conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("multicast interface %q: %w", ifname, err)
	}
	if ifi.Flags&net.FlagMulticast == 0 {
		return nil, fmt.Errorf("multicast interface %s: the interface does not do multicast (ip link set %s multicast on)", ifname, ifname)
	}
	src, err := ifaceIPv4(ifi)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenPacket("udp4", netip.AddrPortFrom(src, 0).String())
	if err != nil {
		return nil, fmt.Errorf("multicast socket on %s: %w", src, err)
	}
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetWriteBuffer(4 << 20)
	}
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetMulticastInterface(ifi); err != nil {
		c.Close()
		return nil, fmt.Errorf("multicast interface %s: %w", ifname, err)
	}
	if err := pc.SetMulticastTTL(ttl); err != nil {
		c.Close()
		return nil, fmt.Errorf("multicast TTL: %w", err)
	}
	if err := pc.SetMulticastLoopback(loop); err != nil {
		c.Close()
		return nil, fmt.Errorf("multicast loopback: %w", err)
	}
	return &conn{pc: pc, ifi: ifi, src: src}, nil
}

// ifaceIPv4 returns the first IPv4 address of ifi.
func ifaceIPv4(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", ifi.Name)
}

// send writes packets to dst in one or a few system calls.
func (c *conn) send(pkts [][]byte, dst *net.UDPAddr) error {
	c.msgs = c.msgs[:0]
	for _, p := range pkts {
		c.msgs = append(c.msgs, ipv4.Message{Buffers: [][]byte{p}, Addr: dst})
	}
	for len(c.msgs) > 0 {
		n, err := c.pc.WriteBatch(c.msgs, 0)
		if err != nil {
			return fmt.Errorf("send to %s: %w", dst, err)
		}
		c.msgs = c.msgs[n:]
	}
	return nil
}

func (c *conn) close() error { return c.pc.Close() }

// pacer is a token bucket: it lets bytes out at rate bytes/s with bursts
// of at most burst bytes. An unpaced sender loses a third of its packets
// at the first slower link; a paced one loses none.
type pacer struct {
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newPacer(bitsPerSecond int64, burst int) *pacer {
	return &pacer{rate: float64(bitsPerSecond) / 8, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// wait blocks until n bytes may go out, then takes them.
func (p *pacer) wait(ctx context.Context, n int) error {
	for {
		now := time.Now()
		p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
		p.last = now
		if p.tokens >= float64(n) {
			p.tokens -= float64(n)
			return nil
		}
		d := time.Duration((float64(n) - p.tokens) / p.rate * float64(time.Second))
		t := time.NewTimer(max(d, 50*time.Microsecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// setRate changes the rate (bits/s) from now on.
func (p *pacer) setRate(bitsPerSecond int64) { p.rate = float64(bitsPerSecond) / 8 }
