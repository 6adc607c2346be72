package nslab

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

const testGroup = "239.255.77.77"

// sendMulticast sends count datagrams of size bytes to testGroup:port from
// the server namespace, paced to about rate bits/s.
func sendMulticast(t *testing.T, l *Lab, port, count, size int, bps int64) {
	t.Helper()
	var c net.PacketConn
	if err := InNamespace(l.ServerNS, func() error {
		var err error
		c, err = net.ListenPacket("udp4", l.ServerIP+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	ifi, err := interfaceIn(l.ServerNS, Iface)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetMulticastInterface(ifi); err != nil {
		t.Fatal(err)
	}
	dst := &net.UDPAddr{IP: net.ParseIP(testGroup), Port: port}
	buf := make([]byte, size)
	gap := time.Duration(float64(size*8) / float64(bps) * float64(time.Second))
	next := time.Now()
	for range count {
		if _, err := c.WriteTo(buf, dst); err != nil {
			t.Fatalf("send to %v: %v", dst, err)
		}
		next = next.Add(gap)
		time.Sleep(time.Until(next))
	}
}

// interfaceIn looks an interface up inside a namespace.
func interfaceIn(ns, name string) (*net.Interface, error) {
	var ifi *net.Interface
	err := InNamespace(ns, func() error {
		var err error
		ifi, err = net.InterfaceByName(name)
		return err
	})
	return ifi, err
}

// joinCounter joins testGroup:port on receiver i's eth0 and counts the
// datagrams it receives until the returned stop is called.
func joinCounter(t *testing.T, l *Lab, i, port int) (count *atomic.Int64, stop func()) {
	t.Helper()
	r := l.Receivers[i]
	var c net.PacketConn
	if err := InNamespace(r.NS, func() error {
		var err error
		c, err = net.ListenPacket("udp4", testGroup+":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ifi, err := interfaceIn(r.NS, Iface)
	if err != nil {
		t.Fatal(err)
	}
	if err := ipv4.NewPacketConn(c).JoinGroup(ifi, &net.UDPAddr{IP: net.ParseIP(testGroup)}); err != nil {
		t.Fatalf("join on receiver %d: %v", i, err)
	}
	count = new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			count.Add(1)
		}
	}()
	return count, func() { c.Close(); <-done }
}

// TestLab builds a lab of 4 receivers and checks what the multicast
// scenarios rely on: snooping with a querier keeps a group's traffic off
// ports that did not join, loss and drop rules work, the server's tx
// counter counts, processes are killed by PID and the namespaces go away.
func TestLab(t *testing.T) {
	l := New(t, Options{Receivers: 4})
	for _, ns := range l.Namespaces() {
		if !strings.HasPrefix(ns, "preboot-mc-"+l.ID+"-") {
			t.Errorf("namespace %q lacks the lab's prefix", ns)
		}
	}
	const port, count, size = 9977, 1000, 1000
	joined, stop0 := joinCounter(t, l, 0, port)
	defer stop0()
	lossy, stop2 := joinCounter(t, l, 2, port)
	defer stop2()
	dropped, stop3 := joinCounter(t, l, 3, port)
	defer stop3()
	if err := l.AddLoss(2, 300); err != nil {
		t.Fatal(err)
	}
	if err := l.DropMulticast(3); err != nil {
		t.Fatal(err)
	}
	rx1, err := l.RxBytes(1)
	if err != nil {
		t.Fatal(err)
	}
	tx0, err := l.TxBytes()
	if err != nil {
		t.Fatal(err)
	}
	sendMulticast(t, l, port, count, size, 8e6)
	time.Sleep(300 * time.Millisecond)
	tx1, _ := l.TxBytes()
	rx1b, _ := l.RxBytes(1)
	if mdb, err := l.MDB(); err == nil {
		t.Logf("bridge mdb:\n%s", mdb)
	}
	t.Logf("joined %d, lossy %d, dropped %d of %d; non-member rx %d bytes; server tx %d bytes",
		joined.Load(), lossy.Load(), dropped.Load(), count, rx1b-rx1, tx1-tx0)
	if n := joined.Load(); n < count*99/100 {
		t.Errorf("member received %d of %d", n, count)
	}
	if n := lossy.Load(); n < count*60/100 || n > count*80/100 {
		t.Errorf("30 %% loss: received %d of %d", n, count)
	}
	if d, err := l.Dropped(2); err != nil || d < count*20/100 {
		t.Errorf("loss rule counted %d drops (%v)", d, err)
	}
	if n := dropped.Load(); n != 0 {
		t.Errorf("multicast dropped: received %d", n)
	}
	if got := rx1b - rx1; got > count*size/100 {
		t.Errorf("a port that never joined received %d bytes of %d: snooping/querier not working", got, count*size)
	}
	if got := tx1 - tx0; got < count*size || got > count*(size+100) {
		t.Errorf("server tx %d bytes for %d datagrams of %d", got, count, size)
	}

	// A receiver shaped to 1 Mbit/s gets about that share of an 8 Mbit/s stream.
	if err := l.ResetReceiver(2); err != nil {
		t.Fatal(err)
	}
	if err := l.ShapeReceiver(2, "1mbit"); err != nil {
		t.Fatal(err)
	}
	lossy.Store(0)
	joined.Store(0)
	sendMulticast(t, l, port, count, size, 8e6)
	time.Sleep(300 * time.Millisecond)
	t.Logf("shaped to 1mbit: %d of %d; unshaped member %d", lossy.Load(), count, joined.Load())
	if n := lossy.Load(); n > count/4 {
		t.Errorf("shaped receiver got %d of %d at 8x its rate", n, count)
	}
	if err := l.ResetAll(); err != nil {
		t.Fatal(err)
	}

	// Processes: killed by PID, with their pipeline; a leftover is killed at Close.
	ctx := context.Background()
	p, err := l.StartIn(ctx, l.Receivers[1].NS, "sleeper", "", "sh", "-c", "sleep 60 | cat")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	err = p.WaitTimeout(5 * time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("after Kill: %v", err)
	}
	out, err := l.Run(ctx, l.Receivers[1].NS, "ip", "-4", "-o", "addr", "show", "dev", Iface)
	if err != nil || !strings.Contains(out, ReceiverIP(1)+"/24 brd 10.124.0.255") {
		t.Errorf("receiver address: %q %v", out, err)
	}
	out, err = l.Run(ctx, l.Receivers[1].NS, "ip", "-4", "route", "show")
	if err != nil || strings.Contains(out, "default") || !strings.Contains(out, "224.0.0.0/4 dev eth0") {
		t.Errorf("receiver routes: %q %v", out, err)
	}
	left, err := l.StartIn(ctx, l.ServerNS, "leftover", "", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	nss := l.Namespaces()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !left.Exited() {
		t.Error("Close left a process running")
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			t.Errorf("namespace %s still exists after Close", ns)
		}
	}
}

func TestBuildRefusesForeignPrefix(t *testing.T) {
	Require(t)
	l, err := Build(context.Background(), Options{Prefix: "lab"})
	if err == nil || l != nil {
		t.Fatalf("Build with prefix lab: %v", err)
	}
}

func TestWriteDiskImage(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs)")
	}
	dir := t.TempDir()
	ctx := context.Background()
	spec := ImageSpec{DataBytes: 2 << 20, Seed: 7}
	a, err := WriteDiskImage(ctx, filepath.Join(dir, "a.img"), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := WriteDiskImage(ctx, filepath.Join(dir, "b.img"), spec)
	if err != nil {
		t.Fatal(err)
	}
	if a.SHA256 != b.SHA256 {
		t.Errorf("same spec, different images: %s %s", a.SHA256, b.SHA256)
	}
	if a.DiskBytes%(1<<20) != 0 || a.DiskBytes < PartitionStart+spec.DataBytes {
		t.Errorf("disk size %d", a.DiskBytes)
	}
	if err := CompareFiles(a.Path, b.Path); err != nil {
		t.Error(err)
	}
	// A difference inside a skipped range is ignored, one outside is not.
	f, err := os.OpenFile(b.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("PREBOOT IMGSAFE\n"), ImageSafeBlock.Off); err != nil {
		t.Fatal(err)
	}
	if err := CompareFiles(a.Path, b.Path); err == nil {
		t.Error("a changed image-safe block compared equal")
	}
	if err := CompareFiles(a.Path, b.Path, ImageSafeBlock); err != nil {
		t.Error(err)
	}
	if _, err := f.WriteAt([]byte{1}, PartitionStart+4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := CompareFiles(a.Path, b.Path, ImageSafeBlock); err == nil || !strings.Contains(err.Error(), "1052672") {
		t.Errorf("a changed partition byte: %v", err)
	}
	// The partition holds a clean ext4 filesystem.
	if _, err := exec.LookPath("e2fsck"); err == nil {
		part := filepath.Join(dir, "part")
		if err := extract(a.Path, part, PartitionStart); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
			t.Errorf("e2fsck: %v\n%s", err, out)
		}
	}
}

func extract(src, dst string, off int64) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b[off:], 0o644)
}
