package wake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Device is what the server knows of where a device is.
type Device struct {
	MAC       string
	IP        string // last known address ("" = unknown)
	Interface string // server interface that last saw its DHCP requests ("" = unknown)
}

// How a target was chosen.
const (
	HowInterface = "interface" // the interface that last saw the device
	HowAddress   = "address"   // the interface on the subnet of the device's address
	HowRouted    = "routed"    // a configured routed subnet holds the device's address
	HowFallback  = "fallback"  // nothing known: every (configured) interface
)

// Target is where one magic packet goes.
type Target struct {
	// Interface the packet leaves through ("" = routed by the kernel).
	Interface string `json:"interface,omitempty"`
	// Addr is the directed broadcast address, Port the UDP port.
	Addr netip.Addr `json:"addr"`
	Port int        `json:"port"`
	// Source is the server's address the packet is sent from (invalid
	// for routed targets).
	Source netip.Addr `json:"-"`
	How    string     `json:"how"`
	Why    string     `json:"why"`
	// Relay is the URL of the relay server that sent it (How "relay").
	Relay string `json:"relay,omitempty"`
	// Error is why sending failed ("" = sent).
	Error string `json:"error,omitempty"`
}

func (t Target) String() string {
	if t.How == HowRelay {
		return "relay " + t.Relay
	}
	s := net.JoinHostPort(t.Addr.String(), strconv.Itoa(t.Port))
	if t.Interface != "" {
		s += " on " + t.Interface
	}
	return s
}

// Sender sends magic packets. Its zero value sends to port 9, falls back to
// every interface and knows no routed subnet.
type Sender struct {
	// Port is the UDP port (0: 9).
	Port int
	// Interfaces limit the fallback (nothing known of the device) to
	// these interfaces (empty: every interface that is up, is not a
	// loopback and has an IPv4 address; a loopback interface counts
	// only when listed).
	Interfaces []string
	// Subnets are routed subnets (e.g. proxyDHCP's subnets behind DHCP
	// relays): a device whose address is in one and on no subnet of
	// this server is woken by the subnet's directed broadcast, which the
	// routers on the way must forward.
	Subnets []netip.Prefix
	// Relays send the packets of devices on their subnets (checked after
	// this server's own subnets, before Subnets).
	Relays  []Relay
	Metrics *Metrics
	Logger  *slog.Logger
}

func (s *Sender) port() int {
	if s.Port == 0 {
		return Port
	}
	return s.Port
}

func (s *Sender) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// localIface is an interface of this machine with its IPv4 subnets.
type localIface struct {
	name     string
	up       bool
	loopback bool
	nets     []netip.Prefix // address/length, not masked
}

func interfaces() ([]localIface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []localIface
	for _, ifi := range ifs {
		li := localIface{name: ifi.Name, up: ifi.Flags&net.FlagUp != 0, loopback: ifi.Flags&net.FlagLoopback != 0}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok || n.IP.To4() == nil {
				continue
			}
			ip, _ := netip.AddrFromSlice(n.IP.To4())
			ones, _ := n.Mask.Size()
			li.nets = append(li.nets, netip.PrefixFrom(ip, ones))
		}
		out = append(out, li)
	}
	return out, nil
}

// Broadcast returns the directed broadcast address of an IPv4 subnet
// (255.255.255.255 for /31 and /32, which have none).
func Broadcast(p netip.Prefix) netip.Addr {
	if p.Bits() >= 31 {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Targets says where the magic packet of d goes: the subnet of the
// interface that last saw it, else the interface on the subnet of its
// address, else a configured routed subnet holding its address, else
// every interface (or the configured ones).
func (s *Sender) Targets(d Device) ([]Target, error) {
	ifs, err := interfaces()
	if err != nil {
		return nil, err
	}
	ip, _ := netip.ParseAddr(d.IP)
	if !ip.Is4() {
		ip = netip.Addr{}
	}
	usable := func(li localIface) bool { return li.up && !li.loopback && len(li.nets) > 0 }
	target := func(li localIface, n netip.Prefix, how, why string) Target {
		return Target{Interface: li.name, Addr: Broadcast(n), Port: s.port(), Source: n.Addr(), How: how, Why: why}
	}
	if d.Interface != "" {
		for _, li := range ifs {
			if li.name != d.Interface || !usable(li) {
				continue
			}
			n := li.nets[0]
			for _, c := range li.nets {
				if ip.IsValid() && c.Masked().Contains(ip) {
					n = c
					break
				}
			}
			return []Target{target(li, n, HowInterface, "interface "+li.name+" last saw the device")}, nil
		}
	}
	if ip.IsValid() {
		for _, li := range ifs {
			if !usable(li) {
				continue
			}
			for _, n := range li.nets {
				if n.Masked().Contains(ip) {
					return []Target{target(li, n, HowAddress, "the device's address "+ip.String()+" is on "+li.name+"'s subnet "+n.Masked().String())}, nil
				}
			}
		}
		for _, r := range s.Relays {
			if r.Subnet.Contains(ip) {
				return []Target{{Addr: Broadcast(r.Subnet), Port: s.port(), How: HowRelay, Relay: r.URL,
					Why: "the device's address " + ip.String() + " is in " + r.Subnet.String() + ", relayed by " + r.URL}}, nil
			}
		}
		for _, p := range s.Subnets {
			if p.Contains(ip) {
				return []Target{{Addr: Broadcast(p), Port: s.port(), How: HowRouted,
					Why: "the device's address " + ip.String() + " is in the routed subnet " + p.String() + " (its router must forward directed broadcasts)"}}, nil
			}
		}
	}
	var out []Target
	for _, li := range ifs {
		listed := contains(s.Interfaces, li.name)
		// A loopback interface only when configured by name (tests).
		ok := li.up && len(li.nets) > 0 && (!li.loopback || listed)
		if !ok || (len(s.Interfaces) > 0 && !listed) {
			continue
		}
		for _, n := range li.nets {
			out = append(out, target(li, n, HowFallback, "no interface or subnet known for the device: every interface"))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no interface to send the magic packet from (none up with an IPv4 address)")
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Send sends the magic packet of mac to every target and returns them
// with the errors of those that failed; the error is non-nil when none
// was sent.
func (s *Sender) Send(ctx context.Context, mac string, targets []Target) ([]Target, error) {
	return s.send(ctx, Device{MAC: mac}, targets)
}

func (s *Sender) send(ctx context.Context, d Device, targets []Target) ([]Target, error) {
	mac := d.MAC
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("wake %s: %w", mac, err)
	}
	pkt, err := MagicPacket(hw)
	if err != nil {
		return nil, fmt.Errorf("wake %s: %w", mac, err)
	}
	sent := 0
	var errs []error
	for i := range targets {
		t := &targets[i]
		var err error
		if t.How == HowRelay {
			err = s.sendRelayed(ctx, d, t)
		} else {
			err = sendOne(ctx, *t, pkt)
		}
		if err != nil {
			t.Error = err.Error()
			errs = append(errs, err)
			s.Metrics.packet(t.How, false)
			s.logger().WarnContext(ctx, "wake: magic packet not sent", "mac", mac, "to", t.String(), "err", err)
			continue
		}
		sent++
		s.Metrics.packet(t.How, true)
		s.logger().InfoContext(ctx, "wake: magic packet sent", "mac", mac, "to", t.String(), "how", t.How)
	}
	if sent == 0 {
		if len(errs) == 0 {
			return targets, fmt.Errorf("wake %s: nowhere to send the magic packet", mac)
		}
		return targets, fmt.Errorf("wake %s: %w", mac, errors.Join(errs...))
	}
	return targets, nil
}

// sendOne sends pkt to t from a socket allowed to broadcast, bound to the
// interface (SO_BINDTODEVICE, when permitted) and to the server's address
// on that subnet.
func sendOne(ctx context.Context, t Target, pkt []byte) error {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("SO_BROADCAST: %w", serr)
				return
			}
			if t.Interface != "" {
				// Without CAP_NET_RAW the address binding below
				// still picks the interface for a directed
				// broadcast of its own subnet.
				if err := unix.BindToDevice(int(fd), t.Interface); err != nil && !errors.Is(err, unix.EPERM) {
					serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", t.Interface, err)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	laddr := "0.0.0.0:0"
	if t.Source.IsValid() {
		laddr = netip.AddrPortFrom(t.Source, 0).String()
	}
	c, err := lc.ListenPacket(ctx, "udp4", laddr)
	if err != nil {
		return fmt.Errorf("socket for %s: %w", t, err)
	}
	defer c.Close()
	if _, err := c.WriteTo(pkt, net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.Addr, uint16(t.Port)))); err != nil {
		return fmt.Errorf("send to %s: %w", t, err)
	}
	return nil
}
