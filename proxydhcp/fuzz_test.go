package proxydhcp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// The seed corpus lives in testdata/fuzz/FuzzParseRequest (one file per
// client kind, generated from seedPackets); the same packets are added here
// so that the seeds also run as plain tests.
func addSeeds(f *testing.F) {
	seeds := seedPackets()
	names := make([]string, 0, len(seeds))
	for n := range seeds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f.Add(seeds[n])
	}
}

func FuzzParseRequest(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		pkt, c, err := ParseRequest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotPXE) && !errors.Is(err, ErrMessageType) {
				t.Fatalf("unclassified error %v", err)
			}
			if pkt != nil {
				t.Fatal("packet returned with an error")
			}
			return
		}
		if len(c.MAC) != 6 {
			t.Fatalf("MAC %v", c.MAC)
		}
		if !strings.HasPrefix(c.VendorClass, VendorPXEClient) && !strings.HasPrefix(c.VendorClass, VendorHTTPClient) {
			t.Fatalf("accepted vendor class %q", c.VendorClass)
		}
		if mt := pkt.MessageType(); mt != dhcpv4.MessageTypeDiscover && mt != dhcpv4.MessageTypeRequest {
			t.Fatalf("accepted %s", mt)
		}
		// Parsing must be stable through a re-encode.
		_, c2, err := ParseRequest(pkt.ToBytes())
		if err != nil && len(pkt.ToBytes()) <= MaxRequestLen {
			t.Fatalf("re-encoded request rejected: %v", err)
		}
		if err == nil && (c2.MAC.String() != c.MAC.String() || c2.Arch != c.Arch || c2.VendorClass != c.VendorClass || !bytes.Equal(c2.UUID, c.UUID)) {
			t.Fatalf("re-encode changed the client: %+v vs %+v", c, c2)
		}
	})
}

// FuzzHandle feeds datagrams to the server's request path on both ports and
// checks that every reply is a well-formed proxy answer.
func FuzzHandle(f *testing.F) {
	addSeeds(f)
	booter := BooterFunc(func(_ context.Context, c Client) (Boot, error) { return expectedBoot(c), nil })
	s := &Server{Booter: booter, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ServerIP: net.IPv4(192, 0, 2, 1)}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, port := range []int{DHCPPort, PXEPort} {
			in := inbound{port: port, data: b, src: &net.UDPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 68}}
			out, result, err := s.respond(context.Background(), in)
			if out == nil {
				if result == ResultOffered || result == ResultAcked {
					t.Fatalf("no reply but result %s", result)
				}
				if err == nil {
					t.Fatalf("dropped (%s) without a reason", result)
				}
				continue
			}
			req, _, perr := ParseRequest(b)
			if perr != nil {
				t.Fatalf("answered a request ParseRequest rejects: %v", perr)
			}
			wire := out.wire
			// The answer path encodes directly; it must be what the
			// library encodes from BuildReply's packet.
			ref, err := BuildReply(req, out.client, out.client.ServerIP, out.boot)
			if err != nil {
				t.Fatalf("BuildReply refuses what respond answered: %v", err)
			}
			if want := ref.ToBytes(); !bytes.Equal(wire, want) {
				t.Fatalf("reply differs from BuildReply's:\n got %x\nwant %x", wire, want)
			}
			if len(wire) > dhcpv4.MaxMessageSize {
				t.Fatalf("reply of %d bytes exceeds %d", len(wire), dhcpv4.MaxMessageSize)
			}
			r, err := dhcpv4.FromBytes(wire)
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if r.OpCode != dhcpv4.OpcodeBootReply || r.TransactionID != req.TransactionID ||
				!bytes.Equal(r.ClientHWAddr, req.ClientHWAddr) || !r.YourIPAddr.Equal(net.IPv4zero) ||
				!r.ServerIPAddr.Equal(s.ServerIP) || !r.ServerIdentifier().Equal(s.ServerIP) {
				t.Fatalf("bad reply header: %s", r.Summary())
			}
			if cls := r.ClassIdentifier(); cls != VendorPXEClient && cls != VendorHTTPClient {
				t.Fatalf("reply option 60 %q", cls)
			}
			switch r.MessageType() {
			case dhcpv4.MessageTypeOffer:
				if req.MessageType() != dhcpv4.MessageTypeDiscover {
					t.Fatal("OFFER for a non-DISCOVER")
				}
			case dhcpv4.MessageTypeAck:
				if port != PXEPort || req.MessageType() != dhcpv4.MessageTypeRequest {
					t.Fatalf("ACK on port %d for %s", port, req.MessageType())
				}
			default:
				t.Fatalf("reply type %s", r.MessageType())
			}
			if r.BootFileNameOption() == "" {
				t.Fatal("reply without option 67")
			}
		}
	})
}

// TestSeedCorpusPresent regenerates testdata/fuzz/FuzzParseRequest when
// PREBOOT_WRITE_FUZZ_CORPUS=1; otherwise it checks the files are there.
func TestSeedCorpusPresent(t *testing.T) {
	for name, b := range seedPackets() {
		path := "testdata/fuzz/FuzzParseRequest/" + name
		if err := checkOrWriteCorpus(path, b); err != nil {
			t.Error(err)
		}
	}
}
