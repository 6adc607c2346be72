package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/store"
)

// paramFlags are the kind-specific bundle parameter flags of `bundle
// create` and `bundle edit`.
type paramFlags struct {
	image, device, after, scriptFile, timeout, maxWait string
	kernel, cmdline, chain, loader, mode, paramsFile   string
	method                                             string
	partitions                                         []int
	initrd, disks                                      []string
	compression, minClients                            int
	confirm                                            bool
	// secretFiles are NAME=PATH (os-install secrets, read from files so
	// that their values never show in the process list).
	secretFiles         []string
	secretsInBootScript bool
}

// paramSpec ties a flag to the JSON field it sets and the kinds that have it.
type paramSpec struct {
	flag, field string
	kinds       []string
}

var paramSpecs = []paramSpec{
	{"image", "image", []string{store.KindImageRestore, store.KindImageCapture, store.KindMulticast}},
	{"partitions", "partitions", []string{store.KindImageRestore, store.KindMulticast}},
	{"device", "device", []string{store.KindImageRestore, store.KindImageCapture, store.KindMulticast}},
	{"compression", "compression", []string{store.KindImageCapture}},
	{"script-file", "script", []string{store.KindScript}},
	{"timeout", "timeout", []string{store.KindScript}},
	{"min-clients", "min_clients", []string{store.KindMulticast}},
	{"max-wait", "max_wait", []string{store.KindMulticast}},
	{"kernel", "kernel", []string{store.KindOSInstall}},
	{"initrd", "initrd", []string{store.KindOSInstall}},
	{"cmdline", "cmdline", []string{store.KindOSInstall}},
	{"chain", "chain", []string{store.KindOSInstall}},
	{"loader", "loader", []string{store.KindOSInstall}},
	{"secret-file", "secrets", []string{store.KindOSInstall}},
	{"secrets-in-boot-script", "secrets_in_boot_script", []string{store.KindOSInstall}},
	{"mode", "mode", []string{store.KindWipe}},
	{"disk", "disks", []string{store.KindWipe}},
	{"confirm", "confirm", []string{store.KindWipe}},
	{"method", "method", []string{store.KindLocalBoot}},
	{"after", "after", []string{store.KindImageRestore, store.KindImageCapture, store.KindScript, store.KindMulticast, store.KindWipe, store.KindInventory}},
}

func (p *paramFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&p.image, "image", "", "image name (image-restore, image-capture, multicast)")
	fs.IntSliceVar(&p.partitions, "partitions", nil, "partition numbers to restore, e.g. 1,2; empty = the whole disk (image-restore, multicast)")
	fs.StringVar(&p.device, "device", "", "disk, e.g. /dev/sda; empty = the first fixed disk (image-restore, image-capture, multicast)")
	fs.StringVar(&p.after, "after", "", "when done: reboot or poweroff")
	fs.IntVar(&p.compression, "compression", 0, "zstd level 1..19, 0 = default (image-capture)")
	fs.StringVar(&p.scriptFile, "script-file", "", "shell script file, - for stdin (script)")
	fs.StringVar(&p.timeout, "timeout", "", "script time limit, e.g. 30m (script)")
	fs.IntVar(&p.minClients, "min-clients", 0, "start when this many devices joined (multicast)")
	fs.StringVar(&p.maxWait, "max-wait", "", "or this long after the last join, e.g. 10m (multicast)")
	fs.StringVar(&p.kernel, "kernel", "", "kernel: path under the TFTP root or http(s) URL (os-install)")
	fs.StringSliceVar(&p.initrd, "initrd", nil, "initrd (repeatable; os-install)")
	fs.StringVar(&p.cmdline, "cmdline", "", "kernel command line (os-install)")
	fs.StringVar(&p.chain, "chain", "", "iPXE script URL to chain to instead of a kernel (os-install)")
	fs.StringVar(&p.loader, "loader", "", "ipxe or pxelinux (os-install)")
	fs.StringArrayVar(&p.secretFiles, "secret-file", nil, "NAME=PATH: a secret that --cmdline or --chain names as {{secret:NAME}}, read from PATH (- for stdin; one trailing newline dropped; repeatable; os-install)")
	fs.BoolVar(&p.secretsInBootScript, "secrets-in-boot-script", false, "accept that the secrets named in --cmdline or --chain are in the boot script, readable by any LAN client claiming the device's MAC (os-install)")
	fs.StringVar(&p.mode, "mode", "", "zero or discard (wipe)")
	fs.StringSliceVar(&p.disks, "disk", nil, "disk to wipe (repeatable; none = every fixed disk) (wipe)")
	fs.BoolVar(&p.confirm, "confirm", false, "confirm that the wipe destroys the disks' data (wipe)")
	fs.StringVar(&p.method, "method", "", "exit, sanboot or grub: how the device leaves iPXE for its disk (local-boot; none = the server's default)")
	fs.StringVar(&p.paramsFile, "params-file", "", "JSON file of the parameters (- for stdin); flags override its fields")
}

// value is the JSON value of a given flag.
func (p *paramFlags) value(cmd *cobra.Command, flag string) (any, error) {
	switch flag {
	case "image":
		return p.image, nil
	case "partitions":
		return nonNil(p.partitions), nil
	case "device":
		return p.device, nil
	case "after":
		return p.after, nil
	case "compression":
		return p.compression, nil
	case "script-file":
		b, err := readFileArg(cmd, p.scriptFile)
		if err != nil {
			return nil, fmt.Errorf("--script-file: %w", err)
		}
		return string(b), nil
	case "timeout":
		return durationArg("timeout", p.timeout)
	case "min-clients":
		return p.minClients, nil
	case "max-wait":
		return durationArg("max-wait", p.maxWait)
	case "kernel":
		return p.kernel, nil
	case "initrd":
		return nonNil(p.initrd), nil
	case "cmdline":
		return p.cmdline, nil
	case "chain":
		return p.chain, nil
	case "loader":
		return p.loader, nil
	case "secret-file":
		return p.secrets(cmd)
	case "secrets-in-boot-script":
		return p.secretsInBootScript, nil
	case "mode":
		return p.mode, nil
	case "disk":
		return nonNil(p.disks), nil
	case "confirm":
		return p.confirm, nil
	case "method":
		return p.method, nil
	}
	return nil, fmt.Errorf("unknown parameter flag %q", flag)
}

// secrets reads the values of --secret-file NAME=PATH.
func (p *paramFlags) secrets(cmd *cobra.Command) (map[string]string, error) {
	out := map[string]string{}
	var errs []error
	for _, a := range p.secretFiles {
		name, path, ok := strings.Cut(a, "=")
		if !ok || name == "" || path == "" {
			errs = append(errs, fmt.Errorf("--secret-file %q: want NAME=PATH", a))
			continue
		}
		b, err := readFileArg(cmd, path)
		if err != nil {
			errs = append(errs, fmt.Errorf("--secret-file %s: %w", name, err))
			continue
		}
		v := strings.TrimSuffix(string(b), "\n")
		out[name] = strings.TrimSuffix(v, "\r")
	}
	return out, errors.Join(errs...)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func durationArg(flag, s string) (string, error) {
	if s == "" {
		return "0s", nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return "", fmt.Errorf("--%s %q: want a duration like 90s or 10m", flag, s)
	}
	return d.String(), nil
}

// changed reports whether any parameter flag (or --params-file) was given.
func (p *paramFlags) changed(fs *pflag.FlagSet) bool {
	if fs.Changed("params-file") {
		return true
	}
	for _, s := range paramSpecs {
		if fs.Changed(s.flag) {
			return true
		}
	}
	return false
}

// merge overlays --params-file and the given flags on base (the current
// parameters, or nil for a new bundle) and returns the result. A flag the
// kind does not have is an error that lists the ones it has.
func (p *paramFlags) merge(cmd *cobra.Command, kind string, base json.RawMessage) (json.RawMessage, error) {
	if _, err := bundle.New(kind); err != nil {
		return nil, err
	}
	fs := cmd.Flags()
	params := map[string]any{}
	if len(bytes.TrimSpace(base)) > 0 && string(bytes.TrimSpace(base)) != "null" {
		if err := json.Unmarshal(base, &params); err != nil {
			return nil, fmt.Errorf("current params: %w", err)
		}
	}
	if p.paramsFile != "" {
		b, err := readFileArg(cmd, p.paramsFile)
		if err != nil {
			return nil, fmt.Errorf("--params-file: %w", err)
		}
		params = map[string]any{}
		if err := json.Unmarshal(b, &params); err != nil {
			return nil, fmt.Errorf("--params-file %s: want a JSON object: %w", p.paramsFile, err)
		}
	}
	var errs []error
	for _, s := range paramSpecs {
		if !fs.Changed(s.flag) {
			continue
		}
		if !slices.Contains(s.kinds, kind) {
			errs = append(errs, fmt.Errorf("--%s: a %s bundle has no such parameter (%s)", s.flag, kind, kindFlags(kind)))
			continue
		}
		v, err := p.value(cmd, s.flag)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if add, ok := v.(map[string]string); ok {
			// --secret-file adds to (or replaces some of) the current
			// secrets; the others stay as the server shows them, which
			// keeps their stored values.
			cur, _ := params[s.field].(map[string]any)
			if cur == nil {
				cur = map[string]any{}
			}
			for n, x := range add {
				cur[n] = x
			}
			v = cur
		}
		params[s.field] = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(params)
}

// kindFlags lists the parameter flags of a kind.
func kindFlags(kind string) string {
	var fl []string
	for _, s := range paramSpecs {
		if slices.Contains(s.kinds, kind) {
			fl = append(fl, "--"+s.flag)
		}
	}
	if len(fl) == 0 {
		return "it takes no parameters"
	}
	return "it takes " + strings.Join(fl, ", ")
}

func newBundle(g *globals) *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "bundle",
		Aliases: []string{"bundles"},
		Short:   "Bundles: what a device does at its next network boot (restore, capture, script, install...)",
	}
	af.register(cmd)

	var kind, image string
	var limit, offset int
	list := &cobra.Command{
		Use:   "list [--kind K] [--image NAME]",
		Short: "List bundles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			q := pageQuery(limit, offset)
			setIf(q, "kind", kind)
			setIf(q, "image", image)
			var bs []store.Bundle
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/bundles?"+q.Encode(), nil, &bs)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				tw := newTable(g.stdout)
				row(tw, "NAME", "KIND", "VERSION", "PARAMETERS", "UPDATED")
				for _, b := range bs {
					row(tw, b.Name, b.Kind, b.Version, paramSummary(b.Kind, b.Params), ago(b.UpdatedAt))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&kind, "kind", "", "only this kind: "+strings.Join(store.BundleKinds, ", "))
	list.Flags().StringVar(&image, "image", "", "only bundles that use this image")
	pageFlags(list.Flags(), &limit, &offset)
	cmd.AddCommand(list)

	cmd.AddCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show a bundle: kind, parameters, where it is assigned",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			var b store.Bundle
			raw, _, err := c.call(cmd.Context(), "GET", "/api/v1/bundles/"+pathEsc(args[0]), nil, &b)
			if err != nil {
				return err
			}
			if af.json() {
				return printRaw(g.stdout, raw)
			}
			var as []store.Assignment
			if err := c.do(cmd.Context(), "GET", "/api/v1/assignments?bundle="+url.QueryEscape(b.Name), nil, &as); err != nil {
				return err
			}
			return printBundle(g, b, as)
		},
	})

	var desc string
	var pf paramFlags
	create := &cobra.Command{
		Use:   "create NAME --kind KIND [PARAMETER FLAGS | --params-file F.json] [--description D]",
		Short: "Create a bundle",
		Long: "Create a bundle. Parameters by kind:\n" +
			"  image-restore  --image (required) --partitions 1,2 --device --after\n" +
			"  image-capture  --image (required) --compression --device --after\n" +
			"  script         --script-file F|- (required) --timeout --after\n" +
			"  multicast      --image (required) --min-clients --max-wait --partitions --device --after\n" +
			"  os-install     --kernel [--initrd]... [--cmdline] | --chain URL, --loader ipxe|pxelinux,\n" +
			"                 --secret-file NAME=PATH... --secrets-in-boot-script ({{secret:NAME}} in --cmdline/--chain)\n" +
			"  wipe           --confirm (required) --mode zero|discard --disk D... --after\n" +
			"  inventory      --after\n" +
			"  local-boot     --method exit|sanboot|grub (none: the server's default)\n" +
			"--params-file gives them as JSON ({\"image\":\"x\",...}); flags override its fields.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if kind == "" {
				return fmt.Errorf("--kind: required, one of %s", strings.Join(store.BundleKinds, ", "))
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			params, err := pf.merge(cmd, kind, nil)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "kind": kind, "description": desc, "params": params}
			var b store.Bundle
			raw, _, err := c.call(cmd.Context(), "POST", "/api/v1/bundles", body, &b)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "bundle %s created: %s %s\n", b.Name, b.Kind, paramSummary(b.Kind, b.Params))
				return nil
			})
		},
	}
	create.Flags().StringVar(&kind, "kind", "", "bundle kind: "+strings.Join(store.BundleKinds, ", "))
	create.Flags().StringVar(&desc, "description", "", "what the bundle is for")
	pf.register(create.Flags())
	cmd.AddCommand(create)

	var newName, edesc string
	var epf paramFlags
	edit := &cobra.Command{
		Use:   "edit NAME [--name NEW] [--description D] [PARAMETER FLAGS | --params-file F.json]",
		Short: "Change a bundle: only the given parameters change (its kind cannot)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			if !epf.changed(fs) && !fs.Changed("name") && !fs.Changed("description") {
				return errors.New("nothing to change: give --name, --description or parameter flags (see bundle create --help)")
			}
			c, err := af.client(g)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var cur store.Bundle
			if err := c.do(ctx, "GET", "/api/v1/bundles/"+pathEsc(args[0]), nil, &cur); err != nil {
				return err
			}
			patch := map[string]any{}
			if fs.Changed("name") {
				patch["name"] = newName
			}
			if fs.Changed("description") {
				patch["description"] = edesc
			}
			if epf.changed(fs) {
				params, err := epf.merge(cmd, cur.Kind, cur.Params)
				if err != nil {
					return err
				}
				patch["params"] = params
			}
			var b store.Bundle
			raw, _, err := c.call(ctx, "PATCH", "/api/v1/bundles/"+pathEsc(args[0]), patch, &b)
			if err != nil {
				return err
			}
			return af.emit(g, raw, func() error {
				fmt.Fprintf(g.stdout, "bundle %s updated (version %d): %s %s\n", b.Name, b.Version, b.Kind, paramSummary(b.Kind, b.Params))
				return nil
			})
		},
	}
	edit.Flags().StringVar(&newName, "name", "", "rename the bundle")
	edit.Flags().StringVar(&edesc, "description", "", "what the bundle is for")
	epf.register(edit.Flags())
	cmd.AddCommand(edit)

	cmd.AddCommand(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a bundle (refused while it is assigned or used by a rule, a menu or the unregistered default)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client(g)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/bundles/"+pathEsc(args[0]), nil, nil); err != nil {
				return err
			}
			if !af.json() {
				fmt.Fprintf(g.stdout, "bundle %s removed\n", args[0])
			}
			return nil
		},
	})
	return cmd
}

func printBundle(g *globals, b store.Bundle, as []store.Assignment) error {
	kvs := [][2]string{
		{"Name", b.Name},
		{"Kind", b.Kind},
		{"Description", b.Description},
		{"Version", strconv.FormatInt(b.Version, 10)},
		{"Created", when(b.CreatedAt)},
		{"Updated", ago(b.UpdatedAt)},
	}
	var params map[string]any
	_ = json.Unmarshal(b.Params, &params)
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := params[k]
		s, ok := v.(string)
		if !ok {
			vb, _ := json.Marshal(v)
			s = string(vb)
		}
		if k == "script" {
			s = fmt.Sprintf("%d lines (bundle show -o json prints it)", strings.Count(strings.TrimRight(s, "\n"), "\n")+1)
		}
		kvs = append(kvs, [2]string{"  " + k, s})
	}
	targets := []string{}
	for _, a := range as {
		t := "device " + a.MAC
		if a.Group != "" {
			t = "group " + a.Group
		}
		targets = append(targets, fmt.Sprintf("%s (%s, #%d)", t, onceText(a.Once), a.ID))
	}
	kvs = append(kvs, [2]string{"Assigned to", strings.Join(targets, "; ")})
	return printKV(g.stdout, kvs)
}

// paramSummary is a bundle's parameters in a few words.
func paramSummary(kind string, raw json.RawMessage) string {
	p, err := bundle.Decode(kind, raw)
	if err != nil {
		return string(raw)
	}
	parts := func(ps []int) string {
		if len(ps) == 0 {
			return "whole disk"
		}
		s := make([]string, len(ps))
		for i, n := range ps {
			s[i] = strconv.Itoa(n)
		}
		return "partitions " + strings.Join(s, ",")
	}
	then := func(after string) string {
		if after == "" {
			return ""
		}
		return ", then " + after
	}
	on := func(dev string) string {
		if dev == "" {
			return ""
		}
		return " on " + dev
	}
	switch v := p.(type) {
	case *bundle.Restore:
		return fmt.Sprintf("image %s, %s%s%s", v.Image, parts(v.Partitions), on(v.Device), then(v.After))
	case *bundle.Capture:
		s := "image " + v.Image + on(v.Device)
		if v.Compression != 0 {
			s += fmt.Sprintf(", zstd %d", v.Compression)
		}
		return s + then(v.After)
	case *bundle.Script:
		s := fmt.Sprintf("%d-line script", strings.Count(strings.TrimRight(v.Script, "\n"), "\n")+1)
		if v.Timeout > 0 {
			s += ", timeout " + time.Duration(v.Timeout).String()
		}
		return s + then(v.After)
	case *bundle.Multicast:
		s := fmt.Sprintf("image %s, %s%s", v.Image, parts(v.Partitions), on(v.Device))
		if v.MinClients > 0 {
			s += fmt.Sprintf(", start at %d clients", v.MinClients)
		}
		if v.MaxWait > 0 {
			s += ", or " + time.Duration(v.MaxWait).String() + " after the last join"
		}
		return s + then(v.After)
	case *bundle.OSInstall:
		if v.Chain != "" {
			return "chain " + v.Chain
		}
		s := "kernel " + v.Kernel
		if len(v.Initrd) > 0 {
			s += " initrd " + strings.Join(v.Initrd, ",")
		}
		if v.Cmdline != "" {
			s += fmt.Sprintf(" %q", v.Cmdline)
		}
		if v.Loader != "" {
			s += " via " + v.Loader
		}
		return s
	case *bundle.Wipe:
		disks := "every fixed disk"
		if len(v.Disks) > 0 {
			disks = strings.Join(v.Disks, ",")
		}
		return fmt.Sprintf("%s %s%s", cmpOr(v.Mode, bundle.WipeZero), disks, then(v.After))
	case *bundle.Inventory:
		return "collect hardware" + then(v.After)
	case *bundle.LocalBoot:
		if v.Method != "" {
			return "boot the local disk (" + v.Method + ")"
		}
		return "boot the local disk"
	}
	return string(raw)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ensureBundle makes sure a bundle NAME of this kind has these
// parameters: created if missing, changed (PATCH) if its parameters
// differ. It returns the bundle and what it did: created, updated or
// unchanged.
func ensureBundle(ctx context.Context, c *apiClient, name, kind, desc string, params any) (store.Bundle, string, error) {
	want, err := json.Marshal(params)
	if err != nil {
		return store.Bundle{}, "", err
	}
	norm, err := bundle.Normalize(kind, want)
	if err != nil {
		return store.Bundle{}, "", err
	}
	var b store.Bundle
	err = c.do(ctx, "GET", "/api/v1/bundles/"+pathEsc(name), nil, &b)
	switch {
	case isStatus(err, http.StatusNotFound):
		body := map[string]any{"name": name, "kind": kind, "description": desc, "params": json.RawMessage(norm)}
		if err := c.do(ctx, "POST", "/api/v1/bundles", body, &b); err != nil {
			return b, "", err
		}
		return b, "created", nil
	case err != nil:
		return b, "", err
	}
	if b.Kind != kind {
		return b, "", fmt.Errorf("bundle %s exists with kind %s, not %s: rename or remove it (preboot bundle rm %s)", name, b.Kind, kind, name)
	}
	if have, err := bundle.Normalize(kind, b.Params); err == nil && sameJSON(have, norm) {
		return b, "unchanged", nil
	}
	if err := c.do(ctx, "PATCH", "/api/v1/bundles/"+pathEsc(name), map[string]any{"params": json.RawMessage(norm)}, &b); err != nil {
		return b, "", err
	}
	return b, "updated", nil
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// pageFlags registers --limit and --offset.
func pageFlags(fs *pflag.FlagSet, limit, offset *int) {
	fs.IntVar(limit, "limit", 100, "how many (1..1000)")
	fs.IntVar(offset, "offset", 0, "skip this many")
}

func pageQuery(limit, offset int) url.Values {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	return q
}

func setIf(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}
