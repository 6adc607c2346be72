package peers

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/image"
)

// FuzzVerifyTicket checks that VerifyTicket never panics, fails only with
// its two errors, and accepts exactly the tickets Ticket writes: nothing
// else parses, and a ticket verifies for its own session, chunk and
// secret only, until its expiry.
func FuzzVerifyTicket(f *testing.F) {
	h := image.Sum([]byte("chunk"))
	f.Add(Ticket(testSecret, testSession, h, time.Unix(1_700_000_120, 0)), testSession, h[:], int64(1_700_000_000))
	f.Add("1700000120.AAAA", "s1", h[:], int64(0))
	f.Add("", "", []byte{}, int64(-1))
	f.Fuzz(func(t *testing.T, ticket, session string, hb []byte, now int64) {
		var hh image.Hash
		copy(hh[:], hb)
		err := VerifyTicket(testSecret, session, hh, ticket, time.Unix(now, 0))
		if err != nil && !errors.Is(err, ErrTicket) && !errors.Is(err, ErrTicketExpired) {
			t.Fatalf("unexpected error %v", err)
		}
		if exp, _, perr := parseTicket(ticket); perr == nil {
			if es, _, _ := strings.Cut(ticket, "."); es != strconv.FormatInt(exp, 10) {
				t.Fatalf("non-canonical expiry %q parsed", es)
			}
			if err == nil && ticket != Ticket(testSecret, session, hh, time.Unix(exp, 0)) {
				t.Fatalf("accepted %q, which Ticket does not write", ticket)
			}
		} else if err == nil {
			t.Fatalf("accepted %q that does not parse: %v", ticket, perr)
		}
		// A ticket made for these inputs verifies before its expiry, only
		// with them, and not at or after it.
		tk := Ticket(testSecret, session, hh, time.Unix(now, 0))
		if now > -1<<62 {
			if err := VerifyTicket(testSecret, session, hh, tk, time.Unix(now-1, 0)); err != nil {
				t.Fatalf("own ticket %q: %v", tk, err)
			}
			if err := VerifyTicket(testSecret, session+"x", hh, tk, time.Unix(now-1, 0)); !errors.Is(err, ErrTicket) {
				t.Fatalf("ticket for another session: %v", err)
			}
			if err := VerifyTicket([]byte("k"), session, hh, tk, time.Unix(now-1, 0)); !errors.Is(err, ErrTicket) {
				t.Fatalf("ticket under another secret: %v", err)
			}
		}
		if err := VerifyTicket(testSecret, session, hh, tk, time.Unix(now, 0)); !errors.Is(err, ErrTicketExpired) {
			t.Fatalf("ticket at its expiry: %v", err)
		}
	})
}
