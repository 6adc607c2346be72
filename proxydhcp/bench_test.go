package proxydhcp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
)

// BenchmarkRespond measures the per-request CPU cost of parsing a PXE
// DISCOVER, asking a Booter and encoding the OFFER (no socket I/O).
func BenchmarkRespond(b *testing.B) {
	s := &Server{
		Booter:   BooterFunc(func(context.Context, Client) (Boot, error) { return Boot{Filename: "undionly.kpxe"}, nil }),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		ServerIP: net.IPv4(192, 0, 2, 1),
	}
	in := inbound{port: DHCPPort, data: seedPackets()["bios-pxe-discover"], src: &net.UDPAddr{IP: net.IPv4zero, Port: 68}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		out, _, err := s.respond(ctx, in)
		if err != nil {
			b.Fatal(err)
		}
		_ = out.wire
	}
}
