// Package envbuild builds the imaging environment: Debian's kernel (from
// apt-get download linux-image-<version>-amd64, cached) and an initramfs
// written in Go — a newc cpio (github.com/u-root/u-root/pkg/cpio)
// compressed with zstd (Debian's kernel has CONFIG_RD_ZSTD=y) — holding:
//
//	/init                       the agent (a static preboot binary); as pid 1
//	                            it runs package initenv, then `agent auto`
//	/bin/busybox + applet links the maintenance shell and tools (busybox-static)
//	/sbin/modprobe → busybox    for the kernel's own request_module calls
//	/usr/sbin/resize2fs, …      Debian's unmodified e2fsprogs, ntfs-3g and
//	/lib/x86_64-linux-gnu/…     fatresize programs (DefaultTools) with their
//	/lib64/ld-linux-x86-64.so.2 shared libraries and the dynamic loader
//	/lib/modules/<v>/…          storage/NIC drivers (DESIGN §6) and their
//	                            dependencies, uncompressed, with modules.dep,
//	                            modules.alias, modules.softdep filtered to them
//	/etc/…                      passwd, group, hosts, nsswitch.conf, profile
//	                            (no CA certificates)
//	/dev/console, /dev/null     for the kernel to open before devtmpfs
//
// The output is deterministic: entries sorted, mtimes, owners and inode
// numbers fixed, so the same inputs give the same initrd bytes.
package envbuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/preboot/preboot/initenv"
)

// DefaultModules are the drivers every environment carries (DESIGN §6 plus
// what keeps real disks and file systems usable from the maintenance
// shell). Their dependencies and soft dependencies come along.
var DefaultModules = []string{
	// NICs
	"e1000", "e1000e", "virtio_net", "net_failover", "failover",
	// virtio transport
	"virtio_pci", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_rng",
	// storage
	"virtio_blk", "virtio_scsi", "ahci", "ata_piix", "sd_mod", "nvme", "nvme_core",
	// file systems for the shell (the agent reads them itself)
	"ext4", "vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8", "nls_ascii",
	// the agent's loop devices and device-mapper tables (LVM, sparse
	// restores), XFS/Btrfs mounts for growing them, UEFI variables for boot
	// entries; btrfs pulls libcrc32c, xor, raid6_pq, zstd and its checksums
	"loop", "dm_mod", "xfs", "btrfs", "efivarfs",
	"libcrc32c", "crc32c_generic", "crc32c_intel",
}

// Options configure Build.
type Options struct {
	CacheDir      string // kernel cache (the .deb and the unpacked modules)
	OutDir        string // where kernel and initrd are written
	KernelVersion string // "" = the version behind Debian's linux-image-amd64
	AgentBinary   string // static preboot binary that becomes /init
	ExtraModules  []string
	Busybox       string // busybox-static binary; "" = /bin/busybox
	// Tools are the build machine's programs carried with their shared
	// libraries (looked up in /usr/sbin, /usr/bin, /sbin, /bin); nil means
	// DefaultTools. A missing tool is a warning, not an error.
	Tools  []string
	Logger *slog.Logger
}

// Result names the files Build wrote.
type Result struct {
	Kernel        string // OutDir/kernel
	Initrd        string // OutDir/initrd
	KernelVersion string
	Modules       []string // module names in the initrd
	// Tools maps each carried program to its path in the environment
	// ("resize2fs" → "/usr/sbin/resize2fs"); MissingTools are the
	// requested ones that were not carried (not installed on the build
	// machine, or a library missing).
	Tools        map[string]string
	MissingTools []string
	Libraries    []string // the shared libraries and loader carried for them
}

// Manifest is OutDir/env.json: what the environment holds.
type Manifest struct {
	KernelVersion string   `json:"kernel_version"`
	KernelSHA256  string   `json:"kernel_sha256"`
	InitrdSHA256  string   `json:"initrd_sha256"`
	AgentSHA256   string   `json:"agent_sha256"`
	Modules       []string `json:"modules"`
	// Tools: program → path in the environment; MissingTools: requested
	// programs the build machine could not supply.
	Tools        map[string]string `json:"tools"`
	MissingTools []string          `json:"missing_tools,omitempty"`
	Libraries    []string          `json:"libraries,omitempty"`
}

// Build makes the imaging environment in opts.OutDir: "kernel" (Debian's
// vmlinuz), "initrd" (zstd newc cpio) and "env.json".
func Build(ctx context.Context, opts Options) (Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.OutDir == "" || opts.CacheDir == "" || opts.AgentBinary == "" {
		return Result{}, errors.New("envbuild: OutDir, CacheDir and AgentBinary are required")
	}
	if opts.Busybox == "" {
		opts.Busybox = "/bin/busybox"
	}
	if static, err := IsStatic(opts.AgentBinary); err != nil {
		return Result{}, fmt.Errorf("agent %s: %w", opts.AgentBinary, err)
	} else if !static {
		log.Warn("the agent is dynamically linked: it will not start in the initrd (build it with CGO_ENABLED=0)", "agent", opts.AgentBinary)
	}
	if static, err := IsStatic(opts.Busybox); err != nil {
		return Result{}, fmt.Errorf("busybox %s (apt-get install busybox-static): %w", opts.Busybox, err)
	} else if !static {
		return Result{}, fmt.Errorf("busybox %s is dynamically linked: install busybox-static", opts.Busybox)
	}
	version := opts.KernelVersion
	if version == "" {
		v, err := CurrentVersion(ctx, opts.CacheDir)
		if err != nil {
			return Result{}, err
		}
		version = v
	}
	modules := append(append([]string(nil), DefaultModules...), opts.ExtraModules...)
	k, err := CachedKernel(ctx, opts.CacheDir, version, modules, log)
	if err != nil {
		return Result{}, err
	}
	if err := checkConfig(k.Config); err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return Result{}, fmt.Errorf("envbuild: %w", err)
	}
	agent, err := os.ReadFile(opts.AgentBinary)
	if err != nil {
		return Result{}, fmt.Errorf("envbuild: agent: %w", err)
	}
	busybox, err := os.ReadFile(opts.Busybox)
	if err != nil {
		return Result{}, fmt.Errorf("envbuild: busybox: %w", err)
	}
	applets, err := busyboxApplets(ctx, opts.Busybox)
	if err != nil {
		return Result{}, err
	}
	fsys, mods, err := initrdFiles(k, modules, agent, busybox, applets)
	if err != nil {
		return Result{}, err
	}
	toolNames := opts.Tools
	if toolNames == nil {
		toolNames = DefaultTools
	}
	tools, err := collectTools("/", toolNames, log)
	if err != nil {
		return Result{}, err
	}
	addTools(fsys, tools)
	res := Result{
		Kernel:        filepath.Join(opts.OutDir, "kernel"),
		Initrd:        filepath.Join(opts.OutDir, "initrd"),
		KernelVersion: version,
		Modules:       mods,
		Tools:         tools.Paths,
		MissingTools:  tools.Missing,
		Libraries:     tools.Libraries,
	}
	var img bytes.Buffer
	if err := WriteInitrd(&img, fsys); err != nil {
		return Result{}, err
	}
	kernel, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return Result{}, fmt.Errorf("envbuild: %w", err)
	}
	if err := writeAtomic(res.Kernel, kernel); err != nil {
		return Result{}, err
	}
	if err := writeAtomic(res.Initrd, img.Bytes()); err != nil {
		return Result{}, err
	}
	m := Manifest{KernelVersion: version, KernelSHA256: sha(kernel), InitrdSHA256: sha(img.Bytes()), AgentSHA256: sha(agent), Modules: mods,
		Tools: tools.Paths, MissingTools: tools.Missing, Libraries: tools.Libraries}
	mj, _ := json.MarshalIndent(m, "", "  ")
	if err := writeAtomic(filepath.Join(opts.OutDir, "env.json"), append(mj, '\n')); err != nil {
		return Result{}, err
	}
	log.Info("imaging environment built", "kernel", res.Kernel, "initrd", res.Initrd, "version", version,
		"initrd_bytes", img.Len(), "modules", len(mods), "tools", len(tools.Paths), "missing_tools", strings.Join(tools.Missing, ","))
	return res, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// IsStatic reports whether the ELF file has no program interpreter (a
// statically linked executable).
func IsStatic(file string) (bool, error) {
	f, err := elf.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// checkConfig makes sure the kernel can unpack a zstd initramfs.
func checkConfig(config string) error {
	b, err := os.ReadFile(config)
	if err != nil {
		return fmt.Errorf("kernel config: %w", err)
	}
	for _, want := range []string{"CONFIG_RD_ZSTD=y", "CONFIG_BLK_DEV_INITRD=y", "CONFIG_DEVTMPFS=y"} {
		if !bytes.Contains(b, []byte("\n"+want+"\n")) {
			return fmt.Errorf("kernel config %s lacks %s", config, want)
		}
	}
	return nil
}

// busyboxApplets lists the applet paths (bin/sh, sbin/ip, …) the busybox
// binary provides.
func busyboxApplets(ctx context.Context, bb string) ([]string, error) {
	out, err := exec.CommandContext(ctx, bb, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", bb, err)
	}
	var list []string
	for _, l := range strings.Fields(string(out)) {
		l = strings.TrimPrefix(path.Clean("/"+l), "/")
		if strings.HasPrefix(l, "bin/") || strings.HasPrefix(l, "sbin/") || strings.HasPrefix(l, "usr/") {
			list = append(list, l)
		}
	}
	sort.Strings(list)
	return list, nil
}

// File is one initrd entry.
type File struct {
	Mode   uint64 // cpio mode: type bits | permissions
	Data   []byte // file content or symlink target
	Rmajor uint64 // device numbers for character devices
	Rminor uint64
}

const (
	modeDir  = cpio.S_IFDIR | 0o755
	modeFile = cpio.S_IFREG | 0o644
	modeExec = cpio.S_IFREG | 0o755
	modeLink = cpio.S_IFLNK | 0o777
)

var etcFiles = map[string]string{
	"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\n",
	"etc/shadow":        "root::0:0:99999:7:::\n",
	"etc/group":         "root:x:0:\ntty:x:5:\n",
	"etc/hostname":      "preboot\n",
	"etc/hosts":         "127.0.0.1\tlocalhost preboot\n::1\tlocalhost\n",
	"etc/nsswitch.conf": "hosts: files dns\n",
	"etc/resolv.conf":   "",
	"etc/profile":       "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nexport PS1='preboot# '\necho 'Preboot maintenance shell: the agent is /init (/init agent --help); reboot -f to leave.'\n",
	"etc/os-release":    "NAME=\"Preboot imaging environment\"\nID=preboot\n",
	// busybox udhcpc's hook, for manual DHCP from the shell.
	"usr/share/udhcpc/default.script": "#!/bin/sh\ncase \"$1\" in\nbound|renew)\n\tip -4 addr flush dev \"$interface\"\n\tip -4 addr add \"$ip/${mask:-24}\" dev \"$interface\"\n\t[ -n \"$router\" ] && ip route replace default via \"${router%% *}\" dev \"$interface\"\n\t: > /etc/resolv.conf\n\tfor d in $dns; do echo \"nameserver $d\" >> /etc/resolv.conf; done\n\t;;\nesac\nexit 0\n",
}

// initrdFiles assembles the initrd's files; it returns them with the names
// of the modules included.
func initrdFiles(k *Kernel, modules []string, agent, busybox []byte, applets []string) (map[string]File, []string, error) {
	fsys := map[string]File{}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "dev", "etc", "proc", "sys", "run", "tmp", "root", "mnt", "var", "lib/modules"} {
		fsys[d] = File{Mode: modeDir}
	}
	fsys["tmp"] = File{Mode: cpio.S_IFDIR | 0o1777}
	fsys["root"] = File{Mode: cpio.S_IFDIR | 0o700}
	fsys["dev/console"] = File{Mode: cpio.S_IFCHR | 0o600, Rmajor: 5, Rminor: 1}
	fsys["dev/null"] = File{Mode: cpio.S_IFCHR | 0o666, Rmajor: 1, Rminor: 3}
	fsys["init"] = File{Mode: modeExec, Data: agent}
	fsys["bin/busybox"] = File{Mode: modeExec, Data: busybox}
	for _, a := range applets {
		if _, taken := fsys[a]; taken {
			continue
		}
		rel, _ := filepath.Rel(path.Dir("/"+a), "/bin/busybox")
		fsys[a] = File{Mode: modeLink, Data: []byte(rel)}
	}
	// e2fsprogs and ntfs-3g check /etc/mtab before touching a device.
	fsys["etc/mtab"] = File{Mode: modeLink, Data: []byte("/proc/mounts")}
	// request_module() runs /sbin/modprobe; busybox's reads modules.dep.
	fsys["sbin/modprobe"] = File{Mode: modeLink, Data: []byte("../bin/busybox")}
	for name, content := range etcFiles {
		mode := uint64(modeFile)
		if strings.HasSuffix(name, ".script") {
			mode = modeExec
		}
		if name == "etc/shadow" {
			mode = cpio.S_IFREG | 0o600
		}
		fsys[name] = File{Mode: mode, Data: []byte(content)}
	}

	idx, err := initenv.ParseModuleIndex(k.ModDir)
	if err != nil {
		return nil, nil, err
	}
	files, err := idx.Resolve(modules...)
	if err != nil {
		return nil, nil, err
	}
	modRoot := "lib/modules/" + k.Version
	included := map[string]string{} // cache file → initrd file (uncompressed)
	var names []string
	for _, f := range files {
		data, err := readModuleFile(filepath.Join(k.ModDir, f))
		if err != nil {
			return nil, nil, err
		}
		out := stripCompression(f)
		included[f] = out
		fsys[modRoot+"/"+out] = File{Mode: modeFile, Data: data}
		names = append(names, initenv.ModuleName(f))
	}
	// modules.dep: only the included modules, in depmod's format.
	var dep strings.Builder
	for _, f := range sortedKeys(included) {
		dep.WriteString(included[f] + ":")
		for _, d := range idx.Deps[f] {
			if o, ok := included[d]; ok {
				dep.WriteString(" " + o)
			}
		}
		dep.WriteString("\n")
	}
	fsys[modRoot+"/modules.dep"] = File{Mode: modeFile, Data: []byte(dep.String())}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	var alias strings.Builder
	for _, a := range idx.Aliases {
		if have[a.Module] {
			fmt.Fprintf(&alias, "alias %s %s\n", a.Pattern, a.Module)
		}
	}
	fsys[modRoot+"/modules.alias"] = File{Mode: modeFile, Data: []byte(alias.String())}
	var soft strings.Builder
	for _, m := range sortedKeys(idx.Softdep) {
		if have[m] {
			fmt.Fprintf(&soft, "softdep %s pre: %s\n", m, strings.Join(idx.Softdep[m], " "))
		}
	}
	fsys[modRoot+"/modules.softdep"] = File{Mode: modeFile, Data: []byte(soft.String())}
	if b, err := os.ReadFile(filepath.Join(k.ModDir, "modules.builtin")); err == nil {
		fsys[modRoot+"/modules.builtin"] = File{Mode: modeFile, Data: b}
	}
	sort.Strings(names)
	return fsys, names, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func stripCompression(f string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(f, ".ko"+ext) {
			return strings.TrimSuffix(f, ext)
		}
	}
	return f
}

// readModuleFile returns a module's ELF bytes: the initrd stores modules
// uncompressed (the whole initrd is zstd-compressed anyway).
func readModuleFile(file string) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("module: %w", err)
	}
	switch {
	case strings.HasSuffix(file, ".zst"):
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return d.DecodeAll(raw, nil)
	case strings.HasSuffix(file, ".gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", file, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(file, ".xz"):
		out, err := exec.Command("xz", "-dc", file).Output()
		if err != nil {
			return nil, fmt.Errorf("module %s: xz -dc (apt-get install xz-utils): %w", file, err)
		}
		return out, nil
	}
	return raw, nil
}

// WriteInitrd writes fsys as a zstd-compressed newc cpio: parent
// directories are added when missing, entries are sorted by name, and
// owners, mtimes and inode numbers are fixed, so equal inputs give equal
// bytes.
func WriteInitrd(w io.Writer, fsys map[string]File) error {
	all := map[string]File{}
	for name, f := range fsys {
		name = cpio.Normalize(name)
		all[name] = f
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				if _, ok := fsys[d]; !ok {
					all[d] = File{Mode: modeDir}
				}
			}
		}
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	cw := cpio.Newc.Writer(zw)
	for i, name := range sortedKeys(all) {
		f := all[name]
		info := cpio.Info{Ino: uint64(i + 1), Mode: f.Mode, NLink: 1, Rmajor: f.Rmajor, Rminor: f.Rminor, Name: name}
		if f.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			info.NLink = 2
		}
		var rec cpio.Record
		if f.Mode&cpio.S_IFMT == cpio.S_IFREG || f.Mode&cpio.S_IFMT == cpio.S_IFLNK {
			rec = cpio.StaticRecord(f.Data, info)
		} else {
			rec = cpio.Record{Info: info}
		}
		if err := cw.WriteRecord(rec); err != nil {
			return fmt.Errorf("initrd: %s: %w", name, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	return nil
}

func writeAtomic(file string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return fmt.Errorf("envbuild: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("envbuild: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("envbuild: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("envbuild: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("envbuild: %w", err)
	}
	return nil
}
