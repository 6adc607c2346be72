package proxydhcp

import (
	"bytes"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// capturedHTTPDiscover is a DHCPDISCOVER of Debian's OVMF (edk2 2022.11)
// doing UEFI HTTP boot over IPv4 (QEMU 7.2, virtio-net without option ROM,
// PXE switched off with -fw_cfg opt/org.tianocore/IPv4PXESupport=n),
// captured with QEMU's filter-dump. It is also a seed of both fuzz targets.
const capturedHTTPDiscover = "testdata/fuzz/FuzzParseRequest/captured-ovmf-edk2-x64-http-discover"

// TestCapturedHTTPBootDiscover: the real HTTP boot DISCOVER is read as an
// x64 UEFI HTTP client (option 93 = 16, option 60 "HTTPClient…") and its
// answer is what EDK2's HttpBootDxe takes as a proxy offer with a boot URI:
// option 60 exactly "HTTPClient", the URL in option 67 and in the file
// field, no address (yiaddr 0) and no PXE option 43.
func TestCapturedHTTPBootDiscover(t *testing.T) {
	b := readCorpusBytes(t, capturedHTTPDiscover)
	if err := checkOrWriteCorpus("testdata/fuzz/FuzzHandle/captured-ovmf-edk2-x64-http-discover", b); err != nil {
		t.Fatal(err)
	}
	req, c, err := ParseRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.VendorClass != "HTTPClient:Arch:00016:UNDI:003000" || c.Arch != iana.EFI_X86_64_HTTP || !c.HasArch ||
		!c.IsHTTPClient() || c.IsIPXE() || len(c.UUID) != 17 || c.MAC.String() != "52:54:00:12:34:99" {
		t.Fatalf("client %+v", c)
	}
	if req.MessageType() != dhcpv4.MessageTypeDiscover {
		t.Fatalf("message type %s", req.MessageType())
	}
	// EDK2 asks for option 60 and 67 (the boot URI) in its parameter list.
	prl := req.ParameterRequestList()
	if !prl.Has(dhcpv4.OptionClassIdentifier) || !prl.Has(dhcpv4.OptionBootfileName) {
		t.Fatalf("parameter request list %v", prl)
	}

	sip := net.IPv4(10, 123, 0, 2).To4()
	c.ServerIP = sip
	const url = "http://10.123.0.2:8080/files/ipxe.efi"
	reply, err := BuildReply(req, c, sip, Boot{Filename: url, HTTPClient: true})
	if err != nil {
		t.Fatal(err)
	}
	wire, err := dhcpv4.FromBytes(reply.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	checkHTTPBootOffer(t, wire, req, sip, url, dhcpv4.MessageTypeOffer)
}

func checkHTTPBootOffer(t *testing.T, r, req *dhcpv4.DHCPv4, sip net.IP, url string, mt dhcpv4.MessageType) {
	t.Helper()
	if r.MessageType() != mt || r.TransactionID != req.TransactionID || !bytes.Equal(r.ClientHWAddr, req.ClientHWAddr) {
		t.Fatalf("reply %s", r.Summary())
	}
	if !r.YourIPAddr.Equal(net.IPv4zero) {
		t.Errorf("yiaddr %v: a proxy never hands out an address", r.YourIPAddr)
	}
	if got := string(r.Options.Get(dhcpv4.OptionClassIdentifier)); got != VendorHTTPClient {
		t.Errorf("option 60 %q, want exactly %q (EDK2 ignores offers without it)", got, VendorHTTPClient)
	}
	if r.BootFileNameOption() != url || r.BootFileName != url {
		t.Errorf("option 67 %q, file %q, want %q", r.BootFileNameOption(), r.BootFileName, url)
	}
	if r.Options.Has(dhcpv4.OptionVendorSpecificInformation) {
		t.Errorf("option 43 in an HTTP boot offer: %x", r.Options.Get(dhcpv4.OptionVendorSpecificInformation))
	}
	if !r.ServerIPAddr.Equal(sip) || !r.ServerIdentifier().Equal(sip) {
		t.Errorf("siaddr %v, server id %v, want %v", r.ServerIPAddr, r.ServerIdentifier(), sip)
	}
	if v := r.Options.Get(dhcpv4.OptionClientMachineIdentifier); !bytes.Equal(v, req.Options.Get(dhcpv4.OptionClientMachineIdentifier)) {
		t.Errorf("option 97 not echoed: %x", v)
	}
}

// TestServeLoopbackHTTPBoot sends the captured HTTP boot DISCOVER through a
// running server on loopback (port 67 role), and the same client's
// DHCPREQUEST to the PXE port, which gets an ACK with the same boot URI.
func TestServeLoopbackHTTPBoot(t *testing.T) {
	client := listenClient(t)
	ls := startLoopback(t, client.LocalAddr().(*net.UDPAddr))
	loopIP := net.IPv4(127, 0, 0, 1).To4()
	b := readCorpusBytes(t, capturedHTTPDiscover)
	disc, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1/ipxe.efi" // what the test booter answers HTTP clients
	offer := exchange(t, client, ls.dhcpAddr, b)
	checkHTTPBootOffer(t, offer, disc, loopIP, url, dhcpv4.MessageTypeOffer)

	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	req.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
	req.TransactionID = dhcpv4.TransactionID{0x48, 0x54, 0x54, 0x50}
	pxeClient := listenClient(t)
	ack := exchange(t, pxeClient, ls.pxeAddr, req.ToBytes())
	checkHTTPBootOffer(t, ack, req, loopIP, url, dhcpv4.MessageTypeAck)

	seen := ls.booter.clients()
	if len(seen) != 2 {
		t.Fatalf("booter saw %d clients, want 2", len(seen))
	}
	for _, c := range seen {
		if c.Arch != iana.EFI_X86_64_HTTP || !c.IsHTTPClient() {
			t.Errorf("booter got %+v", c)
		}
	}
}
