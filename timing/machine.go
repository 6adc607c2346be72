package timing

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Machine is what a device's inventory (the agent's last report) says
// about the parts a breakdown names: the disk it read or wrote, the NIC
// it used and its CPUs.
type Machine struct {
	Disk          string `json:"disk,omitempty"` // path, e.g. /dev/sda
	DiskModel     string `json:"disk_model,omitempty"`
	Rotational    *bool  `json:"rotational,omitempty"`
	DiskTransport string `json:"disk_transport,omitempty"`
	NIC           string `json:"nic,omitempty"`
	LinkMbps      int    `json:"link_mbps,omitempty"`
	Duplex        string `json:"duplex,omitempty"` // full, half
	CPUs          int    `json:"cpus,omitempty"`
	CPUModel      string `json:"cpu_model,omitempty"`
}

// inventory is the part of the agent's inventory (agent.Info) read here.
type inventory struct {
	Hardware struct {
		CPUs     int    `json:"cpus"`
		CPUModel string `json:"cpu_model"`
		NICs     []struct {
			Name   string `json:"name"`
			MAC    string `json:"mac"`
			State  string `json:"state"`
			Speed  int    `json:"speed_mbps"`
			Duplex string `json:"duplex"`
		} `json:"nics"`
	} `json:"hardware"`
	Disks []struct {
		Name       string `json:"name"`
		Path       string `json:"path"`
		Model      string `json:"model"`
		Rotational bool   `json:"rotational"`
		Removable  bool   `json:"removable"`
		Transport  string `json:"transport"`
	} `json:"disks"`
}

// FromInventory reads a device's inventory (agent.Info as JSON) for the
// disk named disk (its path or name; "" or unknown: the only fixed disk)
// and the NIC with MAC mac (else the only one whose link is up). It
// returns nil when the inventory is empty or unreadable.
func FromInventory(info json.RawMessage, mac, disk string) *Machine {
	if len(info) == 0 {
		return nil
	}
	var in inventory
	if err := json.Unmarshal(info, &in); err != nil {
		return nil
	}
	m := &Machine{CPUs: in.Hardware.CPUs, CPUModel: in.Hardware.CPUModel}
	di := -1
	if disk != "" {
		for i, d := range in.Disks {
			if d.Path == disk || d.Name == strings.TrimPrefix(disk, "/dev/") {
				di = i
				break
			}
		}
	}
	if di < 0 {
		fixed := -1
		for i, d := range in.Disks {
			if d.Removable {
				continue
			}
			if fixed >= 0 {
				fixed = -2 // several: none is "the" disk
				break
			}
			fixed = i
		}
		di = fixed
	}
	if di >= 0 {
		d := in.Disks[di]
		rot := d.Rotational
		m.Disk, m.DiskModel, m.Rotational, m.DiskTransport = d.Path, d.Model, &rot, d.Transport
	} else {
		m.Disk = disk
	}
	ni, up := -1, -1
	for i, n := range in.Hardware.NICs {
		if mac != "" && strings.EqualFold(n.MAC, mac) {
			ni = i
			break
		}
		if n.State == "up" {
			if up == -1 {
				up = i
			} else {
				up = -2
			}
		}
	}
	if ni < 0 && up >= 0 {
		ni = up
	}
	if ni >= 0 {
		n := in.Hardware.NICs[ni]
		m.NIC, m.LinkMbps, m.Duplex = n.Name, n.Speed, n.Duplex
	}
	return m
}

// Text describes the machine's parts on one line:
// "disk /dev/sda: ST1000DM003 (rotational, ata) · link eth0: 1000 Mb/s full duplex · 4 CPUs".
func (m *Machine) Text() string {
	if m == nil {
		return ""
	}
	var parts []string
	if m.Disk != "" || m.DiskModel != "" {
		s := "disk"
		if m.Disk != "" {
			s += " " + m.Disk
		}
		if m.DiskModel != "" {
			s += ": " + m.DiskModel
		}
		var q []string
		if m.Rotational != nil {
			if *m.Rotational {
				q = append(q, "rotational")
			} else {
				q = append(q, "non-rotational")
			}
		}
		if m.DiskTransport != "" {
			q = append(q, m.DiskTransport)
		}
		if len(q) > 0 {
			s += " (" + strings.Join(q, ", ") + ")"
		}
		parts = append(parts, s)
	}
	if m.NIC != "" {
		s := "link " + m.NIC + ": "
		if m.LinkMbps > 0 {
			s += fmt.Sprintf("%d Mb/s", m.LinkMbps)
			if m.Duplex != "" && m.Duplex != "unknown" {
				s += " " + m.Duplex + " duplex"
			}
		} else {
			s += "speed unknown"
		}
		parts = append(parts, s)
	}
	if m.CPUs > 0 {
		parts = append(parts, cpus(m.CPUs))
	}
	return strings.Join(parts, " · ")
}

// Report is a breakdown explained for people: the one-line summary, the
// machine's parts from its inventory and a hint on what limits the speed.
type Report struct {
	Summary string   `json:"summary"`
	Machine *Machine `json:"machine,omitempty"`
	// MachineText is Machine on one line.
	MachineText string `json:"machine_text,omitempty"`
	Hint        string `json:"hint,omitempty"`
}

// Explain builds the report of b for a machine (nil when unknown); nil
// when b measured nothing yet.
func Explain(b *Breakdown, m *Machine) *Report {
	if b == nil || b.Summary() == "" {
		return nil
	}
	return &Report{Summary: b.Summary(), Machine: m, MachineText: m.Text(), Hint: Hint(b, m)}
}

// Hint is one line on what limits the speed, from the bottleneck and the
// machine's parts ("" when nothing stands out).
func Hint(b *Breakdown, m *Machine) string {
	if b == nil || b.Bottleneck == "" {
		return ""
	}
	if m == nil {
		m = &Machine{}
	}
	switch b.Bottleneck {
	case Network:
		what := map[string]string{"fetch": "fetching chunks from the server", "upload": "uploading chunks to the server",
			"lookup": "asking the server which chunks it holds"}[b.BottleneckStage]
		if what == "" {
			what = "the network"
		}
		if m.LinkMbps > 0 {
			s := fmt.Sprintf("%s is the limit; the link is %d Mb/s: at most %s", what, m.LinkMbps, mbps(m.LinkMbps))
			if m.Duplex == "half" {
				s += "; it runs at half duplex: check the switch port and the cable"
			}
			return s
		}
		return what + " is the limit (the inventory has no link speed): check the link, the switch and the server's disk and CPU"
	case Disk:
		what := map[string]string{"write": "writing to the disk", "read": "reading the disk",
			"check": "reading the disk's present content (the delta check)", "sync": "flushing the disk's write cache"}[b.BottleneckStage]
		if what == "" {
			what = "the disk"
		}
		s := what + " is the limit"
		if m.DiskModel != "" {
			s += ": " + m.DiskModel
		}
		if m.Rotational != nil && *m.Rotational {
			s += " is a rotational disk"
		}
		if m.DiskTransport == "usb" {
			s += " on USB"
		}
		return s
	case CPU:
		what := map[string]string{"verify": "verifying and decompressing chunks", "hash": "hashing the disk's data",
			"compress": "compressing chunks (a lower compression level is faster)"}[b.BottleneckStage]
		if what == "" {
			what = "the CPU"
		}
		s := what + " is the limit"
		if m.CPUs > 0 {
			s += ": " + cpus(m.CPUs)
			if m.CPUModel != "" {
				s += " (" + m.CPUModel + ")"
			}
		}
		return s
	}
	return ""
}

func cpus(n int) string {
	if n == 1 {
		return "1 CPU"
	}
	return fmt.Sprintf("%d CPUs", n)
}

// mbps is the most a link of n Mb/s carries, in MB/s.
func mbps(n int) string {
	v := float64(n) / 8
	if v < 10 {
		return fmt.Sprintf("%.1f MB/s", v)
	}
	return fmt.Sprintf("%d MB/s", int(v))
}
