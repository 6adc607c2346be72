package policy

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/preboot/preboot/store"
)

// IsImaging reports whether work runs in the imaging environment.
func IsImaging(w store.Work) bool {
	return w.Kind == store.WorkCapture || w.Kind == store.WorkRestore
}

// imagingBootSpec is the imaging environment boot of one job.
type imagingBootSpec struct {
	Job     int64
	Kernel  string
	Initrd  []string
	Cmdline string
}

// imagingBoot starts a job for the work and returns the imaging
// environment's kernel, initrd and command line carrying the server URL and
// the job's token (the seed's phase 8). When the environment has not been
// built the job fails at once with a message that says what to do.
func (e *Engine) imagingBoot(ctx context.Context, base string, w store.Work) (imagingBootSpec, error) {
	if e.Jobs == nil {
		return imagingBootSpec{}, fmt.Errorf("imaging work for %s, but this server runs no job service", w.MAC)
	}
	job, token, err := e.Jobs.Start(ctx, w)
	if err != nil {
		return imagingBootSpec{}, fmt.Errorf("start %s job for %s: %w", w.Kind, w.MAC, err)
	}
	kernel, initrd := e.Imaging.Kernel, e.Imaging.Initrd
	for _, f := range []string{kernel, initrd} {
		if !e.exists(f) {
			msg := fmt.Sprintf("the imaging environment is missing (%s not in the TFTP root): run `preboot env build --out %s`", f, e.TFTPRoot+"/"+dirOf(kernel))
			if err := e.Jobs.Fail(ctx, job.ID, msg); err != nil {
				return imagingBootSpec{}, err
			}
			return imagingBootSpec{}, fmt.Errorf("job %d failed: %s", job.ID, msg)
		}
	}
	u, err := url.Parse(base)
	if err != nil {
		return imagingBootSpec{}, err
	}
	cmdline := strings.TrimSpace(fmt.Sprintf("%s preboot.server=%s://%s preboot.token=%s preboot.job=%d",
		e.Imaging.Cmdline, u.Scheme, u.Host, token, job.ID))
	return imagingBootSpec{Job: job.ID, Kernel: kernel, Initrd: []string{initrd}, Cmdline: cmdline}, nil
}

func dirOf(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return "."
}
