// Command gendata writes the imaging benchmark's file tree: a deterministic
// (seeded) mix of incompressible random files, compressible text, zero-filled
// files (written, so their blocks are allocated) plus one file with holes,
// and many small files in nested directories. The same seed and size give
// the same bytes on every machine.
//
//	go run ./bench/imaging/gendata -dir DIR -size 1400MiB -seed 1
//
// It is a benchmark helper, not part of Preboot.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

func main() {
	dir := flag.String("dir", "", "directory to fill (created; must be empty or absent)")
	sizeStr := flag.String("size", "1400MiB", "total bytes of file content (suffix KiB, MiB, GiB)")
	seed := flag.Uint64("seed", 1, "PRNG seed")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "gendata: -dir is required")
		os.Exit(2)
	}
	size, err := parseSize(*sizeStr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendata:", err)
		os.Exit(2)
	}
	st, err := generate(*dir, size, *seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendata:", err)
		os.Exit(1)
	}
	for _, k := range []string{"random", "text", "zero", "sparse", "small"} {
		fmt.Printf("%-7s %6d files %10d bytes\n", k, st[k].files, st[k].bytes)
	}
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

type stat struct{ files, bytes int64 }

// The mix, as shares of the total size.
const (
	shareRandom = 0.35 // large incompressible files (media, archives)
	shareText   = 0.27 // large compressible text (logs, sources)
	shareZero   = 0.18 // zero-filled allocated files (preallocated DBs, VM disks)
	shareSparse = 0.05 // apparent size of one file with holes (mostly holes)
	shareSmall  = 0.15 // many small files, half text, half random
)

func generate(dir string, total int64, seed uint64) (map[string]stat, error) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s is not empty", dir)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var cseed [32]byte
	for i := range cseed {
		cseed[i] = byte(rng.Uint32())
	}
	cha := rand.NewChaCha8(cseed)
	words := vocabulary(rng, 4000)
	st := map[string]stat{}
	add := func(kind string, n int64) {
		s := st[kind]
		s.files++
		s.bytes += n
		st[kind] = s
	}

	// Large random files, 8..48 MiB.
	for i, left := 0, int64(float64(total)*shareRandom); left > 0; i++ {
		n := min(left, (8+rng.Int64N(41))<<20)
		if err := writeFile(filepath.Join(dir, "media", fmt.Sprintf("blob%03d.bin", i)), n, func(b []byte) { _, _ = cha.Read(b) }); err != nil {
			return nil, err
		}
		add("random", n)
		left -= n
	}
	// Large text files, 2..24 MiB.
	for i, left := 0, int64(float64(total)*shareText); left > 0; i++ {
		n := min(left, (2+rng.Int64N(23))<<20)
		tg := &textGen{rng: rng, words: words}
		if err := writeFile(filepath.Join(dir, "logs", fmt.Sprintf("app%03d.log", i)), n, tg.fill); err != nil {
			return nil, err
		}
		add("text", n)
		left -= n
	}
	// Zero-filled files, 4..64 MiB, blocks allocated.
	for i, left := 0, int64(float64(total)*shareZero); left > 0; i++ {
		n := min(left, (4+rng.Int64N(61))<<20)
		if err := writeFile(filepath.Join(dir, "prealloc", fmt.Sprintf("zero%03d.img", i)), n, func(b []byte) { clear(b) }); err != nil {
			return nil, err
		}
		add("zero", n)
		left -= n
	}
	// One file with holes: 1 MiB of random data every 16 MiB.
	if n := int64(float64(total) * shareSparse); n > 0 {
		if err := writeSparse(filepath.Join(dir, "prealloc", "sparse.img"), n, cha); err != nil {
			return nil, err
		}
		add("sparse", n)
	}
	// Many small files, 256 B..32 KiB, 100 per directory, three levels.
	for i, left := 0, int64(float64(total)*shareSmall); left > 0; i++ {
		n := min(left, 256+rng.Int64N(32<<10-256))
		p := filepath.Join(dir, "tree", fmt.Sprintf("d%02d", i/10000), fmt.Sprintf("e%02d", i/100%100), fmt.Sprintf("f%05d", i))
		var fill func([]byte)
		if i%2 == 0 {
			p += ".txt"
			fill = (&textGen{rng: rng, words: words}).fill
		} else {
			p += ".dat"
			fill = func(b []byte) { _, _ = cha.Read(b) }
		}
		if err := writeFile(p, n, fill); err != nil {
			return nil, err
		}
		add("small", n)
		left -= n
	}
	return st, nil
}

func writeFile(path string, n int64, fill func([]byte)) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		b := buf[:min(n, int64(len(buf)))]
		fill(b)
		if _, err := f.Write(b); err != nil {
			return err
		}
		n -= int64(len(b))
	}
	return nil
}

func writeSparse(path string, n int64, cha *rand.ChaCha8) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < n; off += 16 << 20 {
		_, _ = cha.Read(buf)
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), n-off)], off); err != nil {
			return err
		}
	}
	return f.Truncate(n)
}

// vocabulary makes n pseudo-words of 2..10 letters.
func vocabulary(rng *rand.Rand, n int) []string {
	const letters = "etaoinshrdlcumwfgypbvkjxqz"
	out := make([]string, n)
	for i := range out {
		l := 2 + rng.IntN(9)
		b := make([]byte, l)
		for j := range b {
			b[j] = letters[min(rng.IntN(len(letters)), rng.IntN(len(letters)))] // skewed to common letters
		}
		out[i] = string(b)
	}
	return out
}

// textGen writes log-like lines: a timestamp, a level, Zipf-distributed
// words and numbers. zstd -3 compresses it about 3:1.
type textGen struct {
	rng     *rand.Rand
	words   []string
	pending []byte
	line    int64
	zipf    *rand.Zipf
}

func (t *textGen) fill(b []byte) {
	if t.zipf == nil {
		t.zipf = rand.NewZipf(t.rng, 1.1, 4, uint64(len(t.words)-1))
	}
	levels := []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
	for len(b) > 0 {
		if len(t.pending) == 0 {
			line := make([]byte, 0, 200)
			t.line++
			line = fmt.Appendf(line, "2024-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s [%s] ", 1+t.line/100000%12, 1+t.line/4000%28,
				t.line/600%24, t.line/10%60, t.line%60, t.rng.IntN(1000), levels[t.rng.IntN(len(levels))], t.words[t.rng.IntN(64)])
			for k := 4 + t.rng.IntN(14); k > 0; k-- {
				if t.rng.IntN(8) == 0 {
					line = strconv.AppendInt(line, t.rng.Int64N(1_000_000), 10)
				} else {
					line = append(line, t.words[t.zipf.Uint64()]...)
				}
				line = append(line, ' ')
			}
			line[len(line)-1] = '\n'
			t.pending = line
		}
		n := copy(b, t.pending)
		b, t.pending = b[n:], t.pending[n:]
	}
}
