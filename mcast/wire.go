package mcast

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A data packet: a fixed header and one symbol of one chunk.
//
//	0  "PBMC"                 magic
//	4  1                      version
//	5  1                      kind (data)
//	6  flags                  bit 0: sent in a repair pass; others 0
//	7  0                      reserved
//	8  session                64-bit session id
//	16 seq                    packet sequence number of the session
//	20 chunk                  index into the session's chunk table
//	24 symbol                 0..K-1 data, K..K+P-1 parity
//	26 K                      data symbols of the chunk
//	28 P                      parity symbols of the chunk (at least 1)
//	30 symbol size            payload bytes
//	32 length                 the chunk's compressed length
//	36 payload
//
// Multicast packets are not authenticated: a receiver keeps only packets
// of its session and chunk table that are consistent with each other, and
// verifies every decoded chunk against the manifest's hash.
const (
	HeaderSize = 36
	// SymbolSize is the payload of each packet: a multiple of 64 (what
	// Reed–Solomon over GF(2^16) needs) that keeps a packet in a 1,500
	// byte Ethernet frame: 20 (IP) + 8 (UDP) + 36 + 1,408 = 1,472.
	SymbolSize = 1408
	// MaxShards is the most data plus parity symbols a chunk has.
	MaxShards = 65536

	version    = 1
	kindData   = 1
	flagRepair = 1
	minSymbol  = 64
	maxSymbol  = 8192
	magic      = "PBMC"
	maxPayload = maxSymbol
)

// Packet is one decoded data packet. Payload aliases the buffer it was
// parsed from.
type Packet struct {
	// Repair: sent to make up for receivers' losses (not a first pass).
	Repair  bool
	Session uint64
	Seq     uint32
	Chunk   uint32
	Symbol  uint16
	K, P    int
	Length  int // the chunk's compressed length
	Payload []byte
}

// Errors of ParsePacket.
var (
	ErrShortPacket = errors.New("packet too short")
	ErrNotPreboot  = errors.New("not a Preboot multicast packet")
	ErrBadPacket   = errors.New("malformed packet")
)

// ParsePacket decodes b. It checks everything that can be checked without
// the session: the fields agree with each other and with the payload.
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < HeaderSize {
		return Packet{}, ErrShortPacket
	}
	if string(b[0:4]) != magic {
		return Packet{}, ErrNotPreboot
	}
	if b[4] != version || b[5] != kindData || b[6]&^flagRepair != 0 || b[7] != 0 {
		return Packet{}, fmt.Errorf("%w: version %d kind %d flags %#x", ErrBadPacket, b[4], b[5], b[6:8])
	}
	p := Packet{
		Repair:  b[6]&flagRepair != 0,
		Session: binary.BigEndian.Uint64(b[8:]),
		Seq:     binary.BigEndian.Uint32(b[16:]),
		Chunk:   binary.BigEndian.Uint32(b[20:]),
		Symbol:  binary.BigEndian.Uint16(b[24:]),
		K:       int(binary.BigEndian.Uint16(b[26:])),
		P:       int(binary.BigEndian.Uint16(b[28:])),
		Length:  int(binary.BigEndian.Uint32(b[32:])),
	}
	size := int(binary.BigEndian.Uint16(b[30:]))
	switch {
	case size < minSymbol || size > maxSymbol || size%64 != 0:
		return Packet{}, fmt.Errorf("%w: symbol size %d", ErrBadPacket, size)
	case len(b)-HeaderSize != size:
		return Packet{}, fmt.Errorf("%w: payload %d bytes, header says %d", ErrBadPacket, len(b)-HeaderSize, size)
	case p.K < 1 || p.P < 1 || p.K+p.P > MaxShards:
		return Packet{}, fmt.Errorf("%w: %d data and %d parity symbols", ErrBadPacket, p.K, p.P)
	case int(p.Symbol) >= p.K+p.P:
		return Packet{}, fmt.Errorf("%w: symbol %d of %d", ErrBadPacket, p.Symbol, p.K+p.P)
	case p.Length <= (p.K-1)*size || p.Length > p.K*size:
		return Packet{}, fmt.Errorf("%w: %d bytes do not make %d symbols of %d", ErrBadPacket, p.Length, p.K, size)
	}
	p.Payload = b[HeaderSize:]
	return p, nil
}

// AppendPacket appends p's encoding to dst. The payload must be a whole
// symbol.
func AppendPacket(dst []byte, p *Packet) []byte {
	var h [HeaderSize]byte
	copy(h[:], magic)
	h[4], h[5] = version, kindData
	if p.Repair {
		h[6] = flagRepair
	}
	binary.BigEndian.PutUint64(h[8:], p.Session)
	binary.BigEndian.PutUint32(h[16:], p.Seq)
	binary.BigEndian.PutUint32(h[20:], p.Chunk)
	binary.BigEndian.PutUint16(h[24:], p.Symbol)
	binary.BigEndian.PutUint16(h[26:], uint16(p.K))
	binary.BigEndian.PutUint16(h[28:], uint16(p.P))
	binary.BigEndian.PutUint16(h[30:], uint16(len(p.Payload)))
	binary.BigEndian.PutUint32(h[32:], uint32(p.Length))
	dst = append(dst, h[:]...)
	return append(dst, p.Payload...)
}

// Shape returns the data and parity symbol counts of a chunk of n
// compressed bytes: K = ⌈n/SymbolSize⌉ and P = ⌈K/2⌉ (at least 2), so a
// receiver can lose a third of a chunk's packets and still decode it from
// one pass of all symbols, and repairs for different receivers' losses
// come from one pool.
func Shape(n int) (k, p int) {
	k = max(1, (n+SymbolSize-1)/SymbolSize)
	p = max(2, (k+1)/2)
	p = min(p, MaxShards-k)
	return k, p
}
