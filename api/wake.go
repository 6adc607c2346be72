package api

import (
	"context"
	"net/http"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/wake"
)

// WakeRequest is the body of POST /api/v1/wake.
type WakeRequest struct {
	Devices []string `json:"devices"`
}

// WakeResponse lists, per device, where its magic packet went.
type WakeResponse struct {
	Results []wake.Result `json:"results"`
}

func (h *Handler) wakeOff(w http.ResponseWriter) bool {
	if h.Waker == nil {
		writeError(w, http.StatusServiceUnavailable, "Wake-on-LAN is not available on this server")
		return true
	}
	return false
}

// wakeDevices: POST /api/v1/wake. Every device must be known, else
// nothing is sent.
func (h *Handler) wakeDevices(w http.ResponseWriter, r *http.Request) {
	if h.wakeOff(w) {
		return
	}
	var req WakeRequest
	if !decode(w, r, &req) {
		return
	}
	devs, err := h.Waker.Devices(r.Context(), req.Devices)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.wake(w, r, devs)
}

// wakeDevice: POST /api/v1/devices/{mac}/wake.
func (h *Handler) wakeDevice(w http.ResponseWriter, r *http.Request) {
	if h.wakeOff(w) {
		return
	}
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	devs, err := h.Waker.Devices(r.Context(), []string{mac})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.wake(w, r, devs)
}

// wakeGroup: POST /api/v1/groups/{name}/wake (static members and the
// devices its expression matches).
func (h *Handler) wakeGroup(w http.ResponseWriter, r *http.Request) {
	if h.wakeOff(w) {
		return
	}
	devs, err := h.Waker.GroupDevices(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.wake(w, r, devs)
}

func (h *Handler) wake(w http.ResponseWriter, r *http.Request, devs []store.Device) {
	// The packets go out even if the client goes away meanwhile.
	ctx := context.WithoutCancel(r.Context())
	res, err := h.Waker.Wake(ctx, devs, ActorFrom(r.Context()), wake.CauseAdmin)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, WakeResponse{Results: nonNil(res)})
}

// wakeRelay: POST /api/v1/wake/relay — another Preboot server asks this
// one to send a device's magic packet on its segments (docs/wake.md,
// relays). The device need not be known here.
func (h *Handler) wakeRelay(w http.ResponseWriter, r *http.Request) {
	if h.wakeOff(w) {
		return
	}
	var req wake.RelayRequest
	if !decode(w, r, &req) {
		return
	}
	res, err := h.Waker.Relayed(context.WithoutCancel(r.Context()), req, ActorFrom(r.Context()))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
