package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/server"
	"github.com/preboot/preboot/store"
)

// newImage is `preboot image`: the admin view of the server's image
// repository, over the image/httpstore API.
func newImage(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "List, show, verify, remove, export, import, browse (ls, cat, cp) and compare disk images",
	}
	af.register(cmd)
	store := func() (*httpstore.Client, error) {
		c, err := af.client(g)
		if err != nil {
			return nil, err
		}
		// No overall timeout: verify, export and import run as long as
		// they need (Ctrl-C cancels them).
		return &httpstore.Client{BaseURL: c.base, Token: c.token, HTTP: c.stream(), Attempts: 3}, nil
	}

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List images with their sizes (STORED: compressed chunks, SHARED: part also used by other images)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			l, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, l)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tCREATED\tSOURCE\tLOGICAL\tSTORED\tSHARED\tPARTITIONS")
			for _, im := range l.Images {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.Name, imgVersion(im), imgTime(im.Created), imgSource(im.Source),
					size(im.Logical), size(im.Stored), size(im.Shared), imgParts(im.Partitions))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(l.Images) == 0 {
				fmt.Fprintln(g.stdout, "(no images)")
			}
			fmt.Fprintf(g.stdout, "\nRepository: %d chunks, %s stored, %s reclaimable by GC", l.Chunks, size(l.StoredBytes), size(l.GarbageBytes))
			if l.MaxBytes > 0 {
				fmt.Fprintf(g.stdout, ", limit %s", size(l.MaxBytes))
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME[@VERSION]",
		Short: "Show an image (its current version, or VERSION): source, disk, partitions, sizes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			d, err := c.Detail(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, d)
			}
			return printImage(g.stdout, d)
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME[@VERSION]",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove an image with all its versions, or one version (chunks no other image uses are freed by GC)",
		Long: "Remove an image with all its versions (NAME), or one version (NAME@VERSION). Removing the current\n" +
			"version makes the newest remaining one current. An image or version a restore bundle names is\n" +
			"refused (409) until the bundle changes. Chunks no other image uses are freed by the next GC.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			if err := c.Remove(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "image %s removed\n", args[0])
			return nil
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "versions NAME",
		Short: "List the versions of an image (every capture adds one) and which one is current",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			vs, err := c.Versions(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, vs)
			}
			return printVersions(g.stdout, vs)
		},
	})

	var rollTo int
	roll := &cobra.Command{
		Use:   "rollback NAME [--to VERSION]",
		Short: "Make an older version of an image current again (default: the one before the current)",
		Long: "Make an older version of an image current: restores of NAME get it from now on (jobs already\n" +
			"started keep the version they pinned). Newer versions are kept; `rollback --to` can return to them.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			vs, err := c.Rollback(cmd.Context(), args[0], rollTo)
			if err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, vs)
			}
			fmt.Fprintf(g.stdout, "image %s: version %d is current\n", vs.Name, vs.Current)
			return nil
		},
	}
	roll.Flags().IntVar(&rollTo, "to", 0, "the version to make current (default: the one before the current)")
	cmd.AddCommand(roll)

	var gcDataDir string
	gc := &cobra.Command{
		Use:   "gc [--data-dir DIR]",
		Short: "Delete chunks no image version uses, leftover temporary files and stale upload records",
		Long: "Collect the image repository's garbage now (the server also does it every imaging.gc_interval):\n" +
			"chunks no version of any image references, except those a capture still running uploaded or was\n" +
			"told are present (its upload record) and those younger than the grace period (1 h); temporary\n" +
			"files a crash left behind; upload records of jobs no longer open. With --data-dir it works on the\n" +
			"repository directly, without the server (stop the server first).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st *image.GCStats
			if gcDataDir != "" {
				s, err := offlineGC(cmd.Context(), g, gcDataDir)
				if err != nil {
					return err
				}
				st = &s
			} else {
				c, err := store()
				if err != nil {
					return err
				}
				if st, err = c.GC(cmd.Context()); err != nil {
					return err
				}
			}
			if af.output == "json" {
				return printJSON(g.stdout, st)
			}
			fmt.Fprintf(g.stdout, "removed %d chunks (%s), %d temporary files, %d upload records; kept %d chunks (%d protected)\n",
				st.Removed, size(st.FreedBytes), st.TempRemoved, st.RecordsDropped, st.Kept, st.Protected)
			return nil
		},
	}
	gc.Flags().StringVar(&gcDataDir, "data-dir", "", "work on the repository of this data directory offline (with --config: its imaging.repo and store)")
	cmd.AddCommand(gc)

	cmd.AddCommand(&cobra.Command{
		Use:   "verify NAME[@VERSION]",
		Short: "Check every chunk of an image on the server: present, decompresses, hashes right",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			start := time.Now()
			v, err := c.Verify(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if af.output == "json" {
				if err := printJSON(g.stdout, v); err != nil {
					return err
				}
			}
			if !v.OK {
				return fmt.Errorf("image %s is damaged: %s", v.Name, v.Error)
			}
			if af.output != "json" {
				fmt.Fprintf(g.stdout, "image %s: OK, %d chunks verified in %s\n", v.Name, v.Chunks, time.Since(start).Round(time.Millisecond))
			}
			return nil
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "export NAME[@VERSION] FILE",
		Short: "Write an image as one portable file (a tar of its manifest and chunks); FILE - is stdout",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			name, file := args[0], args[1]
			if file == "-" {
				_, err := c.Export(cmd.Context(), name, g.stdout)
				return err
			}
			n, err := exportFile(cmd.Context(), c, name, file)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "image %s exported to %s (%s)\n", name, file, size(n))
			return nil
		},
	})

	var rename string
	imp := &cobra.Command{
		Use:   "import FILE [--name NEW]",
		Short: "Load a portable image file into the server's repository; FILE - is stdin",
		Long: "Load a portable image file (from `preboot image export`) into the server's repository. The server\n" +
			"verifies every chunk and publishes the image only when all arrived; an existing name is refused\n" +
			"(use --name to import under another one).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			var r io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			info, err := c.Import(cmd.Context(), r, rename)
			if err != nil {
				return err
			}
			if af.output == "json" {
				return printJSON(g.stdout, info)
			}
			fmt.Fprintf(g.stdout, "image %s imported (%s logical, %s used, partitions %s)\n", info.Name,
				size(info.Logical), size(info.Used), imgParts(info.Partitions))
			return nil
		},
	}
	imp.Flags().StringVar(&rename, "name", "", "import under this image name")
	cmd.AddCommand(imp)
	addImageExplorer(cmd, g, &af, store) // ls, cat, cp, diff: imagefiles.go
	addReplicaCommands(g, cmd, &af)
	return cmd
}

// exportFile writes the export to a temporary file next to file and
// renames it into place only when complete.
func exportFile(ctx context.Context, c *httpstore.Client, name, file string) (n int64, err error) {
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if n, err = c.Export(ctx, name, f); err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, err
	}
	if err = f.Close(); err != nil {
		return n, err
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil {
		return n, err
	}
	return n, os.Rename(f.Name(), file)
}

// offlineGC collects the garbage of the repository of dataDir (or the
// configuration's imaging.repo) without the server; the database, when
// there is one, tells which jobs are still open.
func offlineGC(ctx context.Context, g *globals, dataDir string) (image.GCStats, error) {
	cfg, err := g.load()
	if err != nil {
		return image.GCStats{}, err
	}
	cfg.DataDir = dataDir
	if err := cfg.Finish(); err != nil {
		return image.GCStats{}, fmt.Errorf("configuration: %w", err)
	}
	if _, err := os.Stat(cfg.Imaging.Repo); err != nil && cfg.Imaging.Store == "" {
		return image.GCStats{}, fmt.Errorf("no image repository at %s: %w", cfg.Imaging.Repo, err)
	}
	var st store.Store
	if _, err := os.Stat(cfg.Store.Path); cfg.Store.Driver != "sqlite" || err == nil {
		if st, err = server.OpenStore(ctx, cfg.Store); err != nil {
			return image.GCStats{}, err
		}
		defer st.Close()
	}
	log, err := newLogger(g.stderr, cfg.Log.Format, "warn")
	if err != nil {
		return image.GCStats{}, err
	}
	repo, err := server.OpenRepo(cfg, st, log)
	if err != nil {
		return image.GCStats{}, err
	}
	return repo.GC(ctx)
}

func printVersions(w io.Writer, vs *httpstore.ImageVersions) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tCURRENT\tCREATED\tSOURCE\tUSED\tUPLOADED\tCHUNKS")
	for _, v := range vs.Versions {
		cur := ""
		if v.Current {
			cur = "*"
		}
		fmt.Fprintf(tw, "%s@%d\t%s\t%s\t%s\t%s\t%s\t%d\n", vs.Name, v.Version, cur, imgTime(v.Created), imgSource(v.Source),
			size(v.Used), size(v.Uploaded), v.Chunks)
	}
	return tw.Flush()
}

// imgVersion is "CURRENT/COUNT" (e.g. 3/4: version 3 current, 4 kept).
func imgVersion(im httpstore.ImageInfo) string {
	if im.Version == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", im.Version, max(im.Versions, 1))
}

func printImage(w io.Writer, d *httpstore.ImageDetail) error {
	m, in := d.Manifest, d.Info
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", m.Name)
	if in.Version > 0 {
		fmt.Fprintf(tw, "Version:\t%d (of %d kept)\n", in.Version, max(in.Versions, 1))
	}
	fmt.Fprintf(tw, "Created:\t%s\n", m.Created.Local().Format(time.RFC3339))
	fmt.Fprintf(tw, "Source:\t%s\n", imgSourceAll(m.Source))
	fmt.Fprintf(tw, "Disk:\t%s (%d bytes, %d-byte sectors)\n", size(m.Disk.Size), m.Disk.Size, m.Disk.SectorSize)
	fmt.Fprintf(tw, "Chunk size:\t%s\n", size(m.ChunkSize))
	fmt.Fprintf(tw, "Used:\t%s\n", size(in.Used))
	fmt.Fprintf(tw, "Stored:\t%s in %d chunks (unique %s, shared with other images %s)\n",
		size(in.Stored), in.Chunks, size(in.Unique), size(in.Shared))
	if in.Used > 0 && in.Stored > 0 {
		fmt.Fprintf(tw, "Ratio:\t%.2f (stored/used)\n", float64(in.Stored)/float64(in.Used))
	}
	for i, w := range m.Warnings {
		fmt.Fprintf(tw, "%s\t%s\n", map[bool]string{true: "Warnings:", false: ""}[i == 0], w)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AREA\tSTART\tSIZE\tFSTYPE\tUSED\tCHUNKS\tZERO")
	for _, a := range m.Areas() {
		label := fmt.Sprintf("partition %d", a.Index)
		if a.Name != "" {
			label = "region " + a.Name
		}
		var used int64
		for _, e := range a.Used {
			used += e.Length
		}
		zero := 0
		for _, c := range a.Chunks {
			if c.Zero {
				zero++
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\n", label, a.Start, size(a.Size), dash(a.FSType), size(used),
			len(a.Chunks)-zero, zero)
	}
	return tw.Flush()
}

func imgTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// imgSource is the short form of an image's source: hostname, else device
// or MAC.
func imgSource(s map[string]string) string {
	for _, k := range []string{"hostname", "mac", "device"} {
		if v := s[k]; v != "" {
			return v
		}
	}
	return "-"
}

func imgSourceAll(s map[string]string) string {
	if len(s) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + s[k]
	}
	return strings.Join(parts, " ")
}

// imgParts lists partitions as "1:ext4 2:vfat".
func imgParts(ps []httpstore.PartitionInfo) string {
	if len(ps) == 0 {
		return "-"
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b httpstore.PartitionInfo) int { return cmp.Compare(a.Index, b.Index) })
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%d:%s", p.Index, cmp.Or(p.FSType, "?"))
	}
	return strings.Join(out, " ")
}
