package mcast

import (
	"bytes"
	"errors"
	"testing"
)

func TestPacketRoundTrip(t *testing.T) {
	payload := bytes.Repeat([]byte{7}, SymbolSize)
	p := Packet{Session: 0x0102030405060708, Seq: 9, Chunk: 10, Symbol: 11, K: 3, P: 9, Length: 2*SymbolSize + 5, Payload: payload}
	b := AppendPacket(nil, &p)
	if len(b) != HeaderSize+SymbolSize {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := ParsePacket(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Session != p.Session || got.Seq != p.Seq || got.Chunk != p.Chunk || got.Symbol != p.Symbol || got.K != p.K ||
		got.P != p.P || got.Length != p.Length || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("got %+v", got)
	}
	for name, mut := range map[string]func([]byte){
		"magic":         func(b []byte) { b[0] = 'X' },
		"version":       func(b []byte) { b[4] = 2 },
		"symbol >= K+P": func(b []byte) { b[24], b[25] = 0, 12 },
		"no parity":     func(b []byte) { b[28], b[29] = 0, 0 },
		"length":        func(b []byte) { b[32], b[33], b[34], b[35] = 0, 0, 0, 1 },
		"symbol size":   func(b []byte) { b[30], b[31] = 0, 65 },
	} {
		c := bytes.Clone(b)
		mut(c)
		if _, err := ParsePacket(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParsePacket(b[:HeaderSize-1]); !errors.Is(err, ErrShortPacket) {
		t.Errorf("short: %v", err)
	}
	if _, err := ParsePacket(b[:len(b)-1]); err == nil {
		t.Error("truncated payload accepted")
	}
}

// FuzzParsePacket: whatever arrives on the group, the parser returns an
// error or a packet whose fields agree with each other and whose encoding
// gives back the same bytes.
func FuzzParsePacket(f *testing.F) {
	p := Packet{Session: 1, Seq: 2, Chunk: 3, Symbol: 4, K: 5, P: 3, Length: 5*SymbolSize - 1, Payload: make([]byte, SymbolSize)}
	f.Add(AppendPacket(nil, &p))
	p.K, p.P, p.Symbol, p.Length = 1, 2, 2, 1
	f.Add(AppendPacket(nil, &p))
	f.Add([]byte("PBMC"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			return
		}
		if p.K < 1 || p.P < 1 || p.K+p.P > MaxShards || int(p.Symbol) >= p.K+p.P || p.Length < 1 || p.Length > p.K*len(p.Payload) {
			t.Fatalf("inconsistent packet accepted: %+v", p)
		}
		if !bytes.Equal(AppendPacket(nil, &p), b) {
			t.Fatal("re-encoding differs")
		}
	})
}
