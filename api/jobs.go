package api

import (
	"net/http"
	"strconv"

	"github.com/preboot/preboot/store"
)

// JobDetail is a job with its log.
type JobDetail struct {
	store.Job
	Log []store.JobLine `json:"log"`
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
	writeJSON(w, http.StatusOK, JobDetail{Job: j, Log: nonNil(lines)})
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
