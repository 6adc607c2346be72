package policy

import (
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/tftp"
)

// An os-install bundle's secrets are in the boot script or pxelinux
// config of its hand-out (it opted in), in no job record, and never in a
// boot script of a bundle that did not opt in.
func TestOSInstallSecretsOnlyInOptedInHandOut(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	b := osInstall(t, e.Store, "ks", `{"kernel":"boot/k","cmdline":"inst.ks=https://ks/x rootpw={{secret:root}}","secrets":{"root":"s3cr3t!"},"secrets_in_boot_script":true}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	body := get(t, e, first)
	mustContain(t, body, "kernel http://10.0.0.1:8080/files/boot/k inst.ks=https://ks/x rootpw=s3cr3t! || goto failed")
	js, err := e.Store.Jobs(ctx, store.JobFilter{MAC: mac})
	if err != nil || len(js) != 1 {
		t.Fatalf("jobs: %+v %v", js, err)
	}
	if strings.Contains(string(js[0].Params), "s3cr3t!") || !strings.Contains(string(js[0].Params), `"root":"(secret)"`) {
		t.Fatalf("job params hold the secret: %s", js[0].Params)
	}
	evs, _ := e.Store.Events(ctx, store.EventFilter{MAC: mac, Limit: 100})
	for _, ev := range evs {
		if strings.Contains(ev.Message, "s3cr3t!") {
			t.Fatalf("event holds the secret: %+v", ev)
		}
	}

	// A chain URL: the chain line has the value, the echoed lines do not.
	c := osInstall(t, e.Store, "chain", `{"chain":"https://ks/boot.ipxe?t={{secret:t}}","secrets":{"t":"tok-123"},"secrets_in_boot_script":true}`)
	ca := assign(t, e.Store, store.Assignment{BundleID: c.ID, MAC: mac, Force: true})
	body = get(t, e, first)
	mustContain(t, body, "\nchain https://ks/boot.ipxe?t=tok-123 || goto failed\n")
	if strings.Count(body, "tok-123") != 1 {
		t.Fatalf("secret echoed:\n%s", body)
	}

	// Parameters that name a secret without the opt-in (stored before
	// validation knew secrets, or written around it) expand nothing.
	raw := json.RawMessage(`{"kernel":"boot/k","cmdline":"rootpw={{secret:root}}","secrets":{"root":"n0tme"},"loader":"ipxe"}`)
	n, err := e.Store.CreateBundle(ctx, store.Bundle{Name: "raw", Kind: store.KindOSInstall, Params: raw})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Store.DeleteAssignment(ctx, ca.ID); err != nil {
		t.Fatal(err)
	}
	assign(t, e.Store, store.Assignment{BundleID: n.ID, MAC: mac, Force: true})
	body = get(t, e, first)
	mustContain(t, body, "rootpw={{secret:root}}")
	if strings.Contains(body, "n0tme") {
		t.Fatalf("secret without opt-in in the script:\n%s", body)
	}
}

func TestPXELinuxSecretsOnlyInOptedInConfig(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, "never")
	req := func() string {
		t.Helper()
		r, _, err := e.Generate(ctx, tftp.Request{Peer: netip.MustParseAddrPort("10.0.0.9:2000"), Filename: "pxelinux.cfg/01-52-54-00-12-34-56", Mode: "octet"})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		return string(b)
	}
	p := osInstall(t, e.Store, "pxe", `{"kernel":"boot/kernel","cmdline":"ks=http://x/ks.cfg pw={{secret:pw}}","secrets":{"pw":"$ecret"},"secrets_in_boot_script":true,"loader":"pxelinux"}`)
	assign(t, e.Store, store.Assignment{BundleID: p.ID, MAC: mac, Once: true})
	if cfg := req(); !strings.Contains(cfg, "  APPEND ks=http://x/ks.cfg pw=$ecret\n") {
		t.Fatalf("config:\n%s", cfg)
	}
	raw := json.RawMessage(`{"kernel":"boot/kernel","cmdline":"pw={{secret:pw}}","secrets":{"pw":"n0tme"},"loader":"pxelinux"}`)
	n, err := e.Store.CreateBundle(ctx, store.Bundle{Name: "raw", Kind: store.KindOSInstall, Params: raw})
	if err != nil {
		t.Fatal(err)
	}
	assign(t, e.Store, store.Assignment{BundleID: n.ID, MAC: mac, Force: true})
	if cfg := req(); strings.Contains(cfg, "n0tme") || !strings.Contains(cfg, "APPEND pw={{secret:pw}}") {
		t.Fatalf("config without opt-in:\n%s", cfg)
	}
}
