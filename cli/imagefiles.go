package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
)

// The image explorer: files inside an image without restoring it, read by
// the server straight from the image's chunks.

// imagePath is NAME[@VERSION][:PARTITION][:/path] as the explorer
// commands take it.
type imagePath struct {
	ref     string
	part    int // -1: not given
	path    string
	hasPath bool
}

func parseImagePath(s string) (imagePath, error) {
	ip := imagePath{part: -1}
	ref, rest, found := strings.Cut(s, ":")
	if err := image.ValidRef(ref); err != nil {
		return ip, err
	}
	ip.ref = ref
	if !found {
		return ip, nil
	}
	if !strings.HasPrefix(rest, "/") {
		p, after, hasPath := strings.Cut(rest, ":")
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return ip, fmt.Errorf("%q: want NAME[@VERSION][:PARTITION][:/PATH] with PARTITION a number (0 for a filesystem on the whole disk)", s)
		}
		ip.part = n
		if !hasPath {
			return ip, nil
		}
		rest = after
	}
	ip.path, ip.hasPath = rest, true
	if ip.path == "" {
		ip.path = "/"
	}
	return ip, nil
}

// partition picks the partition: the one named, else the image's only
// browsable one.
func (ip *imagePath) partition(ctx context.Context, c *httpstore.Client) (int, error) {
	if ip.part >= 0 {
		return ip.part, nil
	}
	pl, err := c.Partitions(ctx, ip.ref)
	if err != nil {
		return 0, err
	}
	var found []int
	for _, p := range pl.Partitions {
		if p.Browsable {
			found = append(found, p.Index)
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return 0, fmt.Errorf("image %s has %d partitions the explorer reads: name one, as %s:PARTITION:%s (`preboot image ls %s` lists them)",
		ip.ref, len(found), ip.ref, ip.path, ip.ref)
}

func addImageExplorer(cmd *cobra.Command, g *globals, af *adminFlags, store func() (*httpstore.Client, error)) {
	var long bool
	ls := &cobra.Command{
		Use:   "ls NAME[@VERSION][:PARTITION][:/PATH]",
		Short: "List the partitions of an image, or the files in one of them (read from the image's chunks)",
		Long: "Without a path: the image's partitions (index, filesystem, size, used). With one: the directory's\n" +
			"entries (mode, size, modification time, name; symbolic links with their target), or the file\n" +
			"itself. ext2/3/4, FAT12/16/32 and NTFS are read straight from the image's chunks: nothing is\n" +
			"restored, only the chunks holding what is listed are read. PARTITION may be left out when the\n" +
			"image has a single filesystem the explorer reads.\n\n" +
			"  preboot image ls win11                 # partitions\n" +
			"  preboot image ls win11:3:/Windows      # a directory\n" +
			"  preboot image ls lab@2:/etc/fstab      # one file of version 2",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := parseImagePath(args[0])
			if err != nil {
				return err
			}
			c, err := store()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !ip.hasPath && ip.part < 0 {
				pl, err := c.Partitions(ctx, ip.ref)
				if err != nil {
					return err
				}
				if af.json() {
					return printJSON(g.stdout, pl)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PARTITION\tFSTYPE\tSIZE\tUSED\tBROWSABLE")
				for _, p := range pl.Partitions {
					b := "yes"
					if !p.Browsable {
						b = "no"
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", p.Index, p.FSType, size(p.Size), size(p.Used), b)
				}
				return tw.Flush()
			}
			if !ip.hasPath {
				ip.path = "/"
			}
			n, err := ip.partition(ctx, c)
			if err != nil {
				return err
			}
			fl, err := c.Files(ctx, ip.ref, n, ip.path)
			if err != nil {
				return err
			}
			if af.json() {
				return printJSON(g.stdout, fl)
			}
			entries := fl.Entries
			if fl.Entry.Type != "dir" && (fl.Entry.Type != "symlink" || len(entries) == 0) {
				entries = []httpstore.FileEntry{fl.Entry}
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 1, ' ', tabwriter.AlignRight)
			for _, e := range entries {
				name := e.Name
				if e.Type == "dir" {
					name += "/"
				}
				if e.Target != "" {
					name += " -> " + e.Target
				}
				mt := "-"
				if !e.MTime.IsZero() && e.MTime.Year() > 1 {
					mt = e.MTime.UTC().Format("2006-01-02 15:04")
				}
				sz := strconv.FormatInt(e.Size, 10)
				if !long {
					sz = size(e.Size)
				}
				fmt.Fprintf(tw, "%s\t%s\t %s\t %s\n", e.Mode, sz, mt, name)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVarP(&long, "bytes", "b", false, "sizes in bytes")
	cmd.AddCommand(ls)

	cmd.AddCommand(&cobra.Command{
		Use:   "cat NAME[@VERSION]:PARTITION:/PATH",
		Short: "Write a file from inside an image to stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := parseImagePath(args[0])
			if err != nil {
				return err
			}
			if !ip.hasPath {
				return fmt.Errorf("%q: name a file, as NAME:PARTITION:/PATH", args[0])
			}
			c, err := store()
			if err != nil {
				return err
			}
			n, err := ip.partition(cmd.Context(), c)
			if err != nil {
				return err
			}
			_, err = c.Content(cmd.Context(), ip.ref, n, ip.path, g.stdout)
			return err
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "cp NAME[@VERSION]:PARTITION:/PATH DEST",
		Short: "Copy a file or a directory (recursively) out of an image",
		Long: "Copy a file or a directory tree out of an image, read from its chunks. A file goes to DEST (or\n" +
			"into DEST when it is a directory); a directory becomes DEST (or DEST/NAME when DEST exists).\n" +
			"Nothing half-written is left: everything is written under a temporary name next to DEST and\n" +
			"renamed into place once complete; on an error (a corrupt chunk, a broken connection) the\n" +
			"temporary copy is removed. Modes and modification times are kept; symbolic links are\n" +
			"recreated as they are stored.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := parseImagePath(args[0])
			if err != nil {
				return err
			}
			if !ip.hasPath {
				return fmt.Errorf("%q: name a file or directory, as NAME:PARTITION:/PATH", args[0])
			}
			c, err := store()
			if err != nil {
				return err
			}
			n, err := ip.partition(cmd.Context(), c)
			if err != nil {
				return err
			}
			cp := &imageCopier{ctx: cmd.Context(), c: c, ref: ip.ref, part: n}
			dest, files, bytes, err := cp.copy(ip.path, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "copied %d files (%s) to %s\n", files, size(bytes), dest)
			return nil
		},
	})

	cmd.AddCommand(&cobra.Command{
		Use:   "diff A B",
		Short: "Compare two images or versions partition by partition: same, changed, added, removed",
		Long: "Compare image B with image A (NAME or NAME@VERSION each): for every partition (and raw region:\n" +
			"boot code, partition tables) whether it is the same, changed, added or removed, how many chunks\n" +
			"and bytes differ, and how many chunks B added to the repository. With one argument NAME,\n" +
			"compares the version before the current one with the current one.\n\n" +
			"  preboot image diff lab-base@3 lab-base     # did the re-capture change anything?",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := store()
			if err != nil {
				return err
			}
			a, b := args[0], ""
			if len(args) == 2 {
				b = args[1]
			} else {
				if a, b, err = previousAndCurrent(cmd.Context(), c, args[0]); err != nil {
					return err
				}
			}
			d, err := c.Diff(cmd.Context(), a, b)
			if err != nil {
				return err
			}
			if af.json() {
				return printJSON(g.stdout, d)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AREA\tFSTYPE\tSTATUS\tCHUNKS\tBYTES")
			for _, x := range d.Areas {
				st := x.Status
				if x.Moved {
					st += " (moved/resized)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", x.Area, orDash(x.FSType), st, x.Chunks, x.ChunksTotal, size(x.Bytes))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if d.Same {
				fmt.Fprintf(g.stdout, "\n%s and %s hold the same data\n", a, b)
			} else {
				fmt.Fprintf(g.stdout, "\n%d chunks (%s) differ; %s added %d new chunks (%s)\n", d.Chunks, size(d.Bytes), b, d.NewChunks, size(d.NewBytes))
			}
			return nil
		},
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// previousAndCurrent are NAME@(current-1 or the newest older) and NAME@current.
func previousAndCurrent(ctx context.Context, c *httpstore.Client, name string) (string, string, error) {
	if err := image.ValidName(name); err != nil {
		return "", "", fmt.Errorf("%w (with one argument: an image name without @VERSION)", err)
	}
	vs, err := c.Versions(ctx, name)
	if err != nil {
		return "", "", err
	}
	prev := 0
	for _, v := range vs.Versions {
		if v.Version < vs.Current {
			prev = max(prev, v.Version)
		}
	}
	if prev == 0 {
		return "", "", fmt.Errorf("image %s has no version before the current one (%d): name two images or versions", name, vs.Current)
	}
	return image.Ref(name, prev), image.Ref(name, vs.Current), nil
}

// imageCopier copies files out of one partition of an image.
type imageCopier struct {
	ctx   context.Context
	c     *httpstore.Client
	ref   string
	part  int
	files int
	bytes int64
}

// copy copies src to dst as cp -r would and returns where it went.
func (cp *imageCopier) copy(src, dst string) (string, int, int64, error) {
	fl, err := cp.c.Files(cp.ctx, cp.ref, cp.part, src)
	if err != nil {
		return "", 0, 0, err
	}
	isDir := fl.Entry.Type == "dir" || (fl.Entry.Type == "symlink" && len(fl.Entries) > 0)
	name := path.Base(fl.Path)
	if fl.Path == "/" {
		name = cp.ref + "-" + strconv.Itoa(cp.part)
	}
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		dst = filepath.Join(dst, name)
	}
	if _, err := os.Lstat(dst); err == nil && isDir {
		return "", 0, 0, fmt.Errorf("%s exists: not replacing a directory", dst)
	}
	dir := filepath.Dir(dst)
	if !isDir {
		if fl.Entry.Type != "file" && fl.Entry.Type != "symlink" {
			return "", 0, 0, fmt.Errorf("%s is not a regular file (%s)", fl.Path, fl.Entry.Mode)
		}
		if err := cp.file(fl.Path, fl.Entry, dir, dst); err != nil {
			return "", 0, 0, err
		}
		return dst, cp.files, cp.bytes, nil
	}
	tmp, err := os.MkdirTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return "", 0, 0, err
	}
	if err := cp.tree(fl, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", 0, 0, err
	}
	if err := finish(tmp, fl.Entry); err != nil {
		os.RemoveAll(tmp)
		return "", 0, 0, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		return "", 0, 0, err
	}
	return dst, cp.files, cp.bytes, nil
}

// tree copies the entries of directory fl into the existing dir.
func (cp *imageCopier) tree(fl *httpstore.FileList, dir string) error {
	for _, e := range fl.Entries {
		if err := cp.ctx.Err(); err != nil {
			return err
		}
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
			return fmt.Errorf("%s: refusing the entry name %q", fl.Path, e.Name)
		}
		src := path.Join(fl.Path, e.Name)
		dst := filepath.Join(dir, e.Name)
		switch e.Type {
		case "dir":
			sub, err := cp.c.Files(cp.ctx, cp.ref, cp.part, src)
			if err != nil {
				return err
			}
			if err := os.Mkdir(dst, 0o700); err != nil {
				return err
			}
			if err := cp.tree(sub, dst); err != nil {
				return err
			}
			if err := finish(dst, e); err != nil {
				return err
			}
		case "symlink":
			if err := os.Symlink(e.Target, dst); err != nil {
				return err
			}
		case "file":
			if err := cp.download(src, e, dst); err != nil {
				return err
			}
		default:
			// Devices, FIFOs, sockets: nothing to copy.
		}
	}
	return nil
}

// file copies one file to dst through a temporary file in dir.
func (cp *imageCopier) file(src string, e httpstore.FileEntry, dir, dst string) error {
	if e.Type == "symlink" { // a link to a file: its target's bytes, plain mode
		e = httpstore.FileEntry{Type: "file", Perm: 0o644}
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	if err := cp.download(src, e, tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// download writes file src of the image to dst (created or truncated),
// synced, with e's mode and time.
func (cp *imageCopier) download(src string, e httpstore.FileEntry, dst string) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	n, err := cp.c.Content(cp.ctx, cp.ref, cp.part, src, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	cp.files++
	cp.bytes += n
	return finish(dst, e)
}

// finish sets a copied file's or directory's mode and times.
func finish(p string, e httpstore.FileEntry) error {
	perm := fs.FileMode(e.Perm) & fs.ModePerm
	if e.Type == "dir" {
		perm |= 0o700 // keep the copy readable by who made it
	}
	if err := os.Chmod(p, perm); err != nil {
		return err
	}
	if !e.MTime.IsZero() && e.MTime.Year() > 1 {
		if err := os.Chtimes(p, time.Time{}, e.MTime); err != nil && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	return nil
}
