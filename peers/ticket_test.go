package peers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/preboot/preboot/image"
)

func TestTicket(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	h := image.Sum([]byte("chunk"))
	tk := Ticket(testSecret, testSession, h, now.Add(TicketLifetime))
	if err := VerifyTicket(testSecret, testSession, h, tk, now); err != nil {
		t.Fatalf("fresh ticket: %v", err)
	}
	if err := VerifyTicket(testSecret, testSession, h, tk, now.Add(TicketLifetime-time.Second)); err != nil {
		t.Fatalf("ticket a second before expiry: %v", err)
	}
	exp, sig, _ := strings.Cut(tk, ".")
	flip := []byte(sig)
	flip[3] ^= 1
	if flip[3] == '-' || flip[3] == '_' { // keep it base64url
		flip[3] = 'A'
	}
	cases := []struct {
		name    string
		secret  []byte
		session string
		h       image.Hash
		ticket  string
		now     time.Time
		want    error
	}{
		{"expired", testSecret, testSession, h, tk, now.Add(TicketLifetime), ErrTicketExpired},
		{"other session", testSecret, "s2", h, tk, now, ErrTicket},
		{"other chunk", testSecret, testSession, image.Sum([]byte("other")), tk, now, ErrTicket},
		{"other secret", []byte("another secret of 32 bytes......"), testSession, h, tk, now, ErrTicket},
		{"no secret", nil, testSession, h, tk, now, ErrTicket},
		{"empty", testSecret, testSession, h, "", now, ErrTicket},
		{"no dot", testSecret, testSession, h, exp + sig, now, ErrTicket},
		{"later expiry", testSecret, testSession, h, "9" + exp + "." + sig, now, ErrTicket},
		{"plus sign", testSecret, testSession, h, "+" + exp + "." + sig, now, ErrTicket},
		{"leading zero", testSecret, testSession, h, "0" + exp + "." + sig, now, ErrTicket},
		{"flipped bit", testSecret, testSession, h, exp + "." + string(flip), now, ErrTicket},
		{"padded", testSecret, testSession, h, tk + "=", now, ErrTicket},
		{"truncated", testSecret, testSession, h, tk[:len(tk)-2], now, ErrTicket},
		{"too long", testSecret, testSession, h, tk + strings.Repeat("A", 200), now, ErrTicket},
		{"two dots", testSecret, testSession, h, tk + ".x", now, ErrTicket},
	}
	for _, c := range cases {
		err := VerifyTicket(c.secret, c.session, c.h, c.ticket, c.now)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// The session's length is part of the MAC: "s1"+hash cannot pass for
	// another split of the same bytes.
	if Ticket(testSecret, "ab", h, now) == Ticket(testSecret, "a", h, now) {
		t.Fatal("different sessions, same ticket")
	}
}
