// Command replica measures a site server's replication (bench/replica/run.sh):
// a first full pull, an incremental pull after a re-capture that changed a
// small part of the disk, and an idle round, against rsync of the same
// repository directory (what FOG users fall back to). Preboot's pull goes
// over HTTPS on loopback through the real image handler and hashes every
// chunk; rsync copies files locally and checks nothing (a second rsync run
// with --checksum reads everything on both sides, the nearest it has to a
// verification).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/replica"
)

func main() {
	sizeMiB := flag.Int("size", 256, "disk size in MiB")
	changed := flag.Float64("changed", 0.02, "share of the disk changed before the second capture")
	dir := flag.String("dir", "", "work directory (required; removed by the caller)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "-dir required")
		os.Exit(2)
	}
	if err := run(*dir, *sizeMiB, *changed); err != nil {
		fmt.Fprintln(os.Stderr, "replica bench:", err)
		os.Exit(1)
	}
}

func disk(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		if (i/4096)%2 == 0 { // half random, half text-like: compresses ~2:1
			for j := i; j < i+4096 && j < n; j += 8 {
				v := rng.Uint64()
				for k := 0; k < 8 && j+k < n; k++ {
					b[j+k] = byte(v >> (8 * k))
				}
			}
		} else {
			copy(b[i:min(i+4096, n)], bytes.Repeat([]byte("preboot site replica "), 200))
		}
	}
	return b
}

func capture(ctx context.Context, repo *image.Repo, data []byte) error {
	l := image.Layout{DiskSize: int64(len(data)), Partitions: []image.Area{{Index: 1, Start: 0, Size: int64(len(data)), FSType: "raw"}}}
	m, err := image.Capture(ctx, bytes.NewReader(data), l, repo, image.CaptureOptions{Name: "bench", Workers: 2})
	if err != nil {
		return err
	}
	_, err = repo.PublishVersion(ctx, m)
	return err
}

func rsync(args ...string) (time.Duration, error) {
	start := time.Now()
	out, err := exec.Command("rsync", args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("rsync %v: %w\n%s", args, err, out)
	}
	return time.Since(start), nil
}

func run(dir string, sizeMiB int, changed float64) error {
	ctx := context.Background()
	central, err := image.OpenRepo(filepath.Join(dir, "central"), image.RepoOptions{})
	if err != nil {
		return err
	}
	data := disk(sizeMiB<<20, 1)
	if err := capture(ctx, central, data); err != nil {
		return err
	}
	srv := httptest.NewTLSServer(&httpstore.Handler{Repo: central})
	defer srv.Close()
	site, err := image.OpenRepo(filepath.Join(dir, "site"), image.RepoOptions{})
	if err != nil {
		return err
	}
	sel, _ := replica.ParseSelector("all")
	rep, err := replica.New(replica.Options{Upstream: &httpstore.Client{BaseURL: srv.URL, HTTP: srv.Client()}, UpstreamURL: srv.URL,
		Local: site, Select: sel, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	round := func() (time.Duration, replica.ImageStatus, error) {
		start := time.Now()
		err := rep.Sync(ctx)
		d := time.Since(start)
		st := rep.Status()
		if len(st.Images) != 1 {
			return d, replica.ImageStatus{}, fmt.Errorf("status %+v", st)
		}
		return d, st.Images[0], err
	}
	rdir := filepath.Join(dir, "rsync") + "/"
	sdir := filepath.Join(dir, "rsync-fsync") + "/"
	src := filepath.Join(dir, "central") + "/"

	type row struct {
		what                string
		preboot, rs, rsSync time.Duration
		chunks              int
		bytes               int64
	}
	var rows []row

	d, st, err := round()
	if err != nil {
		return err
	}
	r1, err := rsync("-a", "--delete", src, rdir)
	if err != nil {
		return err
	}
	r1s, err := rsync("-a", "--delete", "--fsync", src, sdir)
	if err != nil {
		return err
	}
	rows = append(rows, row{"first pull", d, r1, r1s, st.ChunksDone, st.Bytes})

	// A re-capture with a part of the disk changed (spread out).
	data2 := bytes.Clone(data)
	rng := rand.New(rand.NewPCG(9, 9))
	nchg := int(float64(len(data2)/(1<<20)) * changed)
	for range max(nchg, 1) {
		off := rng.IntN(len(data2) - 4096)
		for j := range 4096 {
			data2[off+j] = byte(rng.Uint32())
		}
	}
	if err := capture(ctx, central, data2); err != nil {
		return err
	}
	d, st, err = round()
	if err != nil {
		return err
	}
	r2, err := rsync("-a", "--delete", src, rdir)
	if err != nil {
		return err
	}
	r2s, err := rsync("-a", "--delete", "--fsync", src, sdir)
	if err != nil {
		return err
	}
	rows = append(rows, row{fmt.Sprintf("after a re-capture (%d blocks of 4 KiB changed)", max(nchg, 1)), d, r2, r2s, st.ChunksDone, st.Bytes})

	d, st, err = round()
	if err != nil {
		return err
	}
	r3, err := rsync("-a", "--delete", src, rdir)
	if err != nil {
		return err
	}
	r3c, err := rsync("-a", "--delete", "--checksum", src, rdir)
	if err != nil {
		return err
	}
	r3s, err := rsync("-a", "--delete", "--fsync", src, sdir)
	if err != nil {
		return err
	}
	rows = append(rows, row{"nothing new", d, r3, r3s, st.ChunksDone, st.Bytes})

	// Scrub: re-hash everything at rest, vs rsync --checksum (reads both sides).
	start := time.Now()
	res, err := rep.Scrub(ctx, "", false)
	if err != nil {
		return err
	}
	scrub := time.Since(start)
	if err := site.Verify(ctx, "bench", 2); err != nil {
		return fmt.Errorf("site replica does not verify: %w", err)
	}

	fmt.Printf("Disk %d MiB (about half compressible), 4 MiB chunks; loopback, %s.\n\n", sizeMiB, time.Now().UTC().Format("2006-01-02"))
	fmt.Println("Ratio > 1: Preboot faster. Preboot fsyncs every chunk it stores (durable before the publish); so does `rsync --fsync`.")
	fmt.Println()
	fmt.Println("| round | Preboot site pull (HTTPS, every chunk hashed, fsynced) | chunks / bytes fetched | rsync -a (local, no check) | ratio | rsync -a --fsync | ratio |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %d / %.1f MiB | %s | %.2f | %s | %.2f |\n", r.what, r.preboot.Round(time.Millisecond), r.chunks, float64(r.bytes)/(1<<20),
			r.rs.Round(time.Millisecond), r.rs.Seconds()/r.preboot.Seconds(), r.rsSync.Round(time.Millisecond), r.rsSync.Seconds()/r.preboot.Seconds())
	}
	fmt.Printf("\n| verify at rest | Preboot scrub (re-hash %d chunks) | rsync -a --checksum (reads both sides) | ratio |\n|---|---:|---:|---:|\n", res.Chunks)
	fmt.Printf("| whole repository | %s | %s | %.2f |\n", scrub.Round(time.Millisecond), r3c.Round(time.Millisecond), r3c.Seconds()/scrub.Seconds())
	return nil
}
