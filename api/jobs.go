package api

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/preboot/preboot/store"
)

var imageName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidImageName says what is wrong with an image name, if anything.
func ValidImageName(name string) error {
	if !imageName.MatchString(name) {
		return fmt.Errorf("image %q: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// JobDetail is a job with its log.
type JobDetail struct {
	store.Job
	Log []store.JobLine `json:"log"`
}

func (h *Handler) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.JobFilter{State: q.Get("state"), Open: q.Get("open") == "true"}
	var ok bool
	if f.MAC, f.Limit, ok = macAndLimit(w, r); !ok {
		return
	}
	js, err := h.Store.Jobs(r.Context(), f)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if js == nil {
		js = []store.Job{}
	}
	writeJSON(w, http.StatusOK, js)
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("job id %q: want a positive number", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (h *Handler) getJob(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	j, err := h.Store.Job(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	lines, err := h.Store.JobLog(r.Context(), id, 1000)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if lines == nil {
		lines = []store.JobLine{}
	}
	writeJSON(w, http.StatusOK, JobDetail{Job: j, Log: lines})
}

var errAlreadyOver = errors.New("job already ended")

func (h *Handler) cancelJob(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	j, err := h.Store.UpdateJob(r.Context(), id, func(j *store.Job) error {
		if store.JobFinished(j.State) {
			return fmt.Errorf("job %d is %s: %w", j.ID, j.State, errAlreadyOver)
		}
		j.State, j.FinishedAt, j.Error = store.JobCancelled, time.Now(), "cancelled by an administrator"
		return nil
	})
	if errors.Is(err, errAlreadyOver) {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.audit(r, j.MAC, fmt.Sprintf("job %d cancelled", j.ID))
	writeJSON(w, http.StatusOK, j)
}
