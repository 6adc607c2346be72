package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// dhcpMux is the one socket on UDP 68 every simulated client of the
// namespace shares: servers broadcast their answers to port 68, and
// the mux hands each to the client whose transaction ID it carries.
type dhcpMux struct {
	conn  net.PacketConn
	iface string

	mu      sync.Mutex
	waiters map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

// broadcastControl sets SO_BROADCAST, SO_REUSEADDR and, when iface is
// set, SO_BINDTODEVICE on a socket before it binds.
func broadcastControl(iface string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			// A big receive buffer: a thousand clients' offers arrive in bursts.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
			if iface != "" {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
			}
		})
		return errors.Join(err, serr)
	}
}

func newDHCPMux(ctx context.Context, iface string) (*dhcpMux, error) {
	lc := net.ListenConfig{Control: broadcastControl(iface)}
	conn, err := lc.ListenPacket(ctx, "udp4", ":68")
	if err != nil {
		return nil, fmt.Errorf("listen udp 68: %w", err)
	}
	m := &dhcpMux{conn: conn, iface: iface, waiters: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	go m.read()
	return m, nil
}

func (m *dhcpMux) read() {
	buf := make([]byte, 2048)
	for {
		n, _, err := m.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || p.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		m.mu.Lock()
		ch := m.waiters[p.TransactionID]
		m.mu.Unlock()
		if ch != nil {
			select {
			case ch <- p:
			default:
			}
		}
	}
}

func (m *dhcpMux) register(xid dhcpv4.TransactionID) chan *dhcpv4.DHCPv4 {
	ch := make(chan *dhcpv4.DHCPv4, 32)
	m.mu.Lock()
	m.waiters[xid] = ch
	m.mu.Unlock()
	return ch
}

func (m *dhcpMux) unregister(xid dhcpv4.TransactionID) {
	m.mu.Lock()
	delete(m.waiters, xid)
	m.mu.Unlock()
}

func (m *dhcpMux) broadcast(p *dhcpv4.DHCPv4) error {
	_, err := m.conn.WriteTo(p.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67})
	return err
}

func (m *dhcpMux) close() { m.conn.Close() }

// offers are what one DISCOVER collected: the site server's address
// offer and the PXE (proxy) offer.
type offers struct {
	site  *dhcpv4.DHCPv4 // yiaddr set
	proxy *dhcpv4.DHCPv4 // option 60 PXEClient, no address
	// both: a DHCP server that also gives the boot file (Preboot's
	// embedded server, dnsmasq with PXE on) answers in one packet.
}

func isPXEOffer(p *dhcpv4.DHCPv4) bool {
	vc := p.ClassIdentifier()
	return len(vc) >= 9 && vc[:9] == "PXEClient"
}

// bootFile is the boot program an offer names (file field or option 67).
func bootFile(p *dhcpv4.DHCPv4) string {
	if p == nil {
		return ""
	}
	if f := p.BootFileNameOption(); f != "" {
		return f
	}
	return p.BootFileName
}

// retransmit intervals, as PXE firmware (EDK2: 4, 8, 16, 32 s) and iPXE
// (1, 2, 4, 8, ... s) back off; bounded by the client's context.
var pxeBackoff = []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second}

// discover broadcasts DISCOVERs until it holds an address offer and a
// boot offer (the same packet or two), resending on backoff.
func (m *dhcpMux) discover(ctx context.Context, d *dhcpv4.DHCPv4, backoff []time.Duration, stats *clientStats) (offers, error) {
	ch := m.register(d.TransactionID)
	defer m.unregister(d.TransactionID)
	var o offers
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			stats.dhcpRetries++
		}
		if err := m.broadcast(d); err != nil {
			return o, fmt.Errorf("send DISCOVER: %w", err)
		}
		wait := backoff[min(attempt, len(backoff)-1)]
		timer := time.NewTimer(wait)
	collect:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return o, fmt.Errorf("DISCOVER: site offer %v, boot offer %v: %w", o.site != nil, o.proxy != nil, ctx.Err())
			case <-timer.C:
				break collect
			case p := <-ch:
				if p.MessageType() != dhcpv4.MessageTypeOffer {
					continue
				}
				if !p.YourIPAddr.IsUnspecified() && p.YourIPAddr != nil && o.site == nil {
					o.site = p
				}
				if isPXEOffer(p) && o.proxy == nil {
					o.proxy = p
				}
				if o.site != nil && o.proxy != nil {
					timer.Stop()
					return o, nil
				}
			}
		}
		if attempt+1 >= len(backoff) {
			return o, fmt.Errorf("DISCOVER: no answer after %d tries (site offer %v, boot offer %v)", attempt+1, o.site != nil, o.proxy != nil)
		}
	}
}

// request takes the site server's offer (REQUEST, ACK).
func (m *dhcpMux) request(ctx context.Context, offer *dhcpv4.DHCPv4, mods []dhcpv4.Modifier, stats *clientStats) (*dhcpv4.DHCPv4, error) {
	req, err := dhcpv4.NewRequestFromOffer(offer, append(mods, dhcpv4.WithBroadcast(true))...)
	if err != nil {
		return nil, err
	}
	ch := m.register(req.TransactionID)
	defer m.unregister(req.TransactionID)
	for attempt := range 4 {
		if attempt > 0 {
			stats.dhcpRetries++
		}
		if err := m.broadcast(req); err != nil {
			return nil, fmt.Errorf("send REQUEST: %w", err)
		}
		timer := time.NewTimer(time.Duration(2<<attempt) * time.Second)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil, fmt.Errorf("REQUEST: %w", ctx.Err())
			case <-timer.C:
				break wait
			case p := <-ch:
				switch p.MessageType() {
				case dhcpv4.MessageTypeAck:
					timer.Stop()
					return p, nil
				case dhcpv4.MessageTypeNak:
					timer.Stop()
					return nil, fmt.Errorf("REQUEST: %w from %v: %s", errNAK, p.ServerIdentifier(), p.Message())
				}
			}
		}
	}
	return nil, errors.New("REQUEST: no ACK after 4 tries")
}

// errNAK: the server refused the address it offered.
var errNAK = errors.New("NAK")

// PXE option 43 sub-options.
const (
	pxeBootServers = 8
	pxeBootMenu    = 9
	pxeBootItem    = 71
)

// bootServerRequest asks the proxy on UDP 4011 for the boot file (PXE
// boot server discovery), from ip:4011 as EDK2 does, for the first boot
// item of the offer's menu.
func bootServerRequest(ctx context.Context, iface string, mac net.HardwareAddr, ip net.IP, proxy *dhcpv4.DHCPv4, mods []dhcpv4.Modifier, stats *clientStats) (*dhcpv4.DHCPv4, error) {
	server := proxy.ServerIdentifier()
	if server == nil || server.IsUnspecified() {
		server = proxy.ServerIPAddr
	}
	// An offer without option 43 (dnsmasq's answer to UEFI clients with
	// one boot service) gets a plain REQUEST; with a menu, the request
	// names its first item (option 43 sub-option 71), as EDK2 does.
	var item []byte
	sub := proxy.Options.Get(dhcpv4.OptionVendorSpecificInformation)
	if sub != nil {
		item = []byte{0, 0}
		for i := 0; i+1 < len(sub); {
			code, l := sub[i], int(sub[i+1])
			if code == 255 || i+2+l > len(sub) {
				break
			}
			if code == pxeBootMenu && l >= 2 {
				item = sub[i+2 : i+4]
			}
			i += 2 + l
		}
	}
	base := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(ip), dhcpv4.WithHwAddr(mac)}
	if item != nil {
		base = append(base, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{pxeBootItem, 4, item[0], item[1], 0, 0, 255}))
	}
	req, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: broadcastControl(iface)}
	conn, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort(ip.String(), "4011"))
	if err != nil {
		return nil, fmt.Errorf("4011: listen: %w", err)
	}
	defer conn.Close()
	buf := make([]byte, 2048)
	for attempt := range 4 {
		if attempt > 0 {
			stats.dhcpRetries++
		}
		if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: server, Port: 4011}); err != nil {
			return nil, fmt.Errorf("4011: send: %w", err)
		}
		deadline := time.Now().Add(time.Duration(1<<attempt) * time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		conn.SetReadDeadline(deadline)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("4011: %w", ctx.Err())
				}
				break
			}
			p, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && p.TransactionID == req.TransactionID && p.MessageType() == dhcpv4.MessageTypeAck {
				return p, nil
			}
		}
	}
	return nil, fmt.Errorf("4011: no ACK from %v after 4 tries (boot item %x, offer's option 43 %x)", server, item, proxy.Options.Get(dhcpv4.OptionVendorSpecificInformation))
}
