package storetest

import (
	"net/netip"
	"testing"

	"github.com/preboot/preboot/store"
)

func testSites(t *testing.T, st store.Store) {
	a, err := st.CreateSite(ctx, store.Site{Name: "branch-a",
		Subnets:   []netip.Prefix{netip.MustParsePrefix("10.20.0.7/16"), netip.MustParsePrefix("2001:db8:20::/48")},
		ServerURL: "https://site-a.example:8443", Pin: "sha256:00"})
	ok(t, err)
	if a.ID == 0 || a.CreatedAt.IsZero() || a.Subnets[0].String() != "10.20.0.0/16" {
		t.Fatalf("site = %+v", a)
	}
	_, err = st.CreateSite(ctx, store.Site{Name: "branch-a", Subnets: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16")}, ServerURL: "https://x"})
	is(t, err, store.ErrConflict, "branch-a")
	_, err = st.CreateSite(ctx, store.Site{Name: "nosubnet", ServerURL: "https://x"})
	is(t, err, store.ErrInvalid, "subnet")
	_, err = st.CreateSite(ctx, store.Site{Name: "nourl", Subnets: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16")}})
	is(t, err, store.ErrInvalid, "URL")
	b := must[store.Site](t)(st.CreateSite(ctx, store.Site{Name: "a-lab", Subnets: []netip.Prefix{netip.MustParsePrefix("10.20.5.0/24")}, ServerURL: "https://lab:8443"}))

	list := must[[]store.Site](t)(st.Sites(ctx))
	if names(list, func(s store.Site) string { return s.Name }) != "a-lab,branch-a" {
		t.Fatalf("sites = %+v", list)
	}
	got := list[1]
	if got.ServerURL != a.ServerURL || got.Pin != a.Pin || len(got.Subnets) != 2 || got.Subnets[1] != a.Subnets[1] || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("site read back = %+v, want %+v", got, a)
	}
	// The most specific subnet wins; v6 and v4-mapped addresses match.
	for ip, want := range map[string]string{"10.20.5.9": b.Name, "10.20.6.1": a.Name, "::ffff:10.20.9.9": a.Name, "2001:db8:20::5": a.Name, "10.21.0.1": ""} {
		s, found := store.SiteFor(list, netip.MustParseAddr(ip))
		if (want == "") == found || s.Name != want {
			t.Fatalf("site for %s = %q (%v), want %q", ip, s.Name, found, want)
		}
	}
	ok(t, st.DeleteSite(ctx, "branch-a"))
	is(t, st.DeleteSite(ctx, "branch-a"), store.ErrNotFound)
	if list := must[[]store.Site](t)(st.Sites(ctx)); len(list) != 1 || list[0].Name != "a-lab" {
		t.Fatalf("sites after delete = %+v", list)
	}
}

func testTokenScopes(t *testing.T, st store.Store) {
	r := must[store.Token](t)(st.CreateToken(ctx, store.Token{Name: "site-a", Hash: "h-r", Prefix: "pba_r", Scope: store.ScopeReplication}))
	a := must[store.Token](t)(st.CreateToken(ctx, store.Token{Name: "admin", Hash: "h-a", Prefix: "pba_a"}))
	if got := must[store.Token](t)(st.TokenByHash(ctx, "h-r")); got != r || got.Scope != store.ScopeReplication {
		t.Fatalf("replication token read back = %+v", got)
	}
	if got := must[store.Token](t)(st.TokenByHash(ctx, "h-a")); got != a || got.Scope != store.ScopeAdmin {
		t.Fatalf("admin token read back = %+v", got)
	}
	_, err := st.CreateToken(ctx, store.Token{Name: "bad", Hash: "h-b", Scope: "root"})
	is(t, err, store.ErrInvalid, "scope")
}
