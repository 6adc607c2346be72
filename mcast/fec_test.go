package mcast

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestFECRoundTrip(t *testing.T) {
	var c codecs
	for _, n := range []int{1, 100, SymbolSize, SymbolSize + 1, 200 << 10, 1 << 20, 4<<20 + 17} {
		data := make([]byte, n)
		r := rand.New(rand.NewPCG(uint64(n), 1))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		e, err := c.encode(data)
		if err != nil {
			t.Fatal(err)
		}
		// Lose a third of the symbols at random, keep K of the rest.
		a := newAssembly(e.k, e.p, e.length)
		order := r.Perm(e.k + e.p)
		for _, i := range order[(e.k+e.p)/3:] {
			if a.complete() {
				break
			}
			a.add(i, e.shards[i])
		}
		if !a.complete() {
			t.Fatalf("%d bytes: %d of %d symbols after losing a third", n, a.have, e.k)
		}
		got, err := a.decode(&c)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: decoded bytes differ", n)
		}
	}
}

func BenchmarkEncode4MiB(b *testing.B) {
	var c codecs
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := c.encode(data); err != nil {
			b.Fatal(err)
		}
	}
}
