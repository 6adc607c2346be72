package policy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/preboot/preboot/bundle"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/store"
)

// run carries out a bundle decision for a device: registers it when a
// rule or the unregistered default took charge of it, then boots what
// the bundle needs — the imaging environment with a job token for agent
// kinds, the installer for os-install.
func (e *Engine) run(ctx context.Context, base string, dev store.Device, d Decision, why string) (string, error) {
	// A new device's job is created with its registration (one
	// transaction), with the job's and the work's events.
	pre := e.prepareJob(ctx, dev, d)
	var work func(store.Job) store.Event
	if pre != nil {
		b, source := d.Bundle.Name, d.Source
		work = func(j store.Job) store.Event {
			return store.Event{Time: e.now(), Kind: store.EventWork,
				Message: fmt.Sprintf("%s: bundle %s in the imaging environment (job %d, %s)", why, b, j.ID, source)}
		}
	}
	d, created, err := e.registerWith(ctx, dev, d, pre, work)
	if err != nil {
		return "", err
	}
	b := d.Bundle
	if b == nil {
		return e.localScript(ctx, dev.MAC, d.Reason)
	}
	switch {
	case b.Kind == store.KindOSInstall:
		var p bundle.OSInstall
		if err := decodeParams(*b, &p); err != nil {
			return e.localScript(ctx, dev.MAC, err.Error())
		}
		if p.Loader == store.LoaderPXELinux {
			// A pxelinux bundle reached by iPXE (already iPXE, or handed
			// pxelinux.0 by name): run pxelinux from TFTP, which then asks
			// for its generated config.
			if err := e.event(ctx, dev.MAC, store.EventWork, "chain pxelinux for bundle "+b.Name+" ("+why+")"); err != nil {
				return "", err
			}
			host := hostOnly(base)
			return "#!ipxe\nset 210:string tftp://" + host + "/\nchain tftp://" + host + "/" + e.Boot.PXELinux + "\n", nil
		}
		job, err := e.handOut(ctx, dev, d, why)
		if refused, script := e.refusal(ctx, base, dev.MAC, err); refused {
			return script, nil
		}
		if err != nil {
			return "", err
		}
		// Secrets are substituted here only (the bundle opted in); the
		// echoed lines show the placeholders.
		if p.Chain != "" {
			return fmt.Sprintf("#!ipxe\necho Preboot: job %d: bundle %s: chain %s\nchain %s || goto failed\n:failed\necho Preboot: %s could not be chained, booting the local disk\nsleep 5\n%s",
				job.ID, menuText(b.Name), p.Chain, p.Expand(p.Chain), p.Chain, e.localBoot()), nil
		}
		return e.kernelScript(base, fmt.Sprintf("job %d: bundle %s", job.ID, b.Name), p.Kernel, p.Initrd, p.Expand(p.Cmdline)), nil
	case store.RunsAgent(b.Kind):
		spec, err := e.imagingBoot(ctx, base, dev, d, created)
		if refused, script := e.refusal(ctx, base, dev.MAC, err); refused {
			return script, nil
		}
		if err != nil {
			return e.localScript(ctx, dev.MAC, err.Error())
		}
		if created == nil { // else recorded with the registration
			if err := e.event(ctx, dev.MAC, store.EventWork, fmt.Sprintf("%s: bundle %s in the imaging environment (job %d, %s)", why, b.Name, spec.Job, d.Source)); err != nil {
				return "", err
			}
		}
		return e.kernelScript(base, fmt.Sprintf("job %d: %s %s", spec.Job, b.Kind, b.Name), spec.Kernel, spec.Initrd, spec.Cmdline), nil
	}
	return e.localScript(ctx, dev.MAC, "bundle "+b.Name+" boots the local disk")
}

// busyRetry is how long a device whose job is open elsewhere waits before
// it asks again.
const busyRetry = 30 * time.Second

// refusal turns a claim the job service refused into the device's
// script: when its job is open (handed to another address, or its agent
// still at work) the device waits and asks again — the job ends or
// expires meanwhile — and when it claimed too often it boots its disk.
// The refusal itself was recorded as a security event.
func (e *Engine) refusal(ctx context.Context, base, mac string, err error) (bool, string) {
	var busy *jobs.BusyError
	switch {
	case errors.As(err, &busy):
		self := base + "/boot.ipxe?mac=" + url.QueryEscape(mac) + "&action=" + actionDef
		return true, fmt.Sprintf("#!ipxe\necho Preboot: job %d is %s for this machine (handed to %s); asking again in %d s\nsleep %d\nchain %s || goto failed\n:failed\n%s",
			busy.Job.ID, busy.Job.State, menuText(orUnknown(busy.Job.ClientIP)), int(busyRetry.Seconds()), int(busyRetry.Seconds()), self, e.localBoot())
	case errors.Is(err, jobs.ErrRateLimited):
		return true, "#!ipxe\necho Preboot: too many boots into work for this machine; booting the local disk\nsleep 5\n" + e.localBoot()
	}
	return false, ""
}

func orUnknown(ip string) string {
	if ip == "" {
		return "an unknown address"
	}
	return ip
}

func decodeParams(b store.Bundle, v any) error {
	p, err := bundle.Decode(b.Kind, b.Params)
	if err != nil {
		return fmt.Errorf("bundle %s: %w", b.Name, err)
	}
	switch t := v.(type) {
	case *bundle.OSInstall:
		*t = *p.(*bundle.OSInstall)
	default:
		return fmt.Errorf("bundle %s: unexpected params type %T", b.Name, v)
	}
	return nil
}

// kernelScript boots a kernel with initrds; on failure the local disk.
func (e *Engine) kernelScript(base, what, kernel string, initrd []string, cmdline string) string {
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "echo Preboot: %s\n", menuText(what))
	names := make([]string, len(initrd))
	for i := range initrd {
		names[i] = fmt.Sprintf("initrd%d", i)
		// EFI iPXE (2019) hands initrds to the kernel's EFI stub by
		// name: the command line must name them.
		cmdline = strings.TrimSpace(cmdline + " initrd=" + names[i])
	}
	fmt.Fprintf(&b, "kernel %s %s || goto failed\n", fileURL(base, kernel), cmdline)
	for i, in := range initrd {
		fmt.Fprintf(&b, "initrd --name %s %s || goto failed\n", names[i], fileURL(base, in))
	}
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\necho Preboot: the assigned work could not be started, booting the local disk\nsleep 5\n")
	b.WriteString(e.localBoot())
	return b.String()
}

// handOut records a bundle that leaves the server and never reports back
// (os-install): its job succeeds when handed out.
func (e *Engine) handOut(ctx context.Context, dev store.Device, d Decision, why string) (store.Job, error) {
	if e.Jobs == nil {
		return store.Job{}, errors.New("this server runs no job service")
	}
	j, err := e.Jobs.HandOut(ctx, jobs.StartRequest{MAC: dev.MAC, Bundle: *d.Bundle, Assignment: d.Assignment, Why: why, ClientIP: clientFrom(ctx)})
	if err != nil {
		return store.Job{}, fmt.Errorf("hand out bundle %s to %s: %w", d.Bundle.Name, dev.MAC, err)
	}
	msg := fmt.Sprintf("%s: bundle %s (job %d, %s)", why, d.Bundle.Name, j.ID, d.Source)
	if err := e.event(ctx, dev.MAC, store.EventWork, msg); err != nil {
		return store.Job{}, err
	}
	return j, nil
}

// register applies the registration part of a decision made by a rule or
// the unregistered default: the device is registered (and named), joins
// the rule's group, and the bundle becomes a once assignment of the
// device, so that a failed run runs again at the next boot and a
// successful one is not repeated. All of it, with its event, is one
// store transaction (Store.Register): a failure leaves no half-registered
// device.
func (e *Engine) register(ctx context.Context, dev store.Device, d Decision) (Decision, error) {
	d, _, err := e.registerWith(ctx, dev, d, nil, nil)
	return d, err
}

// prepareJob returns the job of a decision to register a device this
// request created and run a bundle the imaging agent carries out, ready
// to be created with the registration (nil for any other decision, when
// the imaging environment is missing — the job fails with a message
// then — or when the job service refuses: then the usual path refuses
// again and says why).
func (e *Engine) prepareJob(ctx context.Context, dev store.Device, d Decision) *jobs.Prepared {
	if !d.Register || d.Bundle == nil || !store.RunsAgent(d.Bundle.Kind) || e.Jobs == nil || !isNewDevice(ctx, dev.MAC) ||
		!e.exists(e.Imaging.Kernel) || !e.exists(e.Imaging.Initrd) {
		return nil
	}
	p, err := e.Jobs.Prepare(ctx, jobs.StartRequest{MAC: dev.MAC, Bundle: *d.Bundle, Assignment: d.Assignment, Why: d.Reason, ClientIP: clientFrom(ctx)})
	if err != nil {
		return nil
	}
	return &p
}

// createdJob is a job created with its device's registration.
type createdJob struct {
	job   store.Job
	token string
}

// registerWith is register, and creates the prepared job pre (when not
// nil) in the registration's transaction with its event and work's; the
// job created is nil when there was none to create or the device had an
// open job.
func (e *Engine) registerWith(ctx context.Context, dev store.Device, d Decision, pre *jobs.Prepared, work func(store.Job) store.Event) (Decision, *createdJob, error) {
	if !d.Register {
		return d, nil, nil
	}
	base, err := e.nameBase(ctx, dev, d.naming)
	if err != nil {
		return d, nil, err
	}
	reg := store.Registration{MAC: dev.MAC, Name: base, Group: d.JoinGroup}
	if d.Bundle != nil && d.Assignment == nil && d.Bundle.Kind != store.KindLocalBoot {
		reg.BundleID = d.Bundle.ID
	}
	note := e.takeNote(ctx)
	at := e.now()
	reg.Event = func(r store.Registered) store.Event {
		msg := fmt.Sprintf("registered by %s", d.Source)
		if r.Name != "" {
			msg += " as " + r.Name
		}
		if d.JoinGroup != "" {
			msg += ", joined group " + d.JoinGroup
		}
		if r.Assignment != nil {
			msg += ", bundle " + d.Bundle.Name + " assigned once"
		}
		return store.Event{Time: at, Kind: store.EventPolicy, Message: note + msg}
	}
	if pre != nil {
		reg.Job = &pre.Job
		reg.JobEvents = func(j store.Job) []store.Event {
			es := []store.Event{pre.CreatedEvent(j)}
			if work != nil {
				es = append(es, work(j))
			}
			return es
		}
	}
	r, err := e.Store.Register(ctx, reg)
	if err != nil {
		return d, nil, fmt.Errorf("register %s: %w", dev.MAC, err)
	}
	e.cache.noteOwn(r.Version, dev.MAC, r.Assignment)
	if r.Assignment != nil {
		d.Assignment = r.Assignment
	}
	e.logger().InfoContext(ctx, "device registered", "mac", dev.MAC, "source", d.Source, "name", r.Name, "group", d.JoinGroup)
	var created *createdJob
	if r.Job != nil {
		created = &createdJob{job: *r.Job, token: pre.Token}
	}
	return d, created, nil
}

var nameUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// nameBase is the name the naming settings give a device that has none
// ("" for a device that has one, or when naming is off); the store adds
// -2, -3... when another device has it.
func (e *Engine) nameBase(ctx context.Context, dev store.Device, n store.Naming) (string, error) {
	if dev.Name != "" {
		return "", nil
	}
	base := ""
	switch n.From {
	case store.NameFromSerial:
		base = dev.Serial
	case store.NameFromAsset:
		base = dev.AssetTag
	case store.NameFromSequence:
		cnt, err := e.Store.CountDevices(ctx, store.DeviceFilter{Registered: ptr(true)})
		if err != nil {
			return "", err
		}
		base = fmt.Sprintf("%03d", cnt+1)
	}
	if n.From != "" && strings.Trim(nameUnsafe.ReplaceAllString(base, ""), "-._") == "" {
		base = strings.ReplaceAll(dev.MAC, ":", "") // fall back when the source is empty
	}
	if base != "" {
		base = n.Prefix + strings.Trim(nameUnsafe.ReplaceAllString(base, "-"), "-")
	}
	return base, nil
}

func ptr[T any](v T) *T { return &v }

// imagingBootSpec is the imaging environment boot of one job.
type imagingBootSpec struct {
	Job     int64
	Kernel  string
	Initrd  []string
	Cmdline string
}

// imagingBoot starts a job for the bundle and returns the imaging
// environment's kernel, initrd and command line carrying the server URL and
// the job's token (the seed's phase 8). When the environment has not been
// built the job fails at once with a message that says what to do.
func (e *Engine) imagingBoot(ctx context.Context, base string, dev store.Device, d Decision, created *createdJob) (imagingBootSpec, error) {
	if e.Jobs == nil {
		return imagingBootSpec{}, fmt.Errorf("bundle %s for %s, but this server runs no job service", d.Bundle.Name, dev.MAC)
	}
	var job store.Job
	var token string
	if created != nil {
		// Created with the device's registration.
		job, token = created.job, created.token
	} else {
		var err error
		job, token, err = e.Jobs.Start(ctx, jobs.StartRequest{MAC: dev.MAC, Bundle: *d.Bundle, Assignment: d.Assignment, Why: d.Reason, ClientIP: clientFrom(ctx)})
		if err != nil {
			return imagingBootSpec{}, fmt.Errorf("start %s job for %s: %w", d.Bundle.Kind, dev.MAC, err)
		}
	}
	kernel, initrd := e.Imaging.Kernel, e.Imaging.Initrd
	for _, f := range []string{kernel, initrd} {
		if !e.exists(f) {
			msg := fmt.Sprintf("the imaging environment is missing (%s not in the TFTP root): run `preboot env build --out %s`", f, e.TFTPRoot+"/"+path.Dir(kernel))
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
	// Rebuilt, not concatenated: url.Parse leaves an IPv6 zone
	// unescaped in u.Host ("[fe80::1%eth0]"), String escapes it again.
	server := (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
	if e.AgentServer != nil {
		if s := e.AgentServer(u.Host); s != "" {
			server = s
		}
	}
	for _, p := range e.PeerServers {
		if !strings.Contains(","+server+",", ","+p+",") {
			server += "," + p
		}
	}
	cmdline := fmt.Sprintf("%s preboot.server=%s preboot.token=%s preboot.job=%d", e.Imaging.Cmdline, server, token, job.ID)
	if e.AgentFingerprint != "" {
		cmdline += " preboot.tls=" + e.AgentFingerprint
	}
	if e.ImageServer != nil && job.Kind == store.KindImageRestore && job.ClientIP != "" {
		// A device of a site: image data from its site server, job
		// control here (docs/scale-out.md).
		if u, pin := e.ImageServer(ctx, job.ClientIP); u != "" {
			cmdline += " preboot.images=" + u
			if pin != "" {
				cmdline += " preboot.images.tls=" + pin
			}
		}
	}
	if job.ClientIP != "" {
		// The token works only from this address: the imaging
		// environment asks its DHCP server for it again, on the
		// interface the machine booted from.
		cmdline += " preboot.ip=" + job.ClientIP + " preboot.mac=" + dev.MAC
	}
	cmdline = strings.TrimSpace(cmdline)
	return imagingBootSpec{Job: job.ID, Kernel: kernel, Initrd: []string{initrd}, Cmdline: cmdline}, nil
}
