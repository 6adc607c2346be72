package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// efiFirst is first's request from EFI iPXE.
const efiFirst = "http://10.0.0.1:8080/boot.ipxe?mac=52-54-00-12-34-56&uuid=4c4c4544-0001&serial=SN%201&manufacturer=QEMU&product=Standard%20PC%20%28Q35%29&arch=x86_64&platform=efi"

// TestLocalBootMethodPerGroup: a local-boot bundle's method, assigned to a
// dynamic group of one model, decides how those machines leave iPXE for
// their disk; other machines keep the server's default, and a device's
// own local-boot bundle wins over its group's.
func TestLocalBootMethodPerGroup(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	st := e.Store
	exit := mkBundle(t, st, "local-exit", store.KindLocalBoot, `{"method":"exit"}`)
	sanboot := mkBundle(t, st, "local-sanboot", store.KindLocalBoot, `{"method":"sanboot"}`)

	// Server default before any assignment: sanboot on BIOS.
	body := get(t, e, first)
	mustContain(t, body, "iseq ${platform} pcbios || exit\nsanboot --no-describe --drive 0x80 || exit\n")

	// The model "Standard PC (i440FX)" exits to the firmware.
	if _, err := st.CreateGroup(ctx, store.Group{Name: "i440fx", Priority: 10, Match: `product = "Standard PC (i440FX)"`}); err != nil {
		t.Fatal(err)
	}
	assign(t, st, store.Assignment{BundleID: exit.ID, Group: "i440fx"})
	body = get(t, e, first)
	if strings.Contains(body, "sanboot") || !strings.HasSuffix(body, ", booting the local disk\nexit\n") {
		t.Fatalf("group method exit:\n%s", body)
	}
	mustContain(t, body, "bundle local-exit boots the local disk (method exit)")
	evs, err := st.Events(ctx, store.EventFilter{MAC: mac, Kind: store.EventLocalBoot})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || !strings.Contains(evs[0].Message, "(method exit)") {
		t.Fatalf("localboot events: %+v", evs)
	}

	// Another model (Q35, EFI) is not in the group: the server's default,
	// which on UEFI is exit by way of the platform check.
	other := strings.Replace(efiFirst, "52-54-00-12-34-56", "52-54-00-aa-bb-cc", 1)
	body = get(t, e, other)
	mustContain(t, body, "iseq ${platform} pcbios || exit\nsanboot --no-describe --drive 0x80 || exit\n")
	if strings.Contains(body, "(method") {
		t.Fatalf("default method named a bundle's:\n%s", body)
	}

	// The device's own assignment beats its group's.
	assign(t, st, store.Assignment{BundleID: sanboot.ID, MAC: mac})
	body = get(t, e, first)
	mustContain(t, body, "(method sanboot)", "sanboot --no-describe --drive 0x80 || exit\n")

	// With the server's default set to exit, "sanboot" still sanboots.
	e.Boot.LocalBootBIOS = "exit"
	mustContain(t, get(t, e, first), "sanboot --no-describe --drive 0x80")
}

// TestLocalBootMethodScripts: each method's iPXE commands, and that the
// generated script holds only commands the policy emits.
func TestLocalBootMethodScripts(t *testing.T) {
	e := newEngine(t, "never")
	for method, want := range map[string]string{
		"":        "iseq ${platform} pcbios || exit\nsanboot --no-describe --drive 0x80 || exit\n",
		"exit":    "exit\n",
		"sanboot": "iseq ${platform} pcbios || exit\nsanboot --no-describe --drive 0x80 || exit\n",
	} {
		if got := e.localBootBy(method); got != want {
			t.Errorf("method %q: %q, want %q", method, got, want)
		}
	}
	e.Boot.LocalBootBIOS = "exit"
	if got := e.localBootBy(""); got != "exit\n" {
		t.Errorf("default with --local-boot-bios exit: %q", got)
	}
	// A bundle of another kind, or without a method, sets nothing.
	if m := localBootMethod(&store.Bundle{Kind: store.KindInventory, Params: []byte(`{"method":"exit"}`)}); m != "" {
		t.Errorf("inventory bundle gave method %q", m)
	}
	if m := localBootMethod(&store.Bundle{Kind: store.KindLocalBoot, Params: []byte(`{}`)}); m != "" {
		t.Errorf("local-boot bundle without method gave %q", m)
	}
	if m := localBootMethod(nil); m != "" {
		t.Errorf("nil bundle gave %q", m)
	}
}
