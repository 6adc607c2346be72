package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
)

// MediaPath is where a machine booted from the manual preboot medium
// (`preboot env iso|usb`, /files/preboot.iso) asks for its work: the
// medium's counterpart of iPXE's /boot.ipxe.
const MediaPath = "/api/v1/agent/media"

// MediaRequest is what the imaging environment booted from the medium
// tells the server about the machine: the NIC it got its address on and
// what it read from SMBIOS, as iPXE does for a PXE boot.
type MediaRequest struct {
	MAC          string `json:"mac"`
	UUID         string `json:"uuid,omitempty"`
	Serial       string `json:"serial,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
	AssetTag     string `json:"asset_tag,omitempty"`
	// Arch is "bios" or "efi-x64" (the names of a PXE boot's firmware).
	Arch string `json:"arch,omitempty"`
}

// Media answer actions.
const (
	MediaWork   = "work"   // run job Job with token Token
	MediaManual = "manual" // nothing to run from the medium: manual mode
	MediaWait   = "wait"   // the device's job is open elsewhere: ask again after RetryAfter seconds
)

// MediaAnswer is the server's answer to a MediaRequest.
type MediaAnswer struct {
	Action string `json:"action"`
	Reason string `json:"reason"`
	MAC    string `json:"mac"`
	// Job and Token: the job to run (GET /api/v1/agent/job with the token
	// as bearer); the token works only from the address that asked.
	Job        int64  `json:"job,omitempty"`
	Token      string `json:"token,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Bundle     string `json:"bundle,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`
}

// maxMediaRequest bounds the request body.
const maxMediaRequest = 16 << 10

// DecodeMediaRequest reads and checks a MediaRequest: a valid MAC, at
// most maxMediaRequest bytes of JSON, hardware strings cleaned and
// bounded as the iPXE query's are.
func DecodeMediaRequest(r io.Reader) (MediaRequest, error) {
	var q MediaRequest
	b, err := io.ReadAll(io.LimitReader(r, maxMediaRequest+1))
	if err != nil {
		return q, fmt.Errorf("media request: %w", err)
	}
	if len(b) > maxMediaRequest {
		return q, fmt.Errorf("media request: more than %d bytes", maxMediaRequest)
	}
	if err := json.Unmarshal(b, &q); err != nil {
		return q, fmt.Errorf("media request: %w", err)
	}
	mac, err := store.NormalizeMAC(q.MAC)
	if err != nil {
		return q, fmt.Errorf("media request: %w", err)
	}
	q.MAC = mac
	q.UUID, q.Serial, q.Manufacturer = clean(q.UUID), clean(q.Serial), clean(q.Manufacturer)
	q.Product, q.AssetTag = clean(q.Product), clean(q.AssetTag)
	switch q.Arch {
	case "", "bios", "efi-x64", "efi-ia32", "efi-arm64":
	default:
		return q, fmt.Errorf("media request: arch %q: want bios, efi-x64, efi-ia32 or efi-arm64", clean(q.Arch))
	}
	return q, nil
}

// Media decides what a machine booted from the manual preboot medium
// does, as the boot policy decides for a PXE boot: the device is seen
// (registered on first contact, with its hardware), rules and the
// unregistered default apply, and an assigned bundle that runs in the
// imaging environment becomes a job whose token is handed back. Bundles
// that need a network boot (os-install, local-boot), the menu and local
// boot become the medium's manual mode. ip is the address the request
// came from: the job's token works only from it.
func (e *Engine) Media(ctx context.Context, q MediaRequest, ip string) (MediaAnswer, error) {
	ctx = withClient(ctx, ip)
	seen := store.Sighting{MAC: q.MAC, UUID: q.UUID, Serial: q.Serial, Manufacturer: q.Manufacturer, Product: q.Product,
		AssetTag: q.AssetTag, Arch: q.Arch, IP: ip, Time: e.now()}
	dev, created, err := e.Store.SeeDevice(ctx, seen)
	if err != nil {
		return MediaAnswer{}, err
	}
	msg := "manual preboot medium: request from " + orUnknown(ip)
	if hw := strings.Join(nonEmpty(strings.TrimSpace(dev.Manufacturer+" "+dev.Product), dev.Arch), ", "); hw != "" {
		msg += " (" + hw + ")"
	}
	if created {
		msg = "first contact: " + msg
	}
	if err := e.event(ctx, q.MAC, store.EventBoot, msg); err != nil {
		return MediaAnswer{}, err
	}
	d, err := e.Decide(ctx, dev)
	if err != nil {
		return MediaAnswer{}, err
	}
	manual := func(reason string) (MediaAnswer, error) {
		if err := e.event(ctx, q.MAC, store.EventPolicy, "manual preboot medium: manual mode: "+reason); err != nil {
			return MediaAnswer{}, err
		}
		return MediaAnswer{Action: MediaManual, Reason: reason, MAC: q.MAC}, nil
	}
	if d.Action == ActionIgnore {
		return manual(d.Reason)
	}
	if d.Register {
		if d, err = e.register(ctx, dev, d); err != nil {
			return MediaAnswer{}, err
		}
	}
	if d.Action != ActionBundle || d.Bundle == nil {
		return manual("nothing assigned (" + d.Reason + ")")
	}
	b := d.Bundle
	if !store.RunsAgent(b.Kind) {
		return manual(fmt.Sprintf("bundle %s (%s) needs a network boot; nothing to run from the medium", b.Name, b.Kind))
	}
	if e.Jobs == nil {
		return MediaAnswer{}, errors.New("this server runs no job service")
	}
	job, token, err := e.Jobs.Start(ctx, jobs.StartRequest{MAC: q.MAC, Bundle: *b, Assignment: d.Assignment, Why: "manual preboot medium: " + d.Reason, ClientIP: ip})
	var busy *jobs.BusyError
	switch {
	case errors.As(err, &busy):
		return MediaAnswer{Action: MediaWait, MAC: q.MAC, RetryAfter: int(busyRetry.Seconds()),
			Reason: fmt.Sprintf("job %d is %s for this machine (handed to %s)", busy.Job.ID, busy.Job.State, orUnknown(busy.Job.ClientIP))}, nil
	case errors.Is(err, jobs.ErrRateLimited):
		return manual("too many boots into work for this machine; try again later")
	case err != nil:
		return MediaAnswer{}, fmt.Errorf("start %s job for %s: %w", b.Kind, q.MAC, err)
	}
	if err := e.event(ctx, q.MAC, store.EventWork, fmt.Sprintf("manual preboot medium: bundle %s in the imaging environment (job %d, %s)", b.Name, job.ID, d.Source)); err != nil {
		return MediaAnswer{}, err
	}
	return MediaAnswer{Action: MediaWork, Reason: d.Reason, MAC: q.MAC, Job: job.ID, Token: token, Kind: b.Kind, Bundle: b.Name}, nil
}

// MediaHandler serves POST MediaPath. Like /boot.ipxe it needs no
// credentials (the machine has none yet); requests a web browser makes
// for a page are refused, and the body must be JSON.
func (e *Engine) MediaHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if fromBrowser(r) {
			mediaError(w, http.StatusForbidden, "this endpoint is for the manual preboot medium, not for web browsers")
			return
		}
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
			mediaError(w, http.StatusUnsupportedMediaType, "want Content-Type: application/json")
			return
		}
		q, err := DecodeMediaRequest(r.Body)
		if err != nil {
			mediaError(w, http.StatusBadRequest, err.Error())
			return
		}
		ans, err := e.Media(ctx, q, clientIP(r))
		if err != nil {
			e.logger().ErrorContext(ctx, "manual preboot medium: policy failed", "mac", q.MAC, "err", err)
			mediaError(w, http.StatusInternalServerError, "server error: see the server log")
			return
		}
		e.logger().InfoContext(ctx, "manual preboot medium", "mac", q.MAC, "action", ans.Action, "job", ans.Job, "reason", ans.Reason)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(ans)
	})
}

func mediaError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
