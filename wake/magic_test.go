package wake

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMagicPacket(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	p, err := MagicPacket(mac)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 102 || !bytes.Equal(p[:6], []byte{255, 255, 255, 255, 255, 255}) {
		t.Fatalf("packet %x", p)
	}
	for i := range 16 {
		if !bytes.Equal(p[6+6*i:12+6*i], mac) {
			t.Fatalf("repetition %d: %x", i, p[6+6*i:12+6*i])
		}
	}
	got, err := ParseMagicPacket(p)
	if err != nil || got.String() != mac.String() {
		t.Fatalf("parse: %v %v", got, err)
	}
	if _, err := MagicPacket(net.HardwareAddr{1, 2, 3, 4, 5, 6, 7, 8}); err == nil {
		t.Fatal("a 64-bit address made a magic packet")
	}
	bad := bytes.Clone(p)
	bad[50] ^= 1
	if _, err := ParseMagicPacket(bad); !errors.Is(err, ErrNotMagic) {
		t.Fatalf("corrupted packet: %v", err)
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1/24":     "10.0.0.255",
		"10.0.5.9/16":     "10.0.255.255",
		"192.168.1.77/26": "192.168.1.127",
		"10.1.1.1/31":     "255.255.255.255",
		"10.1.1.1/32":     "255.255.255.255",
		"172.16.0.1/8":    "172.255.255.255",
	} {
		if got := Broadcast(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("Broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseMagicPacket(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		mac, err := ParseMagicPacket(b)
		if err != nil {
			return
		}
		p, err := MagicPacket(mac)
		if err != nil {
			t.Fatalf("parsed %v, which makes no packet: %v", mac, err)
		}
		if !bytes.Equal(p, b[:PacketLen]) {
			t.Fatalf("round trip: %x != %x", p, b[:PacketLen])
		}
	})
}

func TestMetricsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := NewMetrics(reg), NewMetrics(reg)
	a.packet(HowInterface, true)
	b.packet(HowInterface, true)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "preboot_wake_packets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			ls := m.GetLabel()
			if ls[0].GetValue() == HowInterface && ls[1].GetValue() == "sent" {
				if v := m.GetCounter().GetValue(); v != 2 {
					t.Fatalf("shared counter = %v, want 2", v)
				}
				return
			}
		}
	}
	t.Fatal("preboot_wake_packets_total{how=interface,result=sent} not gathered")
}
