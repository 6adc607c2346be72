package policy

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tftp"
)

// FuzzGRUBConfig feeds arbitrary TFTP file names — what any host on the
// network can ask for — to the GRUB side of the policy. Whatever comes in,
// the answer is "not found" or a configuration whose lines the server
// wrote: a requested name never reaches a configuration, except the MAC
// address in its canonical form.
func FuzzGRUBConfig(f *testing.F) {
	f.Add("grub/grub.cfg")
	f.Add("grub/grub.cfg-52:54:00:12:34:56")
	f.Add("grub/grub.cfg-52:54:00:12:34:56-menu")
	f.Add("grub/grub.cfg-52:54:00:12:34:56-b0")
	f.Add("grub/grub.cfg-52-54-00-12-34-56-work")
	f.Add("grub/grub.cfg-52:54:00:12:34:56-'; reboot")
	f.Add("grub/x86_64-efi/command.lst")
	e := newEngine(f, "always")
	stageFakeSigned(f, e)
	mkBundle(f, e.Store, "inv", store.KindInventory, `{}`)
	set, _, _ := e.Store.Settings(context.Background())
	set.Menu = store.Menu{Mode: "always", Timeout: store.Duration(time.Second), Bundles: []string{"inv"}, Shell: true}
	if err := e.Store.SetSettings(context.Background(), set); err != nil {
		f.Fatal(err)
	}
	allowed := []string{"#", "set ", "echo ", "configfile ", "menuentry ", "  configfile ", "}", "sleep ", "exit",
		"for preboot_loader in ", "  if search ", "    echo ", "    chainloader ", "    set root=", "    boot", "  fi", "done",
		"if linux ", "  initrd ", "  boot", "fi"}
	f.Fuzz(func(t *testing.T, name string) {
		r, _, err := e.Generate(context.Background(), tftp.Request{
			Peer: netip.MustParseAddrPort("10.0.0.9:2000"), Local: netip.MustParseAddr("10.0.0.1"), Filename: name, Mode: "octet"})
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		body, _ := io.ReadAll(r)
		for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
			ok := false
			for _, p := range allowed {
				if strings.HasPrefix(line, p) {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("unexpected config line %q for %q", line, name)
			}
			if strings.ContainsAny(line, "\r\x00") {
				t.Fatalf("control character in %q for %q", line, name)
			}
		}
		if rest, ok := strings.CutPrefix(name, "grub/grub.cfg-"); ok && len(rest) > 17 {
			if tail := rest[17:]; len(tail) > 3 && strings.Contains(string(body), tail) && !strings.Contains(string(body), "-"+strings.TrimPrefix(tail, "-")+"\n") {
				t.Fatalf("requested name part %q echoed into the config", tail)
			}
		}
	})
}
