package peers

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/preboot/preboot/image"
)

// TicketLifetime is how long a ticket the tracker signs stays valid.
const TicketLifetime = 2 * time.Minute

// maxTicketLen bounds what VerifyTicket looks at: 20 digits of expiry, a
// dot and 43 characters of MAC fit well inside it.
const maxTicketLen = 128

// Ticket errors; both mean 403 Forbidden.
var (
	// ErrTicket: the ticket is missing, malformed, or not signed with the
	// session's secret for this session and chunk.
	ErrTicket = errors.New("invalid peer ticket")
	// ErrTicketExpired: a genuine ticket whose expiry has passed.
	ErrTicketExpired = errors.New("peer ticket expired")
)

var ticketEnc = base64.RawURLEncoding.Strict()

// Ticket returns a ticket allowing its bearer to fetch the chunk h of
// session from any peer of that session until expiry (whole seconds,
// rounded down). Its form is "EXPIRY.MAC": the Unix expiry in decimal and
// the base64url (unpadded) HMAC-SHA256, keyed by secret, over the session,
// the hash and the expiry.
func Ticket(secret []byte, session string, h image.Hash, expiry time.Time) string {
	exp := expiry.Unix()
	return strconv.FormatInt(exp, 10) + "." + ticketEnc.EncodeToString(ticketMAC(secret, session, h, exp))
}

// ticketMAC is HMAC-SHA256(secret, label | len(session) | session | hash |
// expiry): lengths are fixed or prefixed, so no two inputs share a message.
func ticketMAC(secret []byte, session string, h image.Hash, exp int64) []byte {
	m := hmac.New(sha256.New, secret)
	var n [8]byte
	m.Write([]byte("preboot peer ticket v1\x00"))
	binary.BigEndian.PutUint64(n[:], uint64(len(session)))
	m.Write(n[:])
	m.Write([]byte(session))
	m.Write(h[:])
	binary.BigEndian.PutUint64(n[:], uint64(exp))
	m.Write(n[:])
	return m.Sum(nil)
}

// parseTicket splits a ticket into its expiry and MAC. Only the canonical
// form Ticket writes is accepted.
func parseTicket(ticket string) (int64, []byte, error) {
	if len(ticket) > maxTicketLen {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrTicket, len(ticket))
	}
	es, ms, ok := strings.Cut(ticket, ".")
	if !ok {
		return 0, nil, fmt.Errorf("%w: no expiry", ErrTicket)
	}
	exp, err := strconv.ParseInt(es, 10, 64)
	if err != nil || es != strconv.FormatInt(exp, 10) {
		return 0, nil, fmt.Errorf("%w: bad expiry", ErrTicket)
	}
	mac, err := ticketEnc.DecodeString(ms)
	if err != nil || len(mac) != sha256.Size {
		return 0, nil, fmt.Errorf("%w: bad signature encoding", ErrTicket)
	}
	return exp, mac, nil
}

// VerifyTicket checks that ticket was signed with secret for session and
// chunk h and has not expired at now. The signature is compared in
// constant time. An empty secret accepts nothing. The error wraps
// ErrTicket or ErrTicketExpired.
func VerifyTicket(secret []byte, session string, h image.Hash, ticket string, now time.Time) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: no session secret", ErrTicket)
	}
	exp, mac, err := parseTicket(ticket)
	if err != nil {
		return err
	}
	if !hmac.Equal(mac, ticketMAC(secret, session, h, exp)) {
		return fmt.Errorf("%w: not signed for this session and chunk", ErrTicket)
	}
	if now.Unix() >= exp {
		return fmt.Errorf("%w at %s", ErrTicketExpired, time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return nil
}
