package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/tftp"
)

// TestTFTPGet downloads a file from Preboot's TFTP server on loopback as
// the simulated firmware does: lock-step and with a window.
func TestTFTPGet(t *testing.T) {
	root := t.TempDir()
	want := make([]byte, 300*1468+17)
	rand.Read(want)
	if err := os.WriteFile(filepath.Join(root, "ipxe.efi"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&tftp.Server{Root: root, Logger: slog.New(slog.DiscardHandler), MaxBlockSize: 65464, MaxWindow: 64}).Serve(ctx, conn)
	}()
	defer func() {
		cancel()
		conn.Close()
		<-done
	}()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	for _, window := range []int{0, 8} {
		st := &clientStats{}
		got, err := tftpGetPort(ctx, net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 1), port, "ipxe.efi", 1468, window, time.Second, st)
		if err != nil {
			t.Fatalf("window %d: %v", window, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("window %d: got %d bytes, want %d (or different content)", window, len(got), len(want))
		}
	}
	if _, err := tftpGetPort(ctx, net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 1), port, "missing.efi", 1468, 0, time.Second, &clientStats{}); err == nil || !strings.Contains(err.Error(), "error 1") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestChainExpand fills in the chain line of Preboot's bootstrap script
// as iPXE does, and the query it builds carries the hardware.
func TestChainExpand(t *testing.T) {
	script := "#!ipxe\necho Preboot: asking\n" +
		"chain http://10.0.0.1:8080/boot.ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}" +
		"&manufacturer=${manufacturer:uristring}&product=${product:uristring}&asset=${asset:uristring}" +
		"&arch=${buildarch}&platform=${platform} || goto failed\n"
	hw := newHardware(7)
	u, err := url.Parse(expand(chainURL(script), hw))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, want := range map[string]string{
		"mac": strings.ReplaceAll(hw.mac.String(), ":", "-"), "uuid": hw.uuidString(), "serial": hw.serial,
		"manufacturer": hw.manufacturer, "product": hw.product, "asset": hw.asset, "arch": "x86_64", "platform": "efi",
	} {
		if q.Get(k) != want {
			t.Errorf("%s = %q, want %q (URL %s)", k, q.Get(k), want, u)
		}
	}
	if chainURL("#!ipxe\necho local\nexit 1\n") != "" {
		t.Fatal("a script without chain has a chain URL")
	}
	if hw.mac[0] != 0x02 || newHardware(7).mac.String() == hw.mac.String() {
		t.Fatal("MACs are not new, locally administered addresses")
	}
}
