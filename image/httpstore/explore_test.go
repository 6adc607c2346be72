package httpstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/preboot/preboot/disk"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/imagefs"
	"github.com/preboot/preboot/imagefs/imagefstest"
)

// TestExplorer runs the explorer's routes against a real repository
// holding the imagefstest disk, through the Client.
func TestExplorer(t *testing.T) {
	imagefstest.Need(t)
	if _, err := exec.LookPath("mcopy"); err != nil {
		t.Skip("mtools not installed")
	}
	dir := t.TempDir()
	d := imagefstest.Build(t, dir)
	repo, err := image.OpenRepo(filepath.Join(dir, "repo"), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	imagefstest.Capture(t.Context(), t, d, repo, "lab", 256<<10)
	admin := true
	h := &httpstore.Handler{Repo: repo, Access: func(*http.Request) httpstore.Access {
		return httpstore.Access{Admin: admin, Job: 7, Image: "lab", Read: true}
	}}
	mux := http.NewServeMux()
	for _, p := range h.Prefixes() {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := &httpstore.Client{BaseURL: srv.URL, Attempts: 1}
	ctx := t.Context()

	pl, err := c.Partitions(ctx, "lab")
	if err != nil {
		t.Fatal(err)
	}
	if pl.Version != 1 || len(pl.Partitions) != 6 || !pl.Partitions[5].Browsable || pl.Partitions[5].FSType != "ntfs" {
		t.Fatalf("partitions: %+v", pl)
	}

	fl, err := c.Files(ctx, "lab", 1, "/")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range fl.Entries {
		names = append(names, e.Name)
	}
	if !slices.Contains(names, "big.bin") || !slices.Contains(names, "many") || fl.Entry.Type != "dir" || fl.FSType != "ext4" {
		t.Fatalf("ls /: %+v", fl)
	}
	fl, err = c.Files(ctx, "lab", 1, "link")
	if err != nil || fl.Entry.Type != "symlink" || fl.Entry.Target != "etc/hostname" || len(fl.Entries) != 0 {
		t.Fatalf("ls link: %+v %v", fl, err)
	}
	fl, err = c.Files(ctx, "lab@1", 3, "/efi/BOOT")
	if err != nil || len(fl.Entries) != 1 || fl.Entries[0].Name != "BOOTX64.EFI" || fl.Entries[0].Mode != "-rw-r--r--" {
		t.Fatalf("ls fat32 /efi/BOOT: %+v %v", fl, err)
	}

	var buf bytes.Buffer
	n, err := c.Content(ctx, "lab", 1, "/big.bin", &buf)
	want := d.Partitions[0].Files["big.bin"]
	if err != nil || n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("content big.bin: %d bytes, %v", n, err)
	}
	// Range requests and the download headers.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/images/lab/partitions/6/content?path=/pagefile.dat", nil)
	req.Header.Set("Range", "bytes=1000000-1000099")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, d.Partitions[5].Files["pagefile.dat"][1000000:1000100]) {
		t.Fatalf("range: %s, %d bytes", resp.Status, len(body))
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename=pagefile.dat` || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("headers: %v", resp.Header)
	}

	for _, c2 := range []struct {
		part   int
		path   string
		status int
		code   string
	}{
		{1, "../../etc/passwd", 400, httpstore.CodeEscape},
		{1, "/evil", 400, httpstore.CodeEscape},
		{1, "/nope", 404, httpstore.CodeNotFound},
		{1, "/etc", 400, httpstore.CodeIsDir},
		{9, "/", 404, httpstore.CodeNotFound},
	} {
		_, err := c.Content(ctx, "lab", c2.part, c2.path, io.Discard)
		var se *httpstore.StatusError
		if !errors.As(err, &se) || se.StatusCode != c2.status || se.Body.Code != c2.code {
			t.Errorf("content %d:%s: %v, want %d %s", c2.part, c2.path, err, c2.status, c2.code)
		}
	}
	if _, err := c.Files(ctx, "lab", 1, "/big.bin/x"); err == nil {
		t.Error("ls through a file")
	}

	// The image store through HTTP is a ChunkStore like the local one:
	// an AreaReader over the Client reads the same files.
	m, err := c.Manifest(ctx, "lab")
	if err != nil {
		t.Fatal(err)
	}
	ar, err := image.NewAreaReader(ctx, m, m.Partition(2), c, image.AreaReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	fsys, err := imagefs.Open(ar, ar.Size(), "ext2")
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open("d/l")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, f.Size)
	if _, err := f.ReadAt(b, 0); err != nil || string(b) != "small\n" {
		t.Fatalf("remote read d/l: %q %v", b, err)
	}

	// Diff: an unchanged re-capture is the same; a file changed on the
	// FAT12 partition changes that partition only.
	imagefstest.Capture(ctx, t, d, repo, "lab", 256<<10)
	df, err := c.Diff(ctx, "lab@1", "lab@2")
	if err != nil || !df.Same || df.Chunks != 0 || df.NewChunks != 0 {
		t.Fatalf("diff of an unchanged re-capture: %+v %v", df, err)
	}
	tab := readTable(t, d)
	fat12 := tab.Partitions[4]
	run := exec.Command("mcopy", "-o", "-i", fmt.Sprintf("%s@@%d", d.Path, fat12.Start), "-", "::/boot.ini")
	run.Stdin = bytes.NewReader([]byte("[boot loader] changed\n"))
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v %s", err, out)
	}
	imagefstest.Capture(ctx, t, d, repo, "lab", 256<<10)
	df, err = c.Diff(ctx, "lab@2", "lab")
	if err != nil || df.Same || df.NewChunks < 1 {
		t.Fatalf("diff after a change: %+v %v", df, err)
	}
	for _, a := range df.Areas {
		changed := a.Status != image.DiffSame
		if changed != (a.Index == 5 && a.Name == "") {
			t.Errorf("%s: %s (%d chunks)", a.Area, a.Status, a.Chunks)
		}
	}
	var got bytes.Buffer
	if _, err := c.Content(ctx, "lab", 5, "BOOT.INI", &got); err != nil || got.String() != "[boot loader] changed\n" {
		t.Errorf("changed file: %q %v", got.String(), err)
	}

	// A job's token does not browse.
	admin = false
	_, err = c.Files(ctx, "lab", 1, "/")
	var se *httpstore.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
		t.Errorf("job token: %v", err)
	}
}

func readTable(t *testing.T, d *imagefstest.Disk) *disk.Table {
	t.Helper()
	f, err := os.Open(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := disk.ReadTable(f, d.Size)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestLsMode(t *testing.T) {
	for m, want := range map[fs.FileMode]string{
		0o644: "-rw-r--r--", fs.ModeDir | 0o755: "drwxr-xr-x", fs.ModeSymlink | 0o777: "lrwxrwxrwx",
		fs.ModeSetuid | 0o755: "-rwsr-xr-x", fs.ModeSetgid | 0o640: "-rw-r-S---", fs.ModeDir | fs.ModeSticky | 0o1777: "drwxrwxrwt",
		fs.ModeDevice | fs.ModeCharDevice | 0o666: "crw-rw-rw-", fs.ModeDevice | 0o660: "brw-rw----", fs.ModeNamedPipe | 0o600: "prw-------",
	} {
		if got := httpstore.LsMode(m); got != want {
			t.Errorf("%v: %s, want %s", m, got, want)
		}
	}
}
