package mcast

import (
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// codecs caches Reed–Solomon encoders by shape: building one for a large
// GF(2^16) shape is not free, and chunks of one image share a few shapes.
type codecs struct {
	mu sync.Mutex
	m  map[[2]int]reedsolomon.Encoder
}

func (c *codecs) get(k, p int) (reedsolomon.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[[2]int{k, p}]; ok {
		return e, nil
	}
	e, err := reedsolomon.New(k, p)
	if err != nil {
		return nil, fmt.Errorf("reed-solomon %d+%d: %w", k, p, err)
	}
	if c.m == nil {
		c.m = make(map[[2]int]reedsolomon.Encoder)
	}
	if len(c.m) >= 64 {
		clear(c.m)
	}
	c.m[[2]int{k, p}] = e
	return e, nil
}

// encoded is a chunk cut into K data symbols and P parity symbols.
type encoded struct {
	k, p   int
	length int
	shards [][]byte
}

// encode splits data (a compressed chunk) into symbols and computes the
// parity.
func (c *codecs) encode(data []byte) (*encoded, error) {
	k, p := Shape(len(data))
	enc, err := c.get(k, p)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, (k+p)*SymbolSize)
	copy(buf, data)
	shards := make([][]byte, k+p)
	for i := range shards {
		shards[i] = buf[i*SymbolSize : (i+1)*SymbolSize : (i+1)*SymbolSize]
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("reed-solomon encode: %w", err)
	}
	return &encoded{k: k, p: p, length: len(data), shards: shards}, nil
}

// assembly collects a chunk's symbols at a receiver.
type assembly struct {
	k, p, length int
	shards       [][]byte
	have         int
	repair       int // symbols that came in repair passes
}

func newAssembly(k, p, length int) *assembly {
	return &assembly{k: k, p: p, length: length, shards: make([][]byte, k+p)}
}

// add keeps a symbol; it reports whether the symbol was new.
func (a *assembly) add(sym int, payload []byte) bool {
	if a.shards[sym] != nil {
		return false
	}
	a.shards[sym] = append(make([]byte, 0, SymbolSize), payload...)
	a.have++
	return true
}

func (a *assembly) complete() bool { return a.have >= a.k }

// decode rebuilds the chunk's compressed bytes once K symbols are in.
func (a *assembly) decode(c *codecs) ([]byte, error) {
	missing := false
	for i := range a.k {
		if a.shards[i] == nil {
			missing = true
			break
		}
	}
	if missing {
		enc, err := c.get(a.k, a.p)
		if err != nil {
			return nil, err
		}
		if err := enc.ReconstructData(a.shards); err != nil {
			return nil, fmt.Errorf("reed-solomon reconstruct: %w", err)
		}
	}
	out := make([]byte, 0, a.k*SymbolSize)
	for i := range a.k {
		out = append(out, a.shards[i]...)
	}
	return out[:a.length], nil
}

// bytes is the memory an assembly holds.
func (a *assembly) bytes() int { return a.have * SymbolSize }
