package disk

import (
	"errors"
	"strings"
	"testing"
)

// A Windows UEFI layout: ESP, MSR, C:, Recovery after C:.
const winScript = `label: gpt
label-id: 0D2F0A3E-7C39-4B7D-9A51-1E3C5D7F9B11
size=4M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"
size=2M, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, name="Microsoft reserved partition"
size=40M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Basic data partition", uuid=A1A2A3A4-B1B2-C1C2-D1D2-E1E2E3E4E5E6
size=6M, type=DE94BBA4-06D1-4D40-A16A-BFD50179D6AC, name="Recovery", uuid=0F0E0D0C-0B0A-0908-0706-050403020100
`

// TestRefitGPTWindows grows C: onto a larger disk, moving Recovery to the
// end, and shrinks it onto a smaller one; sfdisk agrees with the result
// and sgdisk finds the tables valid.
func TestRefitGPTWindows(t *testing.T) {
	need(t, "sfdisk", "sgdisk")
	src := sparse(t, 64<<20)
	run(t, winScript, "sfdisk", "-q", src)
	tab := readTableFile(t, src)
	for _, size := range []int64{128 << 20, 40 << 20, 64 << 20} {
		nt, moves, err := tab.Refit(size, 3)
		if err != nil {
			t.Fatalf("refit to %d: %v", size, err)
		}
		p := writeTableFile(t, nt)
		compareSfdisk(t, p, readTableFile(t, p))
		out := run(t, "", "sgdisk", "-v", p)
		if !strings.Contains(out, "No problems found") {
			t.Fatalf("sgdisk -v on the %d-byte refit: %s", size, out)
		}
		got := readTableFile(t, p)
		if got.DiskID != tab.DiskID {
			t.Errorf("disk GUID changed: %s → %s", tab.DiskID, got.DiskID)
		}
		for i, op := range tab.Partitions {
			np := got.Partitions[i]
			if np.UUID != op.UUID || np.Type != op.Type || np.Name != op.Name {
				t.Errorf("partition %d identity changed: %+v → %+v", op.Index, op, np)
			}
			if op.Index < 3 && (np.Start != op.Start || np.Size != op.Size) {
				t.Errorf("partition %d before C: moved: %+v → %+v", op.Index, op, np)
			}
		}
		c, rec := got.Partitions[2], got.Partitions[3]
		if rec.Size != tab.Partitions[3].Size || rec.Start != c.End() {
			t.Errorf("%d: Recovery %+v does not follow C: %+v with its size", size, rec, c)
		}
		if size == 64<<20 {
			if len(moves) != 0 {
				t.Errorf("same size: moves %+v", moves)
			}
			continue
		}
		// GPT backup: 33 sectors at the end; Recovery within 1 MiB of it.
		if gap := size - 34*512 - rec.End(); gap < 0 || gap >= Align {
			t.Errorf("%d: Recovery ends %d bytes before the backup entries", size, gap)
		}
		if len(moves) != 2 || moves[0].Index != 3 || moves[1].Index != 4 || moves[1].NewStart != rec.Start {
			t.Errorf("%d: moves %+v", size, moves)
		}
	}
	if _, _, err := tab.Refit(12<<20, 3); !errors.Is(err, ErrTooSmall) {
		t.Errorf("refit onto a disk smaller than the other partitions: %v", err)
	}
	if _, _, err := tab.Refit(128<<20, 9); !errors.Is(err, ErrCannotRefit) {
		t.Errorf("refit of a missing partition: %v", err)
	}
}

// TestRefitMBR grows and shrinks a primary partition followed by another
// primary; logical partitions after the one to resize are refused.
func TestRefitMBR(t *testing.T) {
	need(t, "sfdisk")
	src := sparse(t, 64<<20)
	run(t, "label: dos\nlabel-id: 0x5eedf00d\nstart=2048, size=40M, type=7, bootable\nsize=10M, type=27\n", "sfdisk", "-q", src)
	tab := readTableFile(t, src)
	for _, size := range []int64{100 << 20, 58 << 20} {
		nt, _, err := tab.Refit(size, 1)
		if err != nil {
			t.Fatal(err)
		}
		p := writeTableFile(t, nt)
		got := readTableFile(t, p)
		compareSfdisk(t, p, got)
		if got.DiskID != "0x5eedf00d" || !got.Partitions[0].Bootable {
			t.Errorf("disk signature or boot flag lost: %+v", got)
		}
		if got.Partitions[1].End() > size || size-got.Partitions[1].End() >= Align || got.Partitions[1].Size != 10<<20 {
			t.Errorf("%d: second partition %+v not moved to the end", size, got.Partitions[1])
		}
	}
	ext := readTableFile(t, func() string {
		p := sparse(t, 64<<20)
		run(t, mbrScript, "sfdisk", "-q", p)
		return p
	}())
	if _, _, err := ext.Refit(128<<20, 1); !errors.Is(err, ErrCannotRefit) {
		t.Errorf("refit with logical partitions after: %v", err)
	}
}
