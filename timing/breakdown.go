package timing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Stage is one step of a pipeline and the time spent in it.
type Stage struct {
	// Name says what the step does: restore: lookup (asking the store
	// which chunks it holds), check (reading the disk's present content
	// for a delta restore), fetch, verify (BLAKE3 + zstd decompression),
	// write, sync; capture: read, hash, lookup, compress, upload.
	Name string `json:"name"`
	// Resource is what the step waits on: network, cpu or disk.
	Resource string `json:"resource"`
	// Pool names the goroutines that run it; Workers is how many.
	Pool    string `json:"pool"`
	Workers int    `json:"workers"`
	// BusyUS is the time spent in the step (µs), summed over the pool's
	// goroutines; Count the operations timed.
	BusyUS int64 `json:"busy_us"`
	Count  int64 `json:"count"`
}

// Shares are percentages of the weighted time (see the package comment);
// they add up to 100 when anything was measured.
type Shares struct {
	Network int `json:"network"`
	CPU     int `json:"cpu"`
	Disk    int `json:"disk"`
	Waiting int `json:"waiting"`
}

// Breakdown is where a capture's or restore's time went so far. The
// agent sends it with its job progress; the server checks it with Parse,
// which also recomputes the derived fields.
type Breakdown struct {
	// ElapsedUS is the pipeline's elapsed time (µs).
	ElapsedUS int64   `json:"elapsed_us"`
	Stages    []Stage `json:"stages"`
	// Disk is the disk (or file) the pipeline read or wrote, as the agent
	// names it (/dev/sda): the inventory tells its model.
	Disk string `json:"disk,omitempty"`

	// Derived by Compute.
	Shares Shares `json:"shares"`
	// Bottleneck is the resource of the busiest pool's main stage
	// (BottleneckStage), "" when no pool was busy half of the time;
	// Busy is that pool's utilization in percent.
	Bottleneck      string `json:"bottleneck,omitempty"`
	BottleneckStage string `json:"bottleneck_stage,omitempty"`
	Busy            int    `json:"busy"`
}

// MinBusy is the utilization (percent) a pool needs to be named the
// bottleneck: below it every pool idled at least half of the time.
const MinBusy = 50

// Compute fills Shares, Bottleneck, BottleneckStage and Busy from
// ElapsedUS and Stages.
func (b *Breakdown) Compute() {
	b.Shares, b.Bottleneck, b.BottleneckStage, b.Busy = Shares{}, "", "", 0
	if b.ElapsedUS <= 0 || len(b.Stages) == 0 {
		return
	}
	wall := float64(b.ElapsedUS)
	type pool struct {
		eq   float64 // busy ÷ workers
		main *Stage  // the stage with the most busy time
	}
	pools := map[string]*pool{}
	var order []string
	res := map[string]float64{}
	for i := range b.Stages {
		s := &b.Stages[i]
		eq := float64(s.BusyUS) / float64(max(s.Workers, 1))
		res[s.Resource] += eq
		p := pools[s.Pool]
		if p == nil {
			p = &pool{}
			pools[s.Pool] = p
			order = append(order, s.Pool)
		}
		p.eq += eq
		if p.main == nil || s.BusyUS > p.main.BusyUS {
			p.main = s
		}
	}
	var top *pool
	for _, name := range order {
		if p := pools[name]; top == nil || p.eq > top.eq {
			top = p
		}
	}
	waiting := max(0, wall-top.eq)
	b.Shares = shares(res[Network], res[CPU], res[Disk], waiting)
	util := min(top.eq/wall, 1)
	b.Busy = int(math.Round(util * 100))
	if b.Busy >= MinBusy && top.main.BusyUS > 0 {
		b.Bottleneck, b.BottleneckStage = top.main.Resource, top.main.Name
	}
}

// shares turns the four times into whole percentages adding up to 100
// (largest remainder).
func shares(net, cpu, disk, wait float64) Shares {
	v := []float64{net, cpu, disk, wait}
	var sum float64
	for _, x := range v {
		sum += x
	}
	if sum <= 0 {
		return Shares{}
	}
	pct := make([]int, 4)
	rem := make([]float64, 4)
	left := 100
	for i, x := range v {
		f := x / sum * 100
		pct[i] = int(f)
		rem[i] = f - float64(pct[i])
		left -= pct[i]
	}
	for ; left > 0; left-- {
		i := 0
		for j := range rem {
			if rem[j] > rem[i] {
				i = j
			}
		}
		pct[i]++
		rem[i] = -1
	}
	return Shares{Network: pct[0], CPU: pct[1], Disk: pct[2], Waiting: pct[3]}
}

// Limits of Parse.
const (
	MaxStages = 32
	maxJSON   = 16 << 10
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// ErrInvalid marks a breakdown Parse refuses.
var ErrInvalid = errors.New("invalid time breakdown")

// Parse reads a breakdown sent by an agent: it checks every field and
// recomputes the derived ones (the sender's are ignored). An empty or
// null input is (nil, nil).
func Parse(raw []byte) (*Breakdown, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if len(raw) > maxJSON {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(raw), maxJSON)
	}
	var b Breakdown
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	if b.Stages == nil {
		b.Stages = []Stage{}
	}
	b.Compute()
	return &b, nil
}

// Validate checks the measured fields.
func (b *Breakdown) Validate() error {
	const maxUS = int64(400 * 24 * time.Hour / time.Microsecond) // a year and then some
	if b.ElapsedUS < 0 || b.ElapsedUS > maxUS {
		return fmt.Errorf("%w: elapsed_us %d out of range", ErrInvalid, b.ElapsedUS)
	}
	if len(b.Stages) > MaxStages {
		return fmt.Errorf("%w: %d stages, at most %d", ErrInvalid, len(b.Stages), MaxStages)
	}
	if len(b.Disk) > 256 || strings.ContainsFunc(b.Disk, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: disk name %.40q", ErrInvalid, b.Disk)
	}
	workers := map[string]int{}
	for i, s := range b.Stages {
		switch {
		case !nameRE.MatchString(s.Name):
			return fmt.Errorf("%w: stage %d: name %.40q (want a-z, 0-9, _ or -, at most 32)", ErrInvalid, i, s.Name)
		case !nameRE.MatchString(s.Pool):
			return fmt.Errorf("%w: stage %s: pool %.40q (want a-z, 0-9, _ or -, at most 32)", ErrInvalid, s.Name, s.Pool)
		case !slices.Contains([]string{Network, CPU, Disk}, s.Resource):
			return fmt.Errorf("%w: stage %s: resource %.40q (want network, cpu or disk)", ErrInvalid, s.Name, s.Resource)
		case s.Workers < 1 || s.Workers > 4096:
			return fmt.Errorf("%w: stage %s: workers %d (want 1..4096)", ErrInvalid, s.Name, s.Workers)
		case s.BusyUS < 0 || s.BusyUS > maxUS*4096:
			return fmt.Errorf("%w: stage %s: busy_us %d out of range", ErrInvalid, s.Name, s.BusyUS)
		case s.Count < 0:
			return fmt.Errorf("%w: stage %s: count %d", ErrInvalid, s.Name, s.Count)
		}
		if w, ok := workers[s.Pool]; ok && w != s.Workers {
			return fmt.Errorf("%w: pool %s: stage %s says %d workers, another %d", ErrInvalid, s.Pool, s.Name, s.Workers, w)
		}
		workers[s.Pool] = s.Workers
	}
	return nil
}

// Summary is the one-line breakdown:
// "network 62 % · CPU 21 % · disk 14 % · waiting 3 % — bottleneck: network (fetch, busy 97 %)".
func (b *Breakdown) Summary() string {
	if b == nil || b.Shares == (Shares{}) {
		return ""
	}
	s := fmt.Sprintf("network %d %% · CPU %d %% · disk %d %% · waiting %d %%",
		b.Shares.Network, b.Shares.CPU, b.Shares.Disk, b.Shares.Waiting)
	if b.Bottleneck == "" {
		return s + fmt.Sprintf(" — no bottleneck: the busiest stage worked %d %% of the time", b.Busy)
	}
	return s + fmt.Sprintf(" — bottleneck: %s (%s, busy %d %%)", ResourceName(b.Bottleneck), b.BottleneckStage, b.Busy)
}

// ResourceName is how a resource is written for people.
func ResourceName(r string) string {
	if r == CPU {
		return "CPU"
	}
	return r
}
