package proxydhcp

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// readCorpusBytes reads a "go test fuzz v1" file holding one []byte value.
func readCorpusBytes(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(strings.TrimPrefix(string(data), "go test fuzz v1\n"))
	if !strings.HasPrefix(s, "[]byte(") || !strings.HasSuffix(s, ")") {
		t.Fatalf("%s: not a []byte corpus entry", path)
	}
	v, err := strconv.Unquote(s[len("[]byte(") : len(s)-1])
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(v)
}

// TestCapturedRequests checks real DHCP requests captured from real clients
// (QEMU 7.2 with Debian's OVMF and iPXE ROMs via a dgram netdev, Debian's
// dhclient 4.4.3 and busybox udhcpc 1.35 in a namespace). They are also
// seeds of FuzzParseRequest.
func TestCapturedRequests(t *testing.T) {
	const dir = "testdata/fuzz/FuzzParseRequest/"
	cases := []struct {
		file      string
		wantErr   error
		vendor    string
		arch      iana.Arch
		userClass string
		uuid      bool
	}{
		{file: "captured-ovmf-edk2-x64-discover", vendor: "PXEClient:Arch:00007:UNDI:003000", arch: iana.EFI_X86_64, uuid: true},
		{file: "captured-qemu-ipxe-bios-discover", vendor: "PXEClient:Arch:00000:UNDI:002001", arch: iana.INTEL_X86PC, userClass: "iPXE", uuid: true},
		{file: "captured-dhclient-discover", wantErr: ErrNotPXE},
		{file: "captured-udhcpc-discover", wantErr: ErrNotPXE},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			b := readCorpusBytes(t, dir+tc.file)
			req, c, err := ParseRequest(b)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.VendorClass != tc.vendor || c.Arch != tc.arch || !c.HasArch || c.UserClass != tc.userClass || (c.UUID != nil) != tc.uuid {
				t.Fatalf("client %+v", c)
			}
			if tc.uuid && len(c.UUID) != 17 {
				t.Fatalf("UUID %x", c.UUID)
			}
			c.ServerIP = net.IPv4(10, 0, 0, 1)
			reply, err := BuildReply(req, c, c.ServerIP, Boot{Filename: "snponly.efi"})
			if err != nil {
				t.Fatal(err)
			}
			wire, err := dhcpv4.FromBytes(reply.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			if string(wire.Options.Get(dhcpv4.OptionClientMachineIdentifier)) != string(c.UUID) || wire.TransactionID != req.TransactionID {
				t.Fatalf("reply %s", wire.Summary())
			}
		})
	}
}
