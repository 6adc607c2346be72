package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"path"
	"strings"
	"testing"
)

// newcWriter writes a cpio archive in the "newc" (SVR4, no CRC) format the
// Linux kernel unpacks as an initramfs. Parent directories must be written
// before the entries inside them.
type newcWriter struct {
	w   io.Writer
	ino uint32
	err error
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

func (c *newcWriter) entry(name string, mode uint32, data []byte, rmajor, rminor uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	if name == "TRAILER!!!" && len(data) == 0 {
		c.ino = 0
	}
	// 13 eight-digit hex fields: ino, mode, uid, gid, nlink, mtime,
	// filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+8+len(data)+4)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	_, c.err = c.w.Write(buf)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (c *newcWriter) dir(name string) { c.entry(name, modeDir|0o755, nil, 0, 0) }
func (c *newcWriter) file(name string, perm uint32, data []byte) {
	c.entry(name, modeFile|perm, data, 0, 0)
}
func (c *newcWriter) symlink(name, target string) {
	c.entry(name, modeSymlink|0o777, []byte(target), 0, 0)
}
func (c *newcWriter) charDev(name string, perm, major, minor uint32) {
	c.entry(name, modeCharDev|perm, nil, major, minor)
}

// close writes the trailer entry and returns the first error seen.
func (c *newcWriter) close() error {
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	return c.err
}

// TestNewcWriter checks the archive with GNU cpio, an independent reader.
func TestNewcWriter(t *testing.T) {
	cpioBin, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatal("cpio not installed: apt-get install cpio")
	}
	var sb strings.Builder
	w := &newcWriter{w: &sb}
	w.dir("bin")
	w.file("bin/hello", 0o755, []byte("hello, world\n"))
	w.file("odd", 0o644, []byte("abc"))
	w.symlink("bin/sh", "hello")
	w.dir("dev")
	w.charDev("dev/console", 0o600, 5, 1)
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	if sb.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", sb.Len())
	}
	cmd := exec.Command(cpioBin, "-itv", "--quiet")
	cmd.Stdin = strings.NewReader(sb.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	var got []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// The name follows the year (mtime 0 is 1970).
		for i, s := range f {
			if s == "1970" {
				got = append(got, f[0][:1]+" "+strings.Join(f[i+1:], " "))
				break
			}
		}
	}
	want := []string{"d bin", "- bin/hello", "- odd", "l bin/sh -> hello", "d dev", "c dev/console"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("cpio listing:\n got %q\nwant %q\nraw:\n%s", got, want, out)
	}
	if !strings.Contains(string(out), "5,   1") {
		t.Errorf("device numbers missing from listing:\n%s", out)
	}
}
