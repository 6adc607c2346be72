package browsertest

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/imagefs/imagefstest"
)

// TestImageExplorerPage is the image explorer in the browser, against the
// console, the API and the image handler wired as the server wires them
// (the image routes behind the administrator check, which takes the
// console's session), over an image of real ext4, FAT and NTFS
// filesystems: from the images page to an image, its partitions, a
// directory, back up through the path, and a file's download.
func TestImageExplorerPage(t *testing.T) {
	exe, err := chromium()
	if err != nil {
		t.Fatal(err)
	}
	imagefstest.Need(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := imagefstest.Build(t, dir)
	repo, err := image.OpenRepo(filepath.Join(dir, "repo"), image.RepoOptions{GCGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	imagefstest.Capture(ctx, t, d, repo, "lab", 1<<20)

	site := newConsoleSite(t)
	images := &httpstore.Handler{Repo: repo, Logger: site.log}
	for _, p := range images.Prefixes() {
		site.mux.Handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, ok := site.auth.Admin(w, r)
			if !ok {
				return
			}
			images.ServeHTTP(w, r.WithContext(ctx))
		}))
	}

	b := site.open(t, exe, api.Options{})
	ui := b.first
	ui.login("/console/images")
	ui.waitFor("the images page", `document.body.dataset.page === "images" && !!document.querySelector("#image-lab a.explore")`)
	ui.click("#image-lab a.explore")
	ui.waitFor("the explorer", `document.body.dataset.page === "image" && location.pathname === "/console/images/lab"`)
	ui.waitFor("its partitions", `document.querySelectorAll("#partitions-body tr.partition-row").length === 6`)
	if got := ui.str(`Array.from(document.querySelectorAll("#partitions-body tr.partition-row")).map((r) => r.dataset.fstype).join(",")`); got != "ext4,ext2,fat32,fat16,fat12,ntfs" {
		ui.fatalf("partitions: %s", got)
	}

	// ext4: the root, then a directory by its link, then a file's download.
	ui.click(`tr.partition-row[data-index="1"] button.browse`)
	ui.waitFor("the root of partition 1", `!document.querySelector("#files-card").hidden && !!document.querySelector('#files-body tr.file-row[data-name="big.bin"]')`)
	if got := ui.str(`document.querySelector('#files-body tr.file-row[data-name="link"] td.name').textContent + " " + document.querySelector('#files-body tr.file-row[data-name="link"] td.mono').textContent`); got != "link → etc/hostname lrwxrwxrwx" {
		ui.fatalf("the symbolic link shows %q", got)
	}
	ui.click(`#files-body tr.file-row[data-name="etc"] a.dir`)
	ui.waitFor("/etc", `document.querySelector("#files-path").textContent === "/etc" && !!document.querySelector('#files-body tr.file-row[data-name="hostname"]')`)
	ui.shot(screenshotDir(t), "image-explorer")
	href := ui.str(`document.querySelector('#files-body tr.file-row[data-name="hostname"] a.download').getAttribute("href")`)
	if !strings.Contains(href, "/partitions/1/content?path=%2Fetc%2Fhostname") {
		ui.fatalf("download link %s", href)
	}
	// What the download link answers, fetched with the page's session.
	ui.do("fetch the download", chromedp.Evaluate[chromedp.Void](`(() => { window.__dl = null; fetch(document.querySelector('#files-body tr.file-row[data-name="hostname"] a.download').href).then(async (r) => { window.__dl = r.status + " " + r.headers.get("Content-Disposition") + " " + await r.text(); }); })()`))
	ui.waitFor("the download", `window.__dl !== null`)
	if got := ui.str(`window.__dl`); got != "200 attachment; filename=hostname lab-pc\n" {
		ui.fatalf("download answered %q", got)
	}
	// Back up through the path.
	ui.click(`#files-crumbs a[href="#p=1&path=%2F"]`)
	ui.waitFor("the root again", `document.querySelector("#files-path").textContent === "/" && !!document.querySelector('#files-body tr.file-row[data-name="many"]')`)

	// NTFS and a path error shown on the page.
	ui.navigate("/console/images/lab#p=6&path=%2F")
	ui.waitFor("the NTFS root", `!!document.querySelector('#files-body tr.file-row[data-name="pagefile.dat"]')`)
	if got := ui.num(`Number(document.querySelector('#files-body tr.file-row[data-name="pagefile.dat"]').dataset.size)`); got != float64(len(d.Partitions[5].Files["pagefile.dat"])) {
		ui.fatalf("pagefile.dat size %v", got)
	}
	ui.navigate("/console/images/lab#p=1&path=%2Fevil%2Fx")
	ui.waitFor("the escape refused", `!document.querySelector("#files-error").hidden && document.querySelector("#files-error").textContent.includes("escapes the filesystem root")`)

	if ex := b.exceptions(); len(ex) > 0 {
		t.Errorf("the page threw %d uncaught JavaScript exceptions:\n%s", len(ex), strings.Join(ex, "\n"))
	}
}
