package console

import (
	"net/http"

	"github.com/preboot/preboot/image"
)

// imagePage is the image explorer: /console/images/{name}, name an image
// reference (NAME or NAME@VERSION).
func (h *Handler) imagePage(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("name")
	if image.ValidRef(ref) != nil {
		h.notFound(w, r)
		return
	}
	h.render(w, r, "image", http.StatusOK, map[string]string{"image": ref}, ref)
}
