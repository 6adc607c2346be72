package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/preboot/preboot/store"
)

// DHCPLease is one lease of the embedded DHCPv4 or DHCPv6 server.
type DHCPLease struct {
	// Family is 4 or 6.
	Family int `json:"family"`
	store.Lease
	// Active: the address is bound, offered or quarantined now (not
	// released, not expired).
	Active bool `json:"active"`
}

// listLeases serves GET /api/v1/dhcp/leases: DHCPv4 leases by address,
// then DHCPv6 ones; ?family=4|6 keeps one, ?active=true drops the free
// ones, ?limit caps the whole list.
func (h *Handler) listLeases(w http.ResponseWriter, r *http.Request) {
	ls, ok := h.leases()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("the store (%T) keeps no DHCP leases", h.Store))
		return
	}
	q := r.URL.Query()
	var families []int
	switch q.Get("family") {
	case "":
		families = []int{4, 6}
	case "4":
		families = []int{4}
	case "6":
		families = []int{6}
	default:
		writeError(w, http.StatusBadRequest, "family: want 4 or 6")
		return
	}
	activeOnly := false
	switch q.Get("active") {
	case "", "false":
	case "true":
		activeOnly = true
	default:
		writeError(w, http.StatusBadRequest, "active: want true or false")
		return
	}
	n, ok := limit(w, r)
	if !ok {
		return
	}
	now := time.Now()
	out := []DHCPLease{}
	for _, fam := range families {
		// Page through the family's leases (free ones are filtered out
		// here, so a page may yield less than it holds).
		for off := 0; len(out) < n; {
			page, err := ls.LeaseList(r.Context(), store.LeaseFilter{IPv6: fam == 6, Page: store.Page{Limit: 1000, Offset: off}})
			if err != nil {
				h.fail(w, r, fmt.Errorf("leases: %w", err))
				return
			}
			for _, l := range page {
				active := !l.Free(now)
				if (active || !activeOnly) && len(out) < n {
					out = append(out, DHCPLease{Family: fam, Lease: l, Active: active})
				}
			}
			if len(page) < 1000 {
				break
			}
			off += len(page)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// leases is Options.Leases, else the store's (under a NotifyingStore).
func (h *Handler) leases() (store.Leases, bool) {
	if h.Leases != nil {
		return h.Leases, true
	}
	st := h.Store
	if ns, ok := st.(NotifyingStore); ok {
		st = ns.Store
	}
	ls, ok := st.(store.Leases)
	return ls, ok
}
