package dhcpserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// seedPackets are the fuzz seeds: one of each message a client sends.
func seedPackets(t testing.TB) map[string][]byte {
	plain := client{mac: mac(1)}
	pxe := client{mac: mac(2), pxe: "PXEClient:Arch:00007:UNDI:003016", arch: iana.EFI_X86_64}
	withID := client{mac: mac(3), clientID: []byte{1, 0x52, 0x54, 0, 0, 0, 3}}
	req := dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.50.0.100")))
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice()))
	ci := dhcpv4.WithClientIP(net.ParseIP("10.50.0.100"))
	return map[string][]byte{
		"discover":       plain.msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptHostName("host-1"))),
		"discover-pxe":   pxe.msg(t, dhcpv4.MessageTypeDiscover),
		"discover-ipxe":  pxe.msg(t, dhcpv4.MessageTypeDiscover, dhcpv4.WithUserClass("iPXE", false)),
		"discover-id":    withID.msg(t, dhcpv4.MessageTypeDiscover, req),
		"request-select": plain.msg(t, dhcpv4.MessageTypeRequest, req, sid),
		"request-reboot": withID.msg(t, dhcpv4.MessageTypeRequest, req),
		"request-renew":  plain.msg(t, dhcpv4.MessageTypeRequest, ci),
		"decline":        plain.msg(t, dhcpv4.MessageTypeDecline, req, sid),
		"release":        plain.msg(t, dhcpv4.MessageTypeRelease, ci, sid),
		"inform":         pxe.msg(t, dhcpv4.MessageTypeInform, ci),
	}
}

// FuzzDHCPServer feeds packets through the whole server (parse, lease
// database on SQLite, reply): no input may crash it, and whatever it
// sends is a well-formed reply to that client, with an address of the
// range or none.
func FuzzDHCPServer(f *testing.F) {
	seeds := seedPackets(f)
	names := make([]string, 0, len(seeds))
	for n := range seeds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f.Add(seeds[n])
	}
	st := openSQLite(f, filepath.Join(f.TempDir(), "fuzz.db"))
	s := newTestServer(f, st)
	s.ProxyElsewhere = true
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, idx := range []int{testIfIndex, testIfIndex + 1} {
			out, result, err := s.respond(context.Background(), inbound{data: b, ifIndex: idx})
			if result == "" {
				t.Fatalf("no result (err %v)", err)
			}
			if result == ResultMalformed && err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("malformed without ErrMalformed: %v", err)
			}
			if out == nil {
				continue
			}
			req, perr := ParseRequest(b)
			if perr != nil {
				t.Fatalf("answered a request that does not parse: %v", perr)
			}
			wire := out.reply.ToBytes()
			p, err := dhcpv4.FromBytes(wire)
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if p.OpCode != dhcpv4.OpcodeBootReply || p.TransactionID != req.Pkt.TransactionID || p.ClientHWAddr.String() != req.MAC.String() {
				t.Fatalf("reply is not for this client: %s", p.Summary())
			}
			if y, _ := netip.AddrFromSlice(p.YourIPAddr.To4()); !y.IsUnspecified() && !testRange.Contains(y) {
				t.Fatalf("handed out %s, outside the range", y)
			}
			if len(wire) > 576 && p.MessageType() != dhcpv4.MessageTypeNak {
				t.Logf("reply of %d bytes", len(wire))
			}
		}
	})
}

// TestSeedCorpus checks the seed corpus files (regenerate with
// PREBOOT_WRITE_FUZZ_CORPUS=1).
func TestSeedCorpus(t *testing.T) {
	for name, b := range seedPackets(t) {
		path := filepath.Join("testdata", "fuzz", "FuzzDHCPServer", name)
		if os.Getenv("PREBOOT_WRITE_FUZZ_CORPUS") == "1" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(b))+")\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("seed corpus: %v (regenerate with PREBOOT_WRITE_FUZZ_CORPUS=1)", err)
		}
		if !strings.HasPrefix(string(data), "go test fuzz v1\n[]byte(") {
			t.Fatal(fmt.Errorf("seed corpus %s: not a go fuzz v1 []byte file", path))
		}
	}
}
