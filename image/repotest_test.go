package image_test

import (
	"testing"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/repotest"
)

// TestRepoConformanceDir runs the repository conformance suite on the
// directory backend (image/s3store runs it on a bucket).
func TestRepoConformanceDir(t *testing.T) {
	repotest.Run(t, func(t *testing.T, opts image.RepoOptions) *image.Repo {
		repo, err := image.OpenRepo(t.TempDir(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return repo
	})
}
