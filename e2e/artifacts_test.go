package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Marker lines the guest's /init prints on the serial console.
const (
	guestMarker        = "PREBOOT-E2E-MARKER"    // + " token=<token from the kernel command line>"
	guestTFTPControlOK = "TFTP-CONTROL-OK"       // a file that exists came over TFTP
	guestUDMissing     = "UPDATEDRIVERS-MISSING" // boot/updateDrivers.tgz: TFTP error
	guestUDPresent     = "UPDATEDRIVERS-PRESENT"
	guestDone          = "PREBOOT-E2E-DONE"
)

// guestModules are the NIC drivers the marker initrd loads (with their
// dependencies, in order): e1000 for QEMU's default BIOS NIC, virtio_net for
// the OVMF VM's virtio-net-pci.
var guestModules = []string{"e1000", "virtio_pci", "virtio_net"}

// cachedModules are the drivers kept in the kernel cache (DESIGN §6 list);
// the cache is rebuilt when one is missing.
var cachedModules = []string{"e1000", "virtio_net", "virtio_pci", "virtio_blk", "ahci", "ata_piix", "sd_mod", "nvme"}

// kernel is a Debian kernel unpacked into the cache: vmlinuz and the
// modules the lab needs, with a modules.dep made by depmod.
type kernel struct {
	Version string
	Vmlinuz string
	ModDir  string // lib/modules/<version>
}

// artifacts are the guest files every scenario shares.
type artifacts struct {
	Kernel *kernel
	Initrd []byte // gzip'd newc cpio
}

// sharedArtifacts builds the kernel cache and the initrd once per test
// binary; the value is immutable after that.
var sharedArtifacts = sync.OnceValues(func() (*artifacts, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := cachedKernel(ctx, cacheDir())
	if err != nil {
		return nil, err
	}
	initrd, err := buildInitrd(k)
	if err != nil {
		return nil, err
	}
	return &artifacts{Kernel: k, Initrd: initrd}, nil
})

// cacheDir is e2e/cache (gitignored) or $PREBOOT_E2E_CACHE.
func cacheDir() string {
	if d := os.Getenv("PREBOOT_E2E_CACHE"); d != "" {
		return d
	}
	d, err := filepath.Abs("cache")
	if err != nil {
		return "cache"
	}
	return d
}

var dependsRE = regexp.MustCompile(`Depends:\s+linux-image-(\S+-amd64)\b`)

// cachedKernel returns the Debian kernel from the cache, downloading it
// with apt-get and unpacking it with dpkg -x when the cache lacks it.
func cachedKernel(ctx context.Context, dir string) (*kernel, error) {
	out, err := run(ctx, "apt-cache", "depends", "linux-image-amd64")
	var version string
	if m := dependsRE.FindStringSubmatch(out); err == nil && m != nil {
		version = m[1]
	} else {
		// No package lists (no apt-get update): fall back to any cached kernel.
		matches, _ := filepath.Glob(filepath.Join(dir, "linux-*", "ok"))
		if len(matches) == 0 {
			return nil, fmt.Errorf("find the Debian kernel version (run apt-get update?): %v: %s", err, out)
		}
		sort.Strings(matches)
		version = strings.TrimPrefix(filepath.Base(filepath.Dir(matches[len(matches)-1])), "linux-")
	}
	k := &kernel{
		Version: version,
		Vmlinuz: filepath.Join(dir, "linux-"+version, "vmlinuz"),
		ModDir:  filepath.Join(dir, "linux-"+version, "lib", "modules", version),
	}
	if k.complete() {
		return k, nil
	}
	if err := fetchKernel(ctx, dir, version); err != nil {
		return nil, err
	}
	if !k.complete() {
		return nil, fmt.Errorf("kernel cache %s incomplete after download", filepath.Dir(k.Vmlinuz))
	}
	return k, nil
}

// complete reports whether the cache holds the kernel and every module in
// cachedModules.
func (k *kernel) complete() bool {
	if _, err := os.Stat(filepath.Join(filepath.Dir(k.Vmlinuz), "ok")); err != nil {
		return false
	}
	deps, err := k.moduleDeps()
	if err != nil {
		return false
	}
	_, err = deps.closure(cachedModules)
	return err == nil
}

// fetchKernel downloads linux-image-<version>, unpacks it, runs depmod and
// keeps vmlinuz plus the module closure of cachedModules.
func fetchKernel(ctx context.Context, dir, version string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, "download-")
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	pkg := "linux-image-" + version
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: got %v", pkg, debs)
	}
	root := filepath.Join(tmp, "root")
	if _, err := run(ctx, "dpkg", "-x", debs[0], root); err != nil {
		return err
	}
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		depmod = "/usr/sbin/depmod" // kmod; /usr/sbin may not be in PATH
	}
	if _, err := run(ctx, depmod, "-b", root, version); err != nil {
		return err
	}
	full := &kernel{Version: version, ModDir: filepath.Join(root, "lib", "modules", version)}
	deps, err := full.moduleDeps()
	if err != nil {
		return err
	}
	files, err := deps.closure(cachedModules)
	if err != nil {
		return err
	}
	final := filepath.Join(dir, "linux-"+version)
	stage := filepath.Join(tmp, "linux-"+version)
	keep := append([]string{"modules.dep"}, files...)
	for _, f := range keep {
		if err := copyFile(filepath.Join(full.ModDir, f), filepath.Join(stage, "lib", "modules", version, f), 0o644); err != nil {
			return err
		}
	}
	if err := copyFile(filepath.Join(root, "boot", "vmlinuz-"+version), filepath.Join(stage, "vmlinuz"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, "ok"), []byte(pkg+"\n"), 0o644); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	// A complete entry that a concurrent run put there first is kept; a
	// stale, incomplete one is replaced.
	k := &kernel{Version: version, Vmlinuz: filepath.Join(final, "vmlinuz"), ModDir: filepath.Join(final, "lib", "modules", version)}
	if k.complete() {
		return nil
	}
	_ = os.RemoveAll(final)
	if err := os.Rename(stage, final); err != nil && !k.complete() {
		return fmt.Errorf("kernel cache: %w", err)
	}
	return nil
}

// moduleDeps maps a module file (relative to ModDir) to its dependencies,
// as listed in modules.dep.
type moduleDeps map[string][]string

func (k *kernel) moduleDeps() (moduleDeps, error) {
	b, err := os.ReadFile(filepath.Join(k.ModDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	deps := moduleDeps{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// closure returns the module files for the named modules and everything
// they depend on, dependencies first (the order to insmod them in).
func (d moduleDeps) closure(names []string) ([]string, error) {
	byName := map[string]string{}
	for file := range d {
		base := filepath.Base(file)
		base = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(base, ".xz"), ".zst"), ".ko")
		byName[strings.ReplaceAll(base, "-", "_")] = file
	}
	var order []string
	seen := map[string]bool{}
	var visit func(file string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		for _, dep := range d[file] {
			visit(dep)
		}
		order = append(order, file)
	}
	for _, n := range names {
		file, ok := byName[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("module %s not in modules.dep", n)
		}
		visit(file)
	}
	return order, nil
}

// initScript is the guest's /init. It prints the marker with the token from
// the kernel command line, brings up the NIC with udhcpc, fetches a file
// that exists (control) and boot/updateDrivers.tgz (expected missing) from
// the TFTP server named on the command line, and powers off.
const initScript = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | head -n 1; }
token=$(arg preboot_e2e_token)
server=$(arg preboot_e2e_server)
echo "` + guestMarker + ` token=$token"
echo "cmdline: $(cat /proc/cmdline)"
while read -r m; do insmod "/lib/modules/$m" || echo "insmod $m failed"; done < /modules.order
sleep 1
ip link set lo up
iface=
for i in 1 2 3 4 5 6 7 8 9 10; do
	for d in /sys/class/net/*; do
		n=${d##*/}
		[ "$n" = lo ] && continue
		iface=$n
		break
	done
	[ -n "$iface" ] && break
	sleep 1
done
echo "PREBOOT-E2E-NIC $iface"
ip link set "$iface" up
if udhcpc -i "$iface" -n -q -f -t 10 -T 2 -s /udhcpc.script; then
	echo "PREBOOT-E2E-IP $(ip -4 -o addr show dev "$iface" | awk '{print $4}')"
else
	echo "PREBOOT-E2E-DHCP-FAILED"
fi
if [ -n "$server" ]; then
	cd /tmp
	control=$(arg preboot_e2e_control)
	if [ -n "$control" ]; then
		if tftp -g -r "$control" -l /tmp/control "$server" 2>/tmp/control.err; then
			echo "` + guestTFTPControlOK + ` $control $(wc -c < /tmp/control) bytes"
		else
			echo "TFTP-CONTROL-FAILED $control: $(cat /tmp/control.err)"
		fi
	fi
	if tftp -g -r boot/updateDrivers.tgz -l /tmp/ud.tgz "$server" 2>/tmp/ud.err; then
		echo "` + guestUDPresent + `"
	else
		echo "` + guestUDMissing + `: $(cat /tmp/ud.err)"
	fi
fi
echo "` + guestDone + ` token=$token"
sync
poweroff -f
`

// udhcpcScript configures the address udhcpc obtained.
const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/${mask:-24}" dev "$interface"
	echo "udhcpc: $interface $ip/$mask server $serverid siaddr $siaddr"
	;;
esac
exit 0
`

// busyboxApplets are the applets /init uses (symlinks to /bin/busybox).
var busyboxApplets = []string{"sh", "mount", "sed", "head", "cat", "insmod", "sleep", "ip", "udhcpc", "tftp",
	"awk", "wc", "tr", "sync", "poweroff", "echo", "ls", "dmesg"}

// buildInitrd makes the marker initrd: busybox-static, the NIC modules in
// load order, /init and the udhcpc script, as a gzip'd newc cpio.
func buildInitrd(k *kernel) ([]byte, error) {
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("initrd: busybox-static: %w", err)
	}
	deps, err := k.moduleDeps()
	if err != nil {
		return nil, err
	}
	mods, err := deps.closure(guestModules)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w := &newcWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"} {
		w.dir(d)
	}
	// The kernel opens /dev/console for /init before anything is mounted.
	w.charDev("dev/console", 0o600, 5, 1)
	w.charDev("dev/null", 0o666, 1, 3)
	w.file("bin/busybox", 0o755, busybox)
	for _, a := range busyboxApplets {
		w.symlink("bin/"+a, "busybox")
	}
	var order strings.Builder
	for _, m := range mods {
		data, err := os.ReadFile(filepath.Join(k.ModDir, m))
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		w.file("lib/modules/"+filepath.Base(m), 0o644, data)
		order.WriteString(filepath.Base(m) + "\n")
	}
	w.file("modules.order", 0o644, []byte(order.String()))
	w.file("udhcpc.script", 0o755, []byte(udhcpcScript))
	w.file("init", 0o755, []byte(initScript))
	if err := w.close(); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	return buf.Bytes(), nil
}
