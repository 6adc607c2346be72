package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/preboot/preboot/rules"
	"github.com/preboot/preboot/store"
)

// Decision actions.
const (
	ActionBundle = "bundle" // run Decision.Bundle
	ActionLocal  = "local"  // boot the local disk
	ActionMenu   = "menu"   // show the Preboot menu (unregistered default "menu")
	ActionIgnore = "ignore" // do not answer the device at all
)

// Decision is what the policy does for a device at its next boot, and why.
//
// Precedence: the device's own assignment; else the assignment of the
// device's first group by priority (static members and devices matching
// the group's expression alike); else, for an unregistered device, the
// first enabled rule that matches it; else the unregistered default
// (unregistered devices) or the local disk.
type Decision struct {
	Action     string            `json:"action"`
	Bundle     *store.Bundle     `json:"bundle,omitempty"`
	Assignment *store.Assignment `json:"assignment,omitempty"`
	// Source says where the decision came from: "device", "group:<name>",
	// "rule:<name>", "unregistered-default" or "none".
	Source string     `json:"source"`
	Reason string     `json:"reason"`
	Menu   store.Menu `json:"menu"`
	// Register: the device becomes registered when this decision is
	// applied (a rule or the unregistered default took charge of it);
	// JoinGroup is the group a matching rule adds it to.
	Register  bool   `json:"register,omitempty"`
	JoinGroup string `json:"join_group,omitempty"`
	// Groups are the device's groups (static and by expression) by
	// priority.
	Groups []string `json:"groups"`
	// BootPath: for UEFI x64 devices, iPXE or the Secure Boot path
	// (filled by the API, not by Decide).
	BootPath *BootPath `json:"boot_path,omitempty"`

	// naming is the naming settings of the snapshot the decision was
	// made on (for a registration).
	naming store.Naming
}

// snapshot is the policy's view of bundles, groups, assignments, rules
// and settings at one PolicyVersion; boot decisions read it without
// going to the store. A snapshot is not changed once made (but for its
// lazily filled caches): a change to one device makes a new snapshot that
// shares everything else with the previous one (see follow).
type snapshot struct {
	version     int64
	settings    store.Settings
	bundles     map[int64]store.Bundle
	byName      map[string]store.Bundle
	devAssign   assignIndex
	groupAssign map[string]store.Assignment
	groups      []groupEntry   // by priority
	groupIndex  map[string]int // name → index in groups
	dynamic     []int          // indexes of the groups with an expression
	rules       []ruleEntry    // by position
	// exprs are the parsed expressions by text; the next full load
	// parses only the new ones.
	exprs map[string]*rules.Expr

	lazy *lazyCache
}

// lazyCache holds what decisions read from the store once per device or
// group: static memberships and menu overrides. Snapshots made by
// following device changes share it; following a change drops the
// device's entries, and a value read before the drop is not kept.
type lazyCache struct {
	mu      sync.Mutex
	menus   map[menuKey]menuEntry
	members map[string][]string // static groups by MAC
	// dropped is the policy version of the last change followed to a
	// device (key {ScopeDevice, MAC}) or a group's menu ({ScopeGroup,
	// name}).
	dropped map[menuKey]int64
}

type menuKey struct{ scope, target string }

func newLazyCache() *lazyCache {
	return &lazyCache{menus: map[menuKey]menuEntry{}, members: map[string][]string{}, dropped: map[menuKey]int64{}}
}

// drop forgets what is cached about devices and group menus changed by
// version v.
func (l *lazyCache) drop(macs, groupMenus []string, v int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, mac := range macs {
		delete(l.members, mac)
		k := menuKey{store.ScopeDevice, mac}
		delete(l.menus, k)
		l.dropped[k] = v
	}
	for _, g := range groupMenus {
		k := menuKey{store.ScopeGroup, g}
		delete(l.menus, k)
		l.dropped[k] = v
	}
}

// keeps reports whether a value of key read by a decision on snapshot
// version v may be cached: not when a change after v was followed
// meanwhile (the value may predate it). Called with l.mu held.
func (l *lazyCache) keeps(key menuKey, v int64) bool {
	return l.dropped[key] <= v
}

type groupEntry struct {
	g    store.Group
	expr *rules.Expr // nil: static members only
}

type ruleEntry struct {
	r    store.Rule
	expr *rules.Expr
}

type menuEntry struct {
	m  store.Menu
	ok bool
}

// cache holds the current snapshot.
type cache struct {
	mu   sync.Mutex
	snap *snapshot
	// own are this engine's registrations by policy version, not yet
	// followed: following them needs no store query.
	own map[int64]ownChange
}

// ownChange is what a registration of this engine changed at its policy
// version: the device's memberships and, when assigned, its assignment.
type ownChange struct {
	mac        string
	assignment *store.Assignment // nil: the assignment did not change
}

// noteOwn records a registration's change (version 0: none).
func (c *cache) noteOwn(v int64, mac string, a *store.Assignment) {
	if v == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil && c.snap.version >= v {
		return // followed already
	}
	if c.own == nil {
		c.own = map[int64]ownChange{}
	}
	c.own[v] = ownChange{mac: mac, assignment: a}
}

// forget drops the own changes up to version v (followed, or loaded).
// Called with c.mu held.
func (c *cache) forget(v int64) {
	for k := range c.own {
		if k <= v {
			delete(c.own, k)
		}
	}
}

// snapshot returns the policy snapshot for the store's current
// PolicyVersion: the cached one when the version did not change; else
// the cached one brought up to date when the store's change log says
// only devices' assignments, memberships or menus (or group menus)
// changed (a registration, an admin's change to one device); else a full
// load. Servers sharing a database see each other's changes the same way.
// The version never decreases: a snapshot newer than the version read
// (another request followed a later change meanwhile) is returned as is.
//
// The version is the one the store read with the request's sighting when
// it left one in the context (store.WithVersionSlot), else asked for.
func (e *Engine) snapshot(ctx context.Context) (*snapshot, error) {
	v, ok := store.TakeVersion(ctx)
	if !ok {
		var err error
		if v, err = e.Store.PolicyVersion(ctx); err != nil {
			return nil, fmt.Errorf("policy version: %w", err)
		}
	}
	e.cache.mu.Lock()
	defer e.cache.mu.Unlock()
	prev := e.cache.snap
	if prev != nil && prev.version >= v {
		return prev, nil
	}
	if prev != nil {
		s, ok, err := e.follow(ctx, prev, v)
		if err != nil {
			return nil, err
		}
		if ok {
			e.cache.snap = s
			e.cache.forget(v)
			return s, nil
		}
	}
	s, err := e.load(ctx, v, prev)
	if err != nil {
		return nil, err
	}
	e.cache.snap = s
	e.cache.forget(v)
	return s, nil
}

// follow makes the snapshot of version v from prev when every change
// between them is to one device, one group (its fields, menu or
// assignment), one bundle, the rules or the settings; ok is false when
// something else changed (a rename, a deleted group...) or the log does
// not cover the versions.
func (e *Engine) follow(ctx context.Context, prev *snapshot, v int64) (*snapshot, bool, error) {
	// This engine's own registrations need no query: what they changed
	// is known. Called with e.cache.mu held.
	if own, ok := e.ownChanges(prev.version, v); ok {
		s := *prev
		s.version = v
		s.devAssign = prev.devAssign.edit()
		macs := make([]string, 0, len(own))
		for _, c := range own {
			if c.assignment != nil {
				s.devAssign.set(c.mac, c.assignment)
			}
			macs = append(macs, c.mac)
		}
		prev.lazy.drop(macs, nil, v)
		return &s, true, nil
	}
	cs, err := e.Store.PolicyChanges(ctx, prev.version, v)
	if err != nil {
		return nil, false, fmt.Errorf("policy changes: %w", err)
	}
	if int64(len(cs)) != v-prev.version {
		return nil, false, nil
	}
	var macs, groupMenus, groups, groupAssigns []string
	var bundles []int64
	var rulesChanged, settingsChanged bool
	for _, c := range cs {
		switch c.Kind {
		case store.PolicyChangeBundle:
			id, err := strconv.ParseInt(c.Target, 10, 64)
			if err != nil {
				return nil, false, nil
			}
			if !slices.Contains(bundles, id) {
				bundles = append(bundles, id)
			}
		case store.PolicyChangeGroup:
			if !slices.Contains(groups, c.Target) {
				groups = append(groups, c.Target)
			}
		case store.PolicyChangeGroupAssignment:
			if !slices.Contains(groupAssigns, c.Target) {
				groupAssigns = append(groupAssigns, c.Target)
			}
		case store.PolicyChangeRules:
			rulesChanged = true
		case store.PolicyChangeSettings:
			settingsChanged = true
		case store.PolicyChangeDevice:
			if !slices.Contains(macs, c.Target) {
				macs = append(macs, c.Target)
			}
		case store.PolicyChangeGroupMenu:
			if !slices.Contains(groupMenus, c.Target) {
				groupMenus = append(groupMenus, c.Target)
			}
		default:
			return nil, false, nil
		}
	}
	s := *prev
	s.version = v
	if settingsChanged {
		if s.settings, err = e.loadSettings(ctx); err != nil {
			return nil, false, err
		}
	}
	if len(bundles) > 0 {
		if err := e.followBundles(ctx, &s, bundles); err != nil {
			return nil, false, err
		}
	}
	if len(groups) > 0 {
		ok, err := e.followGroups(ctx, &s, groups)
		if !ok || err != nil {
			return nil, false, err
		}
	}
	if len(groupAssigns) > 0 {
		s.groupAssign = maps.Clone(prev.groupAssign)
		for _, name := range groupAssigns {
			as, err := e.Store.Assignments(ctx, store.AssignmentFilter{Group: name, Page: store.Page{Limit: 10}})
			if err != nil {
				return nil, false, fmt.Errorf("assignment of group %s: %w", name, err)
			}
			delete(s.groupAssign, name)
			for _, a := range as {
				if a.Group == name {
					s.groupAssign[name] = a
				}
			}
		}
	}
	if rulesChanged {
		// Nothing else in the snapshot depends on the rules (they name
		// bundles and groups, looked up at decision time).
		s.exprs = map[string]*rules.Expr{}
		for _, ge := range s.groups {
			if ge.expr != nil {
				s.exprs[ge.g.Match] = ge.expr
			}
		}
		if s.rules, err = e.loadRules(ctx, prev.exprs, s.exprs); err != nil {
			return nil, false, err
		}
	}
	if len(macs) > 0 {
		s.devAssign = prev.devAssign.edit()
		for _, mac := range macs {
			as, err := e.Store.Assignments(ctx, store.AssignmentFilter{MAC: mac, Page: store.Page{Limit: 1000}})
			if err != nil {
				return nil, false, fmt.Errorf("assignments of %s: %w", mac, err)
			}
			s.devAssign.set(mac, nil)
			for _, a := range as {
				if a.MAC == mac {
					s.devAssign.set(mac, &a)
				}
			}
		}
	}
	prev.lazy.drop(macs, groupMenus, v)
	return &s, true, nil
}

// ownChanges returns this engine's registrations of the versions
// after..v, oldest first, when they are all of those versions.
func (e *Engine) ownChanges(after, v int64) ([]ownChange, bool) {
	if v-after > int64(len(e.cache.own)) {
		return nil, false
	}
	out := make([]ownChange, 0, v-after)
	for k := after + 1; k <= v; k++ {
		c, ok := e.cache.own[k]
		if !ok {
			return nil, false
		}
		out = append(out, c)
	}
	return out, true
}

// followBundles reads the bundles ids again into s (a bundle not found
// was deleted: nothing referenced it).
func (e *Engine) followBundles(ctx context.Context, s *snapshot, ids []int64) error {
	s.bundles, s.byName = maps.Clone(s.bundles), maps.Clone(s.byName)
	for _, id := range ids {
		if old, ok := s.bundles[id]; ok {
			delete(s.byName, old.Name)
			delete(s.bundles, id)
		}
		b, err := e.Store.BundleByID(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("bundle #%d: %w", id, err)
		}
		s.bundles[id], s.byName[b.Name] = b, b
	}
	return nil
}

// followGroups reads the groups names again into s and puts the groups
// in priority order again; ok is false when one of them is gone (a
// deleted group is logged as a change of anything, so this is a group
// deleted after a later change: load everything).
func (e *Engine) followGroups(ctx context.Context, s *snapshot, names []string) (bool, error) {
	prevExprs := s.exprs
	s.groups, s.exprs = slices.Clone(s.groups), maps.Clone(s.exprs)
	for _, name := range names {
		g, err := e.Store.Group(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("group %s: %w", name, err)
		}
		ge := groupEntry{g: g}
		if g.Match != "" {
			if ge.expr, err = parse(g.Match, prevExprs, s.exprs); err != nil {
				e.logger().WarnContext(ctx, "group expression does not parse: ignored", "group", g.Name, "err", err)
				ge.expr = nil
			}
		}
		if i, ok := s.groupIndex[name]; ok {
			s.groups[i] = ge
		} else {
			s.groups = append(s.groups, ge)
		}
	}
	s.index()
	return true, nil
}

// index sorts the groups by priority and indexes them by name, and the
// dynamic ones.
func (s *snapshot) index() {
	slices.SortStableFunc(s.groups, func(a, b groupEntry) int { return a.g.Priority - b.g.Priority })
	s.groupIndex, s.dynamic = make(map[string]int, len(s.groups)), nil
	for i, ge := range s.groups {
		s.groupIndex[ge.g.Name] = i
		if ge.expr != nil {
			s.dynamic = append(s.dynamic, i)
		}
	}
}

// assignIndex is the devices' assignments by MAC in a snapshot: a base
// map shared by the snapshots that followed changes since the last full
// load, and the few assignments changed since (nil: removed), so that
// following one device's change copies those few, not every device's
// assignment (a registration would copy 1,000 of them).
type assignIndex struct {
	base map[string]store.Assignment // never changed once shared
	over map[string]*store.Assignment
}

// maxOverlay is how many changed devices an assignIndex keeps apart
// before it makes a new base.
const maxOverlay = 64

func (x assignIndex) get(mac string) (store.Assignment, bool) {
	if a, ok := x.over[mac]; ok {
		if a == nil {
			return store.Assignment{}, false
		}
		return *a, true
	}
	a, ok := x.base[mac]
	return a, ok
}

// edit returns a copy of x to change with set (x itself is unchanged).
func (x assignIndex) edit() assignIndex {
	if len(x.over) < maxOverlay {
		return assignIndex{base: x.base, over: maps.Clone(x.over)}
	}
	base := maps.Clone(x.base)
	for mac, a := range x.over {
		if a == nil {
			delete(base, mac)
		} else {
			base[mac] = *a
		}
	}
	return assignIndex{base: base}
}

// set records the assignment of mac (nil: none) in a copy made by edit.
func (x *assignIndex) set(mac string, a *store.Assignment) {
	if x.over == nil {
		x.over = map[string]*store.Assignment{}
	}
	if a != nil {
		a = new(*a)
	}
	x.over[mac] = a
}

// parse returns the parsed expression x, reusing prev's when it has it.
func parse(x string, prev, next map[string]*rules.Expr) (*rules.Expr, error) {
	if p, ok := prev[x]; ok {
		next[x] = p
		return p, nil
	}
	p, err := rules.Parse(x)
	if err != nil {
		return nil, err
	}
	next[x] = p
	return p, nil
}

// load reads the whole policy of version v; prev (may be nil) lends its
// parsed expressions.
func (e *Engine) load(ctx context.Context, v int64, prev *snapshot) (*snapshot, error) {
	s := &snapshot{version: v, bundles: map[int64]store.Bundle{}, byName: map[string]store.Bundle{},
		devAssign: assignIndex{base: map[string]store.Assignment{}}, groupAssign: map[string]store.Assignment{},
		groupIndex: map[string]int{}, exprs: map[string]*rules.Expr{}, lazy: newLazyCache()}
	var known map[string]*rules.Expr
	if prev != nil {
		known = prev.exprs
	}
	var err error
	if s.settings, err = e.loadSettings(ctx); err != nil {
		return nil, err
	}
	const page = 1000
	for off := 0; ; off += page {
		bs, err := e.Store.Bundles(ctx, store.BundleFilter{Page: store.Page{Limit: page, Offset: off}})
		if err != nil {
			return nil, fmt.Errorf("load bundles: %w", err)
		}
		for _, b := range bs {
			s.bundles[b.ID], s.byName[b.Name] = b, b
		}
		if len(bs) < page {
			break
		}
	}
	for off := 0; ; off += page {
		as, err := e.Store.Assignments(ctx, store.AssignmentFilter{Page: store.Page{Limit: page, Offset: off}})
		if err != nil {
			return nil, fmt.Errorf("load assignments: %w", err)
		}
		for _, a := range as {
			if a.MAC != "" {
				s.devAssign.base[a.MAC] = a
			} else {
				s.groupAssign[a.Group] = a
			}
		}
		if len(as) < page {
			break
		}
	}
	for off := 0; ; off += page {
		gs, err := e.Store.Groups(ctx, store.Page{Limit: page, Offset: off})
		if err != nil {
			return nil, fmt.Errorf("load groups: %w", err)
		}
		for _, g := range gs {
			ge := groupEntry{g: g}
			if g.Match != "" {
				if ge.expr, err = parse(g.Match, known, s.exprs); err != nil {
					// The API validates expressions; one that no longer
					// parses (a newer server wrote it?) matches nothing.
					e.logger().WarnContext(ctx, "group expression does not parse: ignored", "group", g.Name, "err", err)
					ge.expr = nil
				}
			}
			s.groups = append(s.groups, ge)
		}
		if len(gs) < page {
			break
		}
	}
	s.index()
	if s.rules, err = e.loadRules(ctx, known, s.exprs); err != nil {
		return nil, err
	}
	return s, nil
}

// loadSettings reads the settings, completed with the defaults.
func (e *Engine) loadSettings(ctx context.Context) (store.Settings, error) {
	set, ok, err := e.Store.Settings(ctx)
	if err != nil {
		return store.Settings{}, fmt.Errorf("load settings: %w", err)
	}
	if !ok {
		set = e.DefaultSettings
	}
	return fillSettings(set, e.DefaultSettings), nil
}

// loadRules reads the enabled rules in position order with their parsed
// expressions (taken from known when there, recorded in next).
func (e *Engine) loadRules(ctx context.Context, known, next map[string]*rules.Expr) ([]ruleEntry, error) {
	rs, err := e.Store.Rules(ctx)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	var out []ruleEntry
	for _, r := range rs {
		if !r.Enabled {
			continue
		}
		x, err := parse(r.Match, known, next)
		if err != nil {
			e.logger().WarnContext(ctx, "rule expression does not parse: rule skipped", "rule", r.Name, "err", err)
			continue
		}
		out = append(out, ruleEntry{r: r, expr: x})
	}
	return out, nil
}

// fillSettings completes stored settings with the configured defaults.
func fillSettings(s, def store.Settings) store.Settings {
	if s.Menu.Mode == "" {
		s.Menu = def.Menu
	}
	if s.Unregistered.Action == "" {
		s.Unregistered = def.Unregistered
	}
	if s.Unregistered.Action == "" {
		s.Unregistered.Action = store.UnregisteredLocal
	}
	return s
}

// Settings returns the effective server settings.
func (e *Engine) Settings(ctx context.Context) (store.Settings, error) {
	s, err := e.snapshot(ctx)
	if err != nil {
		return store.Settings{}, err
	}
	return s.settings, nil
}

// Decide says what the device does at its next boot. It reads only; Apply
// carries a decision out.
func (e *Engine) Decide(ctx context.Context, dev store.Device) (Decision, error) {
	s, err := e.snapshot(ctx)
	if err != nil {
		return Decision{}, err
	}
	static, err := s.staticGroups(ctx, e.Store, dev.MAC)
	if err != nil {
		return Decision{}, err
	}
	facts := rules.FactsOf(dev)
	// The device's groups by priority: its static groups and the groups
	// whose expression it matches, in the snapshot's order.
	idx := make([]int, 0, len(static)+4)
	for _, name := range static {
		if i, ok := s.groupIndex[name]; ok {
			idx = append(idx, i)
		}
	}
	for _, i := range s.dynamic {
		if s.groups[i].expr.Match(facts) {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	groups := make([]groupEntry, len(idx))
	for j, i := range idx {
		groups[j] = s.groups[i]
	}
	d := Decision{Groups: make([]string, len(groups)), naming: s.settings.Naming}
	for i, ge := range groups {
		d.Groups[i] = ge.g.Name
	}
	d.Menu, err = e.effectiveMenu(ctx, s, dev.MAC, groups)
	if err != nil {
		return Decision{}, err
	}

	if a, ok := s.devAssign.get(dev.MAC); ok {
		return s.fromAssignment(d, dev, a, "device", e.now()), nil
	}
	for _, ge := range groups {
		if a, ok := s.groupAssign[ge.g.Name]; ok {
			return s.fromAssignment(d, dev, a, "group:"+ge.g.Name, e.now()), nil
		}
	}
	if dev.Registered {
		d.Action, d.Source, d.Reason = ActionLocal, "none", "nothing is assigned to the device or its groups"
		return d, nil
	}
	for _, re := range s.rules {
		if !re.expr.Match(facts) {
			continue
		}
		d.Source, d.Register, d.JoinGroup = "rule:"+re.r.Name, true, re.r.Group
		if re.r.Bundle != "" {
			b, ok := s.byName[re.r.Bundle]
			if !ok {
				return Decision{}, fmt.Errorf("rule %s: bundle %s: %w", re.r.Name, re.r.Bundle, store.ErrNotFound)
			}
			d.Action, d.Bundle = ActionBundle, &b
			if b.Kind == store.KindLocalBoot {
				d.Action = ActionLocal
			}
			d.Reason = fmt.Sprintf("unregistered device matched rule %s (%s): registers it and runs bundle %s once", re.r.Name, re.r.Match, b.Name)
			return d, nil
		}
		// A rule without a bundle registers the device into its group:
		// the group's assignment (if any) decides.
		if a, ok := s.groupAssign[re.r.Group]; ok {
			d2 := s.fromAssignment(d, dev, a, d.Source, e.now())
			d2.Reason = fmt.Sprintf("unregistered device matched rule %s: joins group %s, whose assignment applies: %s", re.r.Name, re.r.Group, d2.Reason)
			return d2, nil
		}
		d.Action = ActionLocal
		d.Reason = fmt.Sprintf("unregistered device matched rule %s: registers it (group %q), nothing to run", re.r.Name, re.r.Group)
		return d, nil
	}
	d.Source = "unregistered-default"
	switch u := s.settings.Unregistered; u.Action {
	case store.UnregisteredBundle:
		b, ok := s.byName[u.Bundle]
		if !ok {
			return Decision{}, fmt.Errorf("unregistered default: bundle %s: %w", u.Bundle, store.ErrNotFound)
		}
		d.Action, d.Bundle, d.Register = ActionBundle, &b, true
		d.Reason = "unregistered device, no rule matched: the unregistered default runs bundle " + b.Name + " once and registers it"
	case store.UnregisteredMenu:
		d.Action, d.Reason = ActionMenu, "unregistered device, no rule matched: the unregistered default shows the menu"
	case store.UnregisteredIgnore:
		d.Action, d.Reason = ActionIgnore, "unregistered device, no rule matched: the unregistered default ignores it"
	default:
		d.Action, d.Reason = ActionLocal, "unregistered device, no rule matched: the unregistered default boots the local disk"
	}
	return d, nil
}

func (s *snapshot) fromAssignment(d Decision, dev store.Device, a store.Assignment, source string, now time.Time) Decision {
	d.Source = source
	b, ok := s.bundles[a.BundleID]
	if !ok {
		d.Action, d.Reason = ActionLocal, fmt.Sprintf("assignment %d names bundle %d, which no longer exists", a.ID, a.BundleID)
		return d
	}
	d.Assignment, d.Bundle = &a, &b
	if !a.Due(now) {
		// Scheduled: not handed out before its time (the snapshot
		// holds the assignment; only the clock decides).
		d.Action, d.Reason = ActionLocal, fmt.Sprintf("%s assignment of %s is scheduled for %s", source, b.Name, a.At.Format(time.RFC3339))
		return d
	}
	if b.Kind == store.KindLocalBoot {
		d.Action, d.Reason = ActionLocal, fmt.Sprintf("%s assignment: bundle %s boots the local disk", source, b.Name)
		return d
	}
	if ap := dev.Applied; ap != nil {
		switch {
		case a.Once && ap.AssignmentID == a.ID:
			// A group's apply-once assignment (a device's own is
			// deleted when its run succeeds), forced or not.
			d.Action, d.Reason = ActionLocal, fmt.Sprintf("%s assignment of %s is apply-once and already succeeded on this device", source, b.Name)
			return d
		case !a.Force && ap.BundleID == b.ID && ap.BundleVersion == b.Version:
			d.Action, d.Reason = ActionLocal, fmt.Sprintf("bundle %s (version %d) was the last one applied to this device; assign it with force to run it again", b.Name, b.Version)
			return d
		}
	}
	d.Action = ActionBundle
	mode := "always"
	if a.Once {
		mode = "once"
	}
	if a.Force {
		mode += ", force"
	}
	d.Reason = fmt.Sprintf("%s assignment (%s): run bundle %s (%s)", source, mode, b.Name, b.Kind)
	return d
}

// effectiveMenu is the device's override, else its first group's (by
// priority) override, else the server default.
func (e *Engine) effectiveMenu(ctx context.Context, s *snapshot, mac string, groups []groupEntry) (store.Menu, error) {
	if m, ok, err := s.menu(ctx, e.Store, store.ScopeDevice, mac); err != nil || ok {
		return m, err
	}
	for _, ge := range groups {
		if m, ok, err := s.menu(ctx, e.Store, store.ScopeGroup, ge.g.Name); err != nil || ok {
			return m, err
		}
	}
	return s.settings.Menu, nil
}

// staticGroups returns the names of the groups the device is a static
// member of, from the snapshot's cache or the store.
// newDeviceKey marks a request whose sighting created the device: it has
// no static groups and no menu of its own yet (both need the device to
// exist first), so its decision asks the store for neither. Not cached:
// an administrator may add them from now on.
type newDeviceKey struct{}

func withNewDevice(ctx context.Context, mac string) context.Context {
	return context.WithValue(ctx, newDeviceKey{}, mac)
}

func isNewDevice(ctx context.Context, mac string) bool {
	m, _ := ctx.Value(newDeviceKey{}).(string)
	return m != "" && m == mac
}

func (s *snapshot) staticGroups(ctx context.Context, st store.Store, mac string) ([]string, error) {
	if isNewDevice(ctx, mac) {
		return nil, nil
	}
	l := s.lazy
	l.mu.Lock()
	names, ok := l.members[mac]
	l.mu.Unlock()
	if ok {
		return names, nil
	}
	gs, err := st.DeviceGroups(ctx, mac)
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", mac, err)
	}
	names = make([]string, len(gs))
	for i, g := range gs {
		names[i] = g.Name
	}
	l.mu.Lock()
	if l.keeps(menuKey{store.ScopeDevice, mac}, s.version) {
		l.members[mac] = names
	}
	l.mu.Unlock()
	return names, nil
}

func (s *snapshot) menu(ctx context.Context, st store.Store, scope, target string) (store.Menu, bool, error) {
	if scope == store.ScopeDevice && isNewDevice(ctx, target) {
		return store.Menu{}, false, nil
	}
	key := menuKey{scope, target}
	l := s.lazy
	l.mu.Lock()
	me, cached := l.menus[key]
	l.mu.Unlock()
	if cached {
		return me.m, me.ok, nil
	}
	m, err := st.Menu(ctx, scope, target)
	switch {
	case errors.Is(err, store.ErrNotFound):
		me = menuEntry{}
	case err != nil:
		return store.Menu{}, false, fmt.Errorf("%s %s menu: %w", scope, target, err)
	default:
		me = menuEntry{m: m, ok: true}
	}
	l.mu.Lock()
	if l.keeps(key, s.version) {
		l.menus[key] = me
	}
	l.mu.Unlock()
	return me.m, me.ok, nil
}

// bundleByName returns a bundle of the current snapshot.
func (e *Engine) bundleByName(ctx context.Context, name string) (store.Bundle, bool, error) {
	s, err := e.snapshot(ctx)
	if err != nil {
		return store.Bundle{}, false, err
	}
	b, ok := s.byName[name]
	return b, ok, nil
}
