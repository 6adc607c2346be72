package siteauth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/preboot/preboot/jobs"
)

// answers is an upstream that answers from a table (the real one, a
// central server, is exercised by server's TestSiteServesDevicesOfItsSite).
type answers struct {
	scopes map[string]jobs.TokenScope
	calls  int
	down   bool
}

func (a *answers) CallJSON(_ context.Context, method, path string, in, out any) error {
	a.calls++
	if a.down {
		return errors.New("connection refused")
	}
	if method != "POST" || path != "/tokens/introspect" {
		return fmt.Errorf("unexpected %s %s", method, path)
	}
	*(out.(*jobs.TokenScope)) = a.scopes[in.(map[string]string)["token"]]
	return nil
}

func TestCheckCachesPositiveAnswersWithinTheTokensExpiry(t *testing.T) {
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	up := &answers{scopes: map[string]jobs.TokenScope{
		"pbj_a": {Active: true, Job: 1, Read: true, Image: "lab@2", ExpiresAt: now.Add(time.Hour)},
		"pbj_b": {Active: true, Job: 2, Read: true, Image: "lab@2", ExpiresAt: now.Add(5 * time.Second)},
	}}
	c := &Checker{Upstream: up, TTL: 30 * time.Second, MaxEntries: 2, Now: func() time.Time { return now }}
	ctx := context.Background()
	for range 3 {
		ts, err := c.Check(ctx, "pbj_a", "10.0.0.1")
		if err != nil || !ts.Active || ts.Job != 1 {
			t.Fatalf("check: %+v %v", ts, err)
		}
	}
	if up.calls != 1 {
		t.Fatalf("%d upstream calls for three checks of one token, want 1", up.calls)
	}
	// Unknown tokens are not cached.
	for range 2 {
		if ts, err := c.Check(ctx, "pbj_x", "10.0.0.1"); err != nil || ts.Active {
			t.Fatalf("unknown token: %+v %v", ts, err)
		}
	}
	if up.calls != 3 {
		t.Fatalf("%d upstream calls, want 3", up.calls)
	}
	// b expires after 5 s: asked again at 6 s; a only after the TTL.
	c.Check(ctx, "pbj_b", "10.0.0.1")
	now = now.Add(6 * time.Second)
	c.Check(ctx, "pbj_b", "10.0.0.1")
	c.Check(ctx, "pbj_a", "10.0.0.1")
	if up.calls != 5 {
		t.Fatalf("%d upstream calls, want 5 (b again after its expiry, a cached)", up.calls)
	}
	now = now.Add(25 * time.Second)
	c.Check(ctx, "pbj_a", "10.0.0.1")
	if up.calls != 6 {
		t.Fatalf("%d upstream calls, want 6 (a again after the TTL)", up.calls)
	}
	// A revoked token stops working once its cached answer runs out.
	delete(up.scopes, "pbj_a")
	now = now.Add(31 * time.Second)
	if ts, _ := c.Check(ctx, "pbj_a", "10.0.0.1"); ts.Active {
		t.Fatal("a token the upstream no longer knows is still active")
	}
	// Bounded.
	for i := range 10 {
		tok := fmt.Sprintf("pbj_n%d", i)
		up.scopes[tok] = jobs.TokenScope{Active: true, Job: int64(10 + i), ExpiresAt: now.Add(time.Hour)}
		c.Check(ctx, tok, "10.0.0.1")
	}
	if st := c.Stats(); st.Cached > 2 {
		t.Fatalf("%d answers cached, limit 2", st.Cached)
	}
	// The upstream down: an error, not an inactive token.
	up.down = true
	if _, err := c.Check(ctx, "pbj_zz", "10.0.0.1"); err == nil {
		t.Fatal("no error with the upstream down")
	}
}

func TestCheckThrottlesUnknownTokensPerAddress(t *testing.T) {
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	up := &answers{scopes: map[string]jobs.TokenScope{
		"pbj_good": {Active: true, Job: 1, Read: true, Image: "lab@2", ExpiresAt: now.Add(time.Hour)},
	}}
	c := &Checker{Upstream: up, MaxMisses: 3, MissWindow: time.Minute, Now: func() time.Time { return now }}
	ctx := context.Background()
	for i := range 3 {
		if ts, err := c.Check(ctx, fmt.Sprintf("pbj_random%d", i), "10.0.0.66"); err != nil || ts.Active {
			t.Fatalf("unknown token %d: %+v %v", i, ts, err)
		}
	}
	for i := range 20 {
		if _, err := c.Check(ctx, fmt.Sprintf("pbj_more%d", i), "10.0.0.66"); !errors.Is(err, ErrThrottled) {
			t.Fatalf("unknown token past the budget: %v, want ErrThrottled", err)
		}
	}
	if up.calls != 3 {
		t.Fatalf("%d upstream calls for 23 unknown tokens from one address, want 3", up.calls)
	}
	// Another address is not held back by the first one's misses.
	if ts, err := c.Check(ctx, "pbj_good", "10.0.0.7"); err != nil || !ts.Active {
		t.Fatalf("good token from another address: %+v %v", ts, err)
	}
	// A good token already cached still works from the throttled address
	// (its scope's IP binding is the server's check, not the throttle's).
	if ts, err := c.Check(ctx, "pbj_good", "10.0.0.66"); err != nil || !ts.Active {
		t.Fatalf("cached good token: %+v %v", ts, err)
	}
	// The window ends: the address is asked for again.
	now = now.Add(61 * time.Second)
	if _, err := c.Check(ctx, "pbj_late", "10.0.0.66"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if up.calls != 5 {
		t.Fatalf("%d upstream calls, want 5", up.calls)
	}
}
