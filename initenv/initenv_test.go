package initenv_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/preboot/preboot/envbuild"
	"github.com/preboot/preboot/initenv"
)

func TestParseCmdline(t *testing.T) {
	env := initenv.ParseCmdline(`BOOT_IMAGE=/boot/kernel console=ttyS0 console=tty0 preboot.server=http://10.0.0.1:8080/ ` +
		`preboot.token=abc=def preboot.job=42 preboot.debug=1 quiet note="a b c"` + "\n")
	if env.Server != "http://10.0.0.1:8080" || env.Token != "abc=def" || env.Job != "42" || !env.Debug || env.Shell {
		t.Errorf("parsed %+v", env)
	}
	if v, ok := env.Params["quiet"]; !ok || v != "" {
		t.Errorf("flag without value: %q %v", v, ok)
	}
	if env.Params["note"] != "a b c" {
		t.Errorf("quoted value: %q", env.Params["note"])
	}
	if env.Params["console"] != "tty0" {
		t.Errorf("last console wins: %q", env.Params["console"])
	}
	if e := initenv.ParseCmdline("preboot.shell=yes preboot.debug=0"); !e.Shell || e.Debug || e.Server != "" {
		t.Errorf("parsed %+v", e)
	}
}

func TestParseAfter(t *testing.T) {
	for in, want := range map[string]initenv.After{"reboot": initenv.Reboot, "": initenv.Reboot, "poweroff": initenv.PowerOff,
		"none": initenv.Stay, "garbage": initenv.Reboot} {
		if got := initenv.ParseAfter(in); got != want {
			t.Errorf("ParseAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestRunRefusesOutsidePID1(t *testing.T) {
	err := initenv.Run(context.Background(), slog.New(slog.DiscardHandler), func(context.Context, *initenv.Env) error {
		t.Error("handoff called")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "pid 1") {
		t.Errorf("Run outside pid 1: %v", err)
	}
}

// modTree writes a module directory with a small, made-up index.
func modTree(t *testing.T) string {
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": "kernel/drivers/net/e1000.ko:\n" +
			"kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/lib/crc-t10dif.ko\n" +
			"kernel/drivers/scsi/scsi_mod.ko:\nkernel/lib/crc-t10dif.ko:\n" +
			"kernel/arch/crct10dif-pclmul.ko:\nkernel/crypto/crct10dif_generic.ko:\n" +
			"kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko\n" +
			"kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko\n",
		"modules.alias": "alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n" +
			"alias pci:v*d*sv*sd*bc01sc06i01* ahci\n" +
			"alias scsi:t-0x00* sd_mod\n" +
			"alias crypto-crct10dif crct10dif_pclmul\nalias crct10dif crct10dif_pclmul\n" +
			"alias crypto-crct10dif crct10dif_generic\nalias crct10dif crct10dif_generic\n",
		"modules.softdep": "softdep crc_t10dif pre: crct10dif\n",
		"modules.builtin": "kernel/fs/ext4/ext4.ko\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestModuleIndex(t *testing.T) {
	idx, err := initenv.ParseModuleIndex(modTree(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := idx.Match("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"); !slices.Equal(got, []string{"e1000"}) {
		t.Errorf("match e1000: %v", got)
	}
	if got := idx.Match("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"); !slices.Equal(got, []string{"ahci"}) {
		t.Errorf("match ahci: %v", got)
	}
	if got := idx.Match("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00"); len(got) != 0 {
		t.Errorf("VGA matched %v", got)
	}
	files, err := idx.Resolve("sd_mod")
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, f := range files {
		pos[initenv.ModuleName(f)] = i
	}
	for _, order := range [][2]string{{"scsi_mod", "sd_mod"}, {"crc_t10dif", "sd_mod"}, {"crct10dif_generic", "crc_t10dif"}, {"crct10dif_pclmul", "crc_t10dif"}} {
		a, oka := pos[order[0]]
		b, okb := pos[order[1]]
		if !oka || !okb || a > b {
			t.Errorf("%s must load before %s: %v", order[0], order[1], files)
		}
	}
	hard, _ := idx.ResolveHard("sd_mod")
	if len(hard) != 3 {
		t.Errorf("hard deps of sd_mod: %v", hard)
	}
	if _, err := idx.Resolve("ext4"); err != nil {
		t.Errorf("built-in module: %v", err)
	}
	if _, err := idx.Resolve("nosuch"); err == nil {
		t.Error("unknown module resolved")
	}
	if initenv.ModuleName("kernel/drivers/nvme/host/nvme-core.ko.zst") != "nvme_core" {
		t.Error("ModuleName")
	}
}

// sysTree makes a fake /sys/devices with the given modaliases.
func sysTree(t *testing.T, aliases ...string) string {
	sys := t.TempDir()
	for i, a := range aliases {
		d := filepath.Join(sys, "devices", "pci0000:00", "0000:00:0"+string(rune('0'+i))+".0")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "modalias"), []byte(a+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

// recorder stands in for finit_module: the host kernel is not the one the
// modules were built for, and tests must not load modules into it. It
// fails crct10dif_pclmul like a CPU without PCLMULQDQ.
type recorder struct {
	mu    sync.Mutex
	files []string
}

func (r *recorder) load(file string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if initenv.ModuleName(file) == "crct10dif_pclmul" {
		return os.ErrInvalid
	}
	if _, err := os.Stat(file); err != nil && strings.HasPrefix(file, "/nonexistent") {
		return err
	}
	r.files = append(r.files, initenv.ModuleName(file))
	return nil
}

func TestColdplug(t *testing.T) {
	dir := modTree(t)
	idx, err := initenv.ParseModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	sys := sysTree(t, "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
		"pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00")
	rec := &recorder{}
	l := &initenv.Loader{Dir: dir, SysDir: sys, Index: idx, Logger: slog.New(slog.DiscardHandler), Load: rec.load}
	// A disk appears once ahci is "loaded": the second pass must find it.
	go func() {
		for i := 0; i < 100; i++ {
			rec.mu.Lock()
			has := slices.Contains(rec.files, "ahci")
			rec.mu.Unlock()
			if has {
				d := filepath.Join(sys, "devices", "pci0000:00", "0000:00:01.0", "ata1", "host0", "target0:0:0", "0:0:0:0")
				os.MkdirAll(d, 0o755)
				os.WriteFile(filepath.Join(d, "modalias.tmp"), []byte("scsi:t-0x00\n"), 0o444)
				os.Rename(filepath.Join(d, "modalias.tmp"), filepath.Join(d, "modalias"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	mods, err := l.Coldplug(context.Background(), 8, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ahci", "e1000", "libata", "scsi_mod", "sd_mod", "crc_t10dif", "crct10dif_generic"}
	for _, w := range want {
		if !slices.Contains(mods, w) {
			t.Errorf("%s not loaded: %v", w, mods)
		}
	}
	if slices.Contains(mods, "crct10dif_pclmul") {
		t.Error("failed soft dependency reported as loaded")
	}
	// Each module once, dependencies first.
	seen := map[string]bool{}
	for _, m := range rec.files {
		if seen[m] {
			t.Errorf("%s loaded twice", m)
		}
		seen[m] = true
	}
	if slices.Index(rec.files, "scsi_mod") > slices.Index(rec.files, "libata") || slices.Index(rec.files, "libata") > slices.Index(rec.files, "ahci") {
		t.Errorf("load order %v", rec.files)
	}
}

func tgz(t *testing.T, files map[string][]byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestUnpackRejectsEscape(t *testing.T) {
	root := t.TempDir()
	_, err := initenv.Unpack(bytes.NewReader(tgz(t, map[string][]byte{"../../etc/evil": []byte("x")})), root)
	if err == nil {
		t.Error("archive entry climbing out of root accepted")
	}
	files, err := initenv.Unpack(bytes.NewReader(tgz(t, map[string][]byte{"/abs/file": []byte("y"), "a/b/c": []byte("z")})), root)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "abs", "file")); string(b) != "y" || len(files) != 2 {
		t.Errorf("absolute names land under root: %v %q", files, b)
	}
	if _, err := initenv.Unpack(strings.NewReader("not gzip"), root); err == nil {
		t.Error("garbage accepted")
	}
}

// realModule returns e1000.ko from the Debian kernel envbuild caches (the
// same cache as the envbuild tests).
func realModule(t *testing.T) (data []byte, version string) {
	cache := os.Getenv("PREBOOT_ENV_CACHE")
	if cache == "" {
		cache, _ = filepath.Abs(filepath.Join("..", "e2e", "cache"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	v, err := envbuild.CurrentVersion(ctx, cache)
	if err != nil {
		t.Fatal(err)
	}
	k, err := envbuild.CachedKernel(ctx, cache, v, envbuild.DefaultModules, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := initenv.ParseModuleIndex(k.ModDir)
	if err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(filepath.Join(k.ModDir, idx.Files["e1000"]))
	if err != nil {
		t.Fatal(err)
	}
	return data, v
}

func TestApplyUpdateDrivers(t *testing.T) {
	e1000, version := realModule(t)
	logger := slog.New(slog.DiscardHandler)
	var mu sync.Mutex
	var body []byte
	status := http.StatusNotFound
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != initenv.UpdateDriversPath {
			http.NotFound(w, r)
			return
		}
		if status != http.StatusOK {
			http.Error(w, "nope", status)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()

	// The environment has no e1000 (its index is empty); the machine has
	// an Intel 82540EM.
	newLoader := func(root string) (*initenv.Loader, *recorder) {
		dir := filepath.Join(root, "lib", "modules", version)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "modules.dep"), nil, 0o644)
		idx, err := initenv.ParseModuleIndex(dir)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		return &initenv.Loader{Dir: dir, SysDir: sysTree(t, "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"),
			Index: idx, Logger: logger, Load: rec.load}, rec
	}
	ctx := context.Background()

	// Missing (404) and a failing server: tolerated, nothing changes.
	for _, st := range []int{http.StatusNotFound, http.StatusInternalServerError} {
		mu.Lock()
		status = st
		mu.Unlock()
		root := t.TempDir()
		l, rec := newLoader(root)
		mods, err := initenv.ApplyUpdateDrivers(ctx, logger, srv.URL, root, l)
		if err != nil || len(mods) != 0 || len(rec.files) != 0 {
			t.Errorf("status %d: mods %v err %v", st, mods, err)
		}
	}
	// Unreachable server: tolerated.
	{
		root := t.TempDir()
		l, _ := newLoader(root)
		if _, err := initenv.ApplyUpdateDrivers(ctx, logger, "http://127.0.0.1:1", root, l); err != nil {
			t.Errorf("unreachable server: %v", err)
		}
	}
	// Present: unpacked over root, the new driver indexed from its
	// .modinfo and loaded for the device that needs it.
	mu.Lock()
	status = http.StatusOK
	body = tgz(t, map[string][]byte{
		"lib/modules/" + version + "/updates/e1000.ko": e1000,
		"etc/preboot-overlay":                          []byte("hello\n"),
	})
	mu.Unlock()
	root := t.TempDir()
	l, rec := newLoader(root)
	mods, err := initenv.ApplyUpdateDrivers(ctx, logger, srv.URL, root, l)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(mods, []string{"e1000"}) || !slices.Equal(rec.files, []string{"e1000"}) {
		t.Errorf("loaded %v (recorded %v), want e1000", mods, rec.files)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc", "preboot-overlay")); string(b) != "hello\n" {
		t.Error("overlay file not unpacked")
	}
	// A corrupt archive is an error, not a silent skip.
	mu.Lock()
	body = []byte("\x1f\x8b garbage")
	mu.Unlock()
	root = t.TempDir()
	l, _ = newLoader(root)
	if _, err := initenv.ApplyUpdateDrivers(ctx, logger, srv.URL, root, l); err == nil {
		t.Error("corrupt updateDrivers.tgz accepted")
	}
}
