package tftp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestParsePacket(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Packet
	}{
		{"\x00\x01pxelinux.0\x00octet\x00", &RequestPacket{Op: OpRRQ, Filename: "pxelinux.0", Mode: "octet"}},
		{"\x00\x01f\x00netascii\x00blksize\x001468\x00tsize\x000\x00", &RequestPacket{Op: OpRRQ, Filename: "f", Mode: "netascii",
			Options: []Option{{"blksize", "1468"}, {"tsize", "0"}}}},
		{"\x00\x01f\x00octet\x00blksize\x001468\x00dangling\x00", &RequestPacket{Op: OpRRQ, Filename: "f", Mode: "octet",
			Options: []Option{{"blksize", "1468"}}}},
		{"\x00\x01f\x00octet\x00\x00\x00\x00\x00", &RequestPacket{Op: OpRRQ, Filename: "f", Mode: "octet"}}, // NUL padding
		{"\x00\x02up\x00octet\x00", &RequestPacket{Op: OpWRQ, Filename: "up", Mode: "octet"}},
		{"\x00\x03\xff\xffabc", &DataPacket{Block: 65535, Data: []byte("abc")}},
		{"\x00\x03\x00\x00", &DataPacket{Block: 0, Data: []byte{}}},
		{"\x00\x04\x01\x02", &AckPacket{Block: 0x0102}},
		{"\x00\x05\x00\x01File not found\x00", &ErrorPacket{Code: 1, Message: "File not found"}},
		{"\x00\x05\x00\x08no NUL", &ErrorPacket{Code: 8, Message: "no NUL"}},
		{"\x00\x06blksize\x00512\x00", &OAckPacket{Options: []Option{{"blksize", "512"}}}},
	} {
		got, err := ParsePacket([]byte(c.in))
		if err != nil {
			t.Errorf("ParsePacket(%q): %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParsePacket(%q) = %#v, want %#v", c.in, got, c.want)
		}
	}
	for _, in := range []string{"", "\x00", "\x00\x01", "\x00\x01f", "\x00\x01f\x00", "\x00\x01\x00octet\x00", "\x00\x03\x00",
		"\x00\x04\x00", "\x00\x05\x00", "\x00\x07\x00\x00", "\xff\xff", "\x00\x06abc"} {
		if p, err := ParsePacket([]byte(in)); err == nil {
			t.Errorf("ParsePacket(%q) = %#v, want an error", in, p)
		}
	}
	if _, err := ParsePacket([]byte{0, 9}); !errors.Is(err, ErrUnknownOpcode) {
		t.Errorf("unknown opcode: %v", err)
	}
}

func TestAppendBinaryRefusesNUL(t *testing.T) {
	for _, p := range []Packet{
		&RequestPacket{Op: OpRRQ, Filename: "a\x00b", Mode: "octet"},
		&RequestPacket{Op: OpRRQ, Filename: "", Mode: "octet"},
		&RequestPacket{Op: OpDATA, Filename: "a", Mode: "octet"},
		&ErrorPacket{Message: "x\x00"},
		&OAckPacket{Options: []Option{{"", "1"}}},
	} {
		if _, err := p.AppendBinary(nil); err == nil {
			t.Errorf("%#v encoded without error", p)
		}
	}
}

// FuzzParsePacket checks that the parser never panics and that what it accepts encodes back to
// something that parses to the same packet.
func FuzzParsePacket(f *testing.F) {
	for _, s := range []string{
		"\x00\x01pxelinux.0\x00octet\x00",
		"\x00\x01f\x00netascii\x00blksize\x001468\x00tsize\x000\x00windowsize\x0016\x00timeout\x001\x00",
		"\x00\x02up\x00octet\x00",
		"\x00\x03\x00\x01data",
		"\x00\x04\xff\xff",
		"\x00\x05\x00\x01File not found\x00",
		"\x00\x06blksize\x00512\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			if p != nil {
				t.Fatalf("packet %#v with error %v", p, err)
			}
			return
		}
		enc, err := p.AppendBinary(nil)
		if err != nil {
			t.Fatalf("cannot encode parsed packet %#v: %v", p, err)
		}
		q, err := ParsePacket(enc)
		if err != nil {
			t.Fatalf("cannot parse encoded %q: %v", enc, err)
		}
		if !reflect.DeepEqual(normalizePacket(p), normalizePacket(q)) {
			t.Fatalf("round trip changed %#v into %#v", p, q)
		}
	})
}

func normalizePacket(p Packet) Packet {
	if d, ok := p.(*DataPacket); ok && len(d.Data) == 0 {
		return &DataPacket{Block: d.Block}
	}
	return p
}

var fuzzServer struct {
	once sync.Once
	addr netip.AddrPort
}

// FuzzServerRequest sends arbitrary bytes to a live server as a request, plays along for a few
// packets, and then checks that the server still serves a well-formed request.
func FuzzServerRequest(f *testing.F) {
	for _, s := range []string{
		"\x00\x01f\x00octet\x00",
		"\x00\x01f\x00octet\x00blksize\x008\x00windowsize\x004\x00tsize\x000\x00",
		"\x00\x01../f\x00octet\x00",
		"\x00\x01f\x00mail\x00",
		"\x00\x02f\x00octet\x00",
		"\x00\x01f\x00octet\x00blksize\x0099999999999999999999\x00",
		"\x00\x01f\x00NETASCII\x00timeout\x00-1\x00",
		"\x00\x04\x00\x00",
	} {
		f.Add([]byte(s))
	}
	root := f.TempDir()
	data := randomBytes(30, 3000)
	if err := writeFileErr(filepath.Join(root, "f"), data); err != nil {
		f.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Root: root, Logger: discardLogger(), MinTimeout: time.Millisecond, InitialTimeout: 5 * time.Millisecond,
			MaxTimeout: 20 * time.Millisecond, MaxRetries: 2}).Serve(ctx, conn)
	}()
	f.Cleanup(func() {
		cancel()
		<-done
	})
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort()

	f.Fuzz(func(t *testing.T, b []byte) {
		c := newTestClient(t, addr)
		c.sendRawTo(addr, b)
		for range 4 { // ACK whatever comes, briefly
			p, err := c.recv(20 * time.Millisecond)
			if err != nil {
				break
			}
			switch p := p.(type) {
			case *DataPacket:
				c.ack(p.Block)
			case *OAckPacket:
				c.ack(0)
			}
		}
		if got := download(t, addr, "f", 512, 1); !bytes.Equal(got, data) {
			t.Fatal("server no longer serves correctly")
		}
	})
}
