package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/timing"
)

// JobDetail is a job with its log.
type JobDetail struct {
	store.Job
	Log []store.JobLine `json:"log"`
	// TimeReport explains the job's time breakdown (Job.Timing) with the
	// device's disk, link and CPUs from its inventory.
	TimeReport *timing.Report `json:"time_report,omitempty"`
}

func (h *Handler) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.JobFilter{State: q.Get("state"), Bundle: q.Get("bundle"), Open: q.Get("open") == "true"}
	switch f.State {
	case "", store.JobPending, store.JobBooting, store.JobRunning, store.JobSucceeded, store.JobFailed, store.JobCancelled:
	default:
		writeError(w, http.StatusBadRequest, "state: want pending, booting, running, succeeded, failed or cancelled")
		return
	}
	var ok bool
	if f.MAC, ok = queryMAC(w, r, "device"); !ok {
		return
	}
	if f.BeforeID, ok = queryInt64(w, r, "before"); !ok {
		return
	}
	if f.Limit, ok = limit(w, r); !ok {
		return
	}
	js, err := h.Store.Jobs(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(js))
}

// limit reads ?limit= for lists that page by id (1..10000, default 100).
func limit(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 100, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 10000 {
		writeError(w, http.StatusBadRequest, "limit: want 1..10000")
		return 0, false
	}
	return n, true
}

func (h *Handler) getJob(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	j, err := h.Store.Job(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	lines, err := h.Store.JobLog(r.Context(), id, 1000)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rep, err := h.timeReport(r.Context(), &j)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, JobDetail{Job: j, Log: nonNil(lines), TimeReport: rep})
}

// timeReport explains j's time breakdown with what the device's inventory
// says about its disk, link and CPUs (nil when the job has none). It
// rewrites j.Timing as the breakdown with its derived figures (what jobs
// stores already has them).
func (h *Handler) timeReport(ctx context.Context, j *store.Job) (*timing.Report, error) {
	if len(j.Timing) == 0 {
		return nil, nil
	}
	b, err := timing.Parse(j.Timing)
	if err != nil || b == nil {
		h.Logger.WarnContext(ctx, "job timing unreadable: not shown", "job", j.ID, "err", err)
		j.Timing = nil
		return nil, nil
	}
	if j.Timing, err = json.Marshal(b); err != nil {
		return nil, err
	}
	var m *timing.Machine
	d, err := h.Store.Device(ctx, j.MAC)
	switch {
	case err == nil:
		m = timing.FromInventory(d.Info, j.MAC, b.Disk)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	return timing.Explain(b, m), nil
}

func (h *Handler) getJobLog(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	n, ok := limit(w, r)
	if !ok {
		return
	}
	if _, err := h.Store.Job(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	lines, err := h.Store.JobLog(r.Context(), id, n)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(lines))
}

func (h *Handler) cancelJob(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	j, err := h.Jobs.Cancel(r.Context(), id, ActorFrom(r.Context()))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.audit(r, j.MAC, "job "+strconv.FormatInt(j.ID, 10)+" cancelled")
	writeJSON(w, http.StatusOK, j)
}
