package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/disk"
)

// PersonalizeOptions tune Personalize.
type PersonalizeOptions struct {
	// Device is the whole disk just restored (a block device).
	Device string
	// Hostname is the device record's name; "" writes only a fresh
	// machine-id. It is made a host label (bundle.ValidHostname), and a
	// NetBIOS name for Windows.
	Hostname string
	Logger   *slog.Logger
}

// PersonalizeResult says what Personalize changed (for logs and tests).
type PersonalizeResult struct {
	// Linux are the partitions (device nodes) whose /etc was changed;
	// Windows those whose unattend.xml was.
	Linux, Windows []string
}

// unattendPaths are where sysprep looks for an answer file, in the order
// it does.
var unattendPaths = []string{"/Windows/Panther/unattend.xml", "/Windows/System32/Sysprep/unattend.xml"}

// maxUnattend bounds the answer file read (real ones are a few KiB).
const maxUnattend = 4 << 20

// Personalize writes the device's identity into the system just restored
// on the block device o.Device: for each ext2/3/4, XFS or Btrfs partition
// holding /etc/os-release or /etc/hostname, the hostname (/etc/hostname,
// the 127.0.1.1 line of /etc/hosts) and a fresh machine-id; for each NTFS
// partition with a sysprep unattend.xml, its ComputerName. Every failure
// is a logged warning: the restore itself succeeded.
func Personalize(ctx context.Context, o PersonalizeOptions) PersonalizeResult {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var res PersonalizeResult
	host := bundle.ValidHostname(o.Hostname)
	if host == "" {
		log.WarnContext(ctx, "personalize: the device record has no usable name; only a fresh machine-id is written", "name", o.Hostname)
	}
	parts, err := restoredPartitions(ctx, o.Device)
	if err != nil {
		log.WarnContext(ctx, "personalize: skipped", "device", o.Device, "err", err)
		return res
	}
	for _, p := range parts {
		if ctx.Err() != nil {
			return res
		}
		node, release, err := partitionDevice(ctx, o.Device, p)
		if err != nil {
			log.WarnContext(ctx, "personalize: partition not reachable", "device", o.Device, "partition", p.index, "err", err)
			continue
		}
		p.node = node
		switch p.fstype {
		case "ext2", "ext3", "ext4", "xfs", "btrfs":
			changed, err := personalizeLinuxPartition(ctx, p, host, log)
			if err != nil {
				log.WarnContext(ctx, "personalize: Linux partition not changed", "partition", p.node, "fstype", p.fstype, "err", err)
			} else if changed {
				res.Linux = append(res.Linux, p.node)
			}
		case "ntfs":
			if host == "" {
				continue
			}
			changed, err := personalizeWindowsPartition(ctx, p.node, bundle.NetBIOSName(host), log)
			if err != nil {
				log.WarnContext(ctx, "personalize: Windows partition not changed", "partition", p.node, "err", err)
			} else if changed {
				res.Windows = append(res.Windows, p.node)
			}
		}
		if err := release(); err != nil {
			log.WarnContext(ctx, "personalize: detach partition", "partition", p.node, "err", err)
		}
	}
	if len(res.Linux)+len(res.Windows) == 0 {
		log.InfoContext(ctx, "personalize: no Linux root or sysprep answer file found; nothing changed", "device", o.Device)
	}
	return res
}

// restoredPart is one partition of the restored disk.
type restoredPart struct {
	index       int
	start, size int64
	node        string // /dev/sda2 or a loop device over it
	fstype      string
}

// restoredPartitions reads the disk's partition table and sniffs each
// partition's filesystem.
func restoredPartitions(ctx context.Context, dev string) ([]restoredPart, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !isBlockDevice(f) {
		return nil, fmt.Errorf("%s is not a block device (disk-image files are not personalized)", dev)
	}
	size, err := deviceSize(f)
	if err != nil {
		return nil, err
	}
	t, err := disk.ReadTable(f, size)
	if err != nil {
		return nil, fmt.Errorf("partition table: %w", err)
	}
	var out []restoredPart
	for _, p := range t.Partitions {
		if p.IsExtended() || p.End() > size {
			continue
		}
		fst := SniffFS(io.NewSectionReader(f, p.Start, p.Size))
		switch fst {
		case "ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs":
		default:
			continue
		}
		out = append(out, restoredPart{index: p.Index, start: p.Start, size: p.Size, fstype: fst})
	}
	return out, nil
}

// partitionDevice is a block device of partition p of disk dev: the
// kernel's node (/dev/sda2, found through sysfs), else — when the kernel
// shows no partitions (a loop device without partition scanning) — a
// loop device over the partition's bytes. release detaches that loop.
func partitionDevice(ctx context.Context, dev string, p restoredPart) (node string, release func() error, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	node, err = partitionNode(ctx, f, p.index)
	if err == nil {
		return node, func() error { return nil }, nil
	}
	node, release, lerr := attachPartLoop(dev, p.start, p.size)
	if lerr != nil {
		return "", nil, errors.Join(err, lerr)
	}
	return node, release, nil
}

// partitionNode finds /dev/NAME of partition index of the disk f through
// sysfs (SYS/dev/block/MAJ:MIN/NAME/partition): the kernel re-read the
// table after the restore; devtmpfs may take a moment for the node. It
// waits up to 2 s for the partition and 10 s for its node.
func partitionNode(ctx context.Context, f *os.File, index int) (string, error) {
	dir, err := sysDirOf(f)
	if err != nil {
		return "", err
	}
	var last error
	for i := range 100 {
		last = nil
		es, _ := os.ReadDir(dir)
		for _, e := range es {
			if readSys(filepath.Join(dir, e.Name(), "partition")) == fmt.Sprint(index) {
				node := filepath.Join(defaultRoots.dev, e.Name())
				if _, err := os.Stat(node); err == nil {
					return node, nil
				}
				last = fmt.Errorf("%s: no device node", node)
			}
		}
		if last == nil {
			last = fmt.Errorf("the kernel shows no partition %d under %s", index, dir)
			if i >= 20 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", last
}

// personalizeLinuxPartition mounts one partition (read-write, in a
// temporary directory, always unmounted) and personalizes the Linux root
// it holds, if any. Btrfs roots in a subvolume (Fedora's root, Ubuntu's
// @) are found one level down.
func personalizeLinuxPartition(ctx context.Context, p restoredPart, host string, log *slog.Logger) (changed bool, err error) {
	dir, err := os.MkdirTemp("", "preboot-personalize-")
	if err != nil {
		return false, err
	}
	defer os.Remove(dir)
	if err := mountFS(p.node, dir, p.fstype); err != nil {
		return false, err
	}
	defer func() {
		if uerr := unmountFS(dir); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()
	roots := []string{"."}
	if p.fstype == "btrfs" {
		es, _ := os.ReadDir(dir)
		for i, e := range es {
			if i >= 64 {
				break
			}
			if e.IsDir() {
				roots = append(roots, e.Name())
			}
		}
	}
	for _, sub := range roots {
		root, err := os.OpenRoot(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		ok, err := personalizeLinuxRoot(root, host)
		root.Close()
		if err != nil {
			return changed, err
		}
		if ok {
			changed = true
			log.InfoContext(ctx, "personalized a Linux system", "partition", p.node, "fstype", p.fstype, "root", sub, "hostname", host)
		}
	}
	return changed, nil
}

// personalizeLinuxRoot writes the hostname and a fresh machine-id into
// the system root holds (symbolic links may not leave it), when it looks
// like one (/etc/os-release or /etc/hostname). It reports whether it did.
func personalizeLinuxRoot(root *os.Root, host string) (bool, error) {
	_, e1 := root.Lstat("etc/os-release")
	_, e2 := root.Lstat("etc/hostname")
	if e1 != nil && e2 != nil {
		return false, nil
	}
	if host != "" {
		if err := writeRootFile(root, "etc/hostname", []byte(host+"\n")); err != nil {
			return true, err
		}
		if old, err := readRootFile(root, "etc/hosts", 1<<20); err == nil {
			if nw, ok := setHostsName(old, host); ok {
				if err := writeRootFile(root, "etc/hosts", nw); err != nil {
					return true, err
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("/etc/hosts: %w", err)
		}
	}
	id, err := newMachineID()
	if err != nil {
		return true, err
	}
	if err := writeRootFile(root, "etc/machine-id", []byte(id+"\n")); err != nil {
		return true, err
	}
	if fi, err := root.Lstat("var/lib/dbus/machine-id"); err == nil && fi.Mode().IsRegular() {
		if err := writeRootFile(root, "var/lib/dbus/machine-id", []byte(id+"\n")); err != nil {
			return true, err
		}
	}
	return true, nil
}

func newMachineID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("machine-id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func readRootFile(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return b, nil
}

// writeRootFile replaces name's content (keeping its mode; new files get
// 0644). A symbolic link that leaves root is an error, not followed.
func writeRootFile(root *os.Root, name string, data []byte) error {
	if fi, err := root.Lstat(name); err == nil && !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
		return fmt.Errorf("/%s: not a regular file", name)
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("/%s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("/%s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("/%s: %w", name, err)
	}
	return f.Close()
}

// setHostsName rewrites the 127.0.1.1 line of an /etc/hosts (Debian's
// line for the machine's own name): "127.0.1.1 NAME", or "127.0.1.1
// NAME.DOMAIN NAME" when the old line had a domain. ok is false when
// there is no such line.
func setHostsName(hosts []byte, host string) ([]byte, bool) {
	lines := strings.SplitAfter(string(hosts), "\n")
	ok := false
	for i, l := range lines {
		body := strings.TrimRight(l, "\r\n")
		fs := strings.Fields(body)
		if len(fs) == 0 || fs[0] != "127.0.1.1" {
			continue
		}
		line := "127.0.1.1\t"
		domain := ""
		for _, n := range fs[1:] {
			if strings.HasPrefix(n, "#") {
				break
			}
			if _, d, found := strings.Cut(n, "."); found && d != "" && domain == "" {
				domain = d
			}
		}
		if domain != "" {
			line += host + "." + domain + " "
		}
		line += host
		lines[i] = line + l[len(body):]
		ok = true
	}
	return []byte(strings.Join(lines, "")), ok
}

// personalizeWindowsPartition sets the ComputerName of each sysprep
// answer file on the NTFS partition dev, read with ntfscat and written
// back with ntfscp (no mount).
func personalizeWindowsPartition(ctx context.Context, dev, name string, log *slog.Logger) (bool, error) {
	if _, err := exec.LookPath("ntfscat"); err != nil {
		return false, errors.New("ntfscat (ntfs-3g) is not available")
	}
	changed := false
	for _, p := range unattendPaths {
		var out, errb bytes.Buffer
		cmd := exec.CommandContext(ctx, "ntfscat", dev, p)
		cmd.Stdout, cmd.Stderr = &limitedWriter{w: &out, n: maxUnattend + 1}, &limitedWriter{w: &errb, n: 4096}
		if err := cmd.Run(); err != nil {
			continue // no such file (ntfscat says so on stderr)
		}
		if out.Len() > maxUnattend {
			return changed, fmt.Errorf("%s: larger than %d bytes", p, maxUnattend)
		}
		nw, err := SetComputerName(out.Bytes(), name)
		if err != nil {
			return changed, fmt.Errorf("%s: %w", p, err)
		}
		if bytes.Equal(nw, out.Bytes()) {
			log.InfoContext(ctx, "personalize: the answer file already names the computer", "partition", dev, "file", p, "computer_name", name)
			changed = true
			continue
		}
		tmp, err := os.CreateTemp("", "preboot-unattend-*.xml")
		if err != nil {
			return changed, err
		}
		_, werr := tmp.Write(nw)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(tmp.Name())
			return changed, err
		}
		cp := exec.CommandContext(ctx, "ntfscp", dev, tmp.Name(), p)
		msg, err := cp.CombinedOutput()
		os.Remove(tmp.Name())
		if err != nil {
			return changed, fmt.Errorf("ntfscp %s: %w: %s", p, err, strings.TrimSpace(string(msg)))
		}
		changed = true
		log.InfoContext(ctx, "personalized a Windows answer file", "partition", dev, "file", p, "computer_name", name)
	}
	return changed, nil
}

// limitedWriter keeps the first n bytes and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	k := min(len(p), l.n)
	if k > 0 {
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		l.n -= k
	}
	return len(p), nil
}

// Limits of SetComputerName's parse of an answer file.
const (
	maxXMLTokens = 200000
	maxXMLDepth  = 64
)

// SetComputerName returns the sysprep answer file doc with the value of
// every ComputerName element replaced by name. Without one, it is added
// to the Microsoft-Windows-Shell-Setup component of the specialize pass
// (the component, and the pass, are added when missing). Everything else
// stays byte for byte. doc must be well-formed UTF-8 XML with an unattend
// root; the result is checked to parse again.
func SetComputerName(doc []byte, name string) ([]byte, error) {
	if name == "" || name != bundle.NetBIOSName(name) {
		return nil, fmt.Errorf("computer name %q: want 1-15 letters, digits and '-'", name)
	}
	body := doc
	bom := []byte{}
	if bytes.HasPrefix(body, []byte("\xef\xbb\xbf")) {
		bom, body = body[:3], body[3:]
	}
	if bytes.HasPrefix(body, []byte("\xff\xfe")) || bytes.HasPrefix(body, []byte("\xfe\xff")) {
		return nil, errors.New("UTF-16 answer files are not supported (save it as UTF-8)")
	}
	type span struct{ start, end int } // bytes of body to replace
	var (
		values        []span
		rootSeen      bool
		rootEnd       = -1 // offset of the </unattend> tag
		specEnd       = -1 // offset of the specialize pass's </settings>
		shellAt       = -1 // offset after the specialize Shell-Setup start tag
		arch          string
		depth, tokens int
		inSpecialize  int // depth of the specialize <settings>, 0 = outside
		valueStart    = -1
		valueDepth    int
	)
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.Strict = true
	for {
		tokens++
		if tokens > maxXMLTokens {
			return nil, fmt.Errorf("more than %d XML tokens", maxXMLTokens)
		}
		before := int(dec.InputOffset())
		tok, err := dec.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not well-formed XML: %w", err)
		}
		after := int(dec.InputOffset())
		switch t := tok.(type) {
		case xml.StartElement:
			selfClosing := bytes.HasSuffix(body[before:after], []byte("/>"))
			depth++
			if depth > maxXMLDepth {
				return nil, fmt.Errorf("XML nested deeper than %d", maxXMLDepth)
			}
			if depth == 1 {
				if t.Name.Local != "unattend" {
					return nil, fmt.Errorf("the root element is <%s>, not <unattend>", t.Name.Local)
				}
				if selfClosing {
					return nil, errors.New("an empty <unattend/> document")
				}
				rootSeen = true
			}
			if t.Name.Local == "settings" && depth == 2 && attr(t, "pass") == "specialize" && inSpecialize == 0 && !selfClosing {
				inSpecialize = depth
			}
			if t.Name.Local == "component" {
				if a := attr(t, "processorArchitecture"); a != "" && arch == "" {
					arch = a
				}
				if inSpecialize != 0 && depth == inSpecialize+1 && attr(t, "name") == "Microsoft-Windows-Shell-Setup" && shellAt < 0 && !selfClosing {
					shellAt = after
				}
			}
			if t.Name.Local == "ComputerName" && valueStart < 0 {
				valueStart, valueDepth = after, depth
				if selfClosing {
					// <ComputerName/>: the whole element is replaced (the
					// end element RawToken makes up for it is ignored).
					values = append(values, span{before, after})
					valueStart = -1
				}
			}
		case xml.EndElement:
			if valueStart >= 0 && depth == valueDepth && t.Name.Local == "ComputerName" {
				values = append(values, span{valueStart, before})
				valueStart = -1
			}
			if inSpecialize != 0 && depth == inSpecialize && t.Name.Local == "settings" {
				specEnd = before
				inSpecialize = -1 // only the first specialize pass
			}
			if depth == 1 {
				rootEnd = before
			}
			depth--
		}
	}
	if !rootSeen || rootEnd < 0 || depth != 0 {
		return nil, errors.New("no complete <unattend> document")
	}
	var esc bytes.Buffer
	_ = xml.EscapeText(&esc, []byte(name))
	value := esc.String()
	var out bytes.Buffer
	out.Write(bom)
	switch {
	case len(values) > 0:
		prev := 0
		for _, v := range values {
			out.Write(body[prev:v.start])
			if bytes.HasSuffix(body[v.start:v.end], []byte("/>")) {
				out.WriteString("<ComputerName>" + value + "</ComputerName>")
			} else {
				out.WriteString(value)
			}
			prev = v.end
		}
		out.Write(body[prev:])
	case shellAt >= 0:
		out.Write(body[:shellAt])
		out.WriteString("\n      <ComputerName>" + value + "</ComputerName>")
		out.Write(body[shellAt:])
	default:
		if arch == "" {
			arch = "amd64"
		}
		var a bytes.Buffer
		_ = xml.EscapeText(&a, []byte(arch))
		comp := `  <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="` + a.String() +
			`" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">` + "\n" +
			"      <ComputerName>" + value + "</ComputerName>\n    </component>\n  "
		at := specEnd
		if at < 0 {
			comp = `  <settings pass="specialize">` + "\n  " + comp + "</settings>\n"
			at = rootEnd
		}
		out.Write(body[:at])
		out.WriteString(comp)
		out.Write(body[at:])
	}
	res := out.Bytes()
	d2 := xml.NewDecoder(bytes.NewReader(res[len(bom):]))
	d2.Strict = true
	for range maxXMLTokens + 16 {
		if _, err := d2.Token(); err == io.EOF {
			return res, nil
		} else if err != nil {
			return nil, fmt.Errorf("the edited answer file does not parse: %w", err)
		}
	}
	return nil, errors.New("the edited answer file is too long")
}

func attr(t xml.StartElement, local string) string {
	for _, a := range t.Attr {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}
