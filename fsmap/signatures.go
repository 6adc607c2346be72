package fsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/preboot/preboot/disk"
)

// Partitions recognised by signature only: encrypted volumes (LUKS,
// BitLocker), whose used blocks cannot be known without the key and which
// are copied raw, and Linux swap, of which only the header is kept.

// isLUKS reports a LUKS1 or LUKS2 header ("LUKS\xba\xbe" at 0).
func isLUKS(head []byte) bool {
	return len(head) >= 8 && string(head[:6]) == "LUKS\xba\xbe"
}

// luksInfo maps a LUKS volume raw.
func luksInfo(r io.ReaderAt, size int64, head []byte) (Info, error) {
	ex, err := Raw(r, size)
	if err != nil {
		return Info{}, err
	}
	return Info{FSType: "luks", Used: ex, Warnings: []string{fmt.Sprintf(
		"encrypted (LUKS%d): copied raw; the image holds ciphertext and restores only as a whole", binary.BigEndian.Uint16(head[6:]))}}, nil
}

// bitLockerFVE is the signature of a BitLocker volume header and of its
// FVE metadata blocks.
const bitLockerFVE = "-FVE-FS-"

// isBitLocker reports a BitLocker volume: "-FVE-FS-" at byte 3 of the boot
// sector (Vista, Windows 7 and later), or a BitLocker To Go volume, which
// shows a FAT boot sector ("MSWIN4.1") whose field at 440 points at FVE
// metadata. Must be checked before NTFS and FAT: the FAT a To Go volume
// shows is a decoy whose allocation says nothing about the encrypted data.
func isBitLocker(r io.ReaderAt, size int64, head []byte) (bool, error) {
	if len(head) < 512 {
		return false, nil
	}
	if string(head[3:11]) == bitLockerFVE {
		return true, nil
	}
	if string(head[:11]) != "\xeb\x58\x90MSWIN4.1" {
		return false, nil
	}
	off := binary.LittleEndian.Uint64(head[440:])
	if off == 0 || off > uint64(max(size-8, 0)) {
		return false, nil
	}
	sig := make([]byte, 8)
	if err := disk.ReadFull(r, sig, int64(off)); err != nil {
		return false, fmt.Errorf("read BitLocker To Go metadata: %w", err)
	}
	return string(sig) == bitLockerFVE, nil
}

// bitLockerInfo maps a BitLocker volume raw.
func bitLockerInfo(r io.ReaderAt, size int64) (Info, error) {
	ex, err := Raw(r, size)
	if err != nil {
		return Info{}, err
	}
	return Info{FSType: "bitlocker", Used: ex, Warnings: []string{
		"encrypted (BitLocker): copied raw; the image holds ciphertext and restores only as a whole, " +
			"and a machine other than the source (another TPM) needs the recovery key to unlock it"}}, nil
}

// swapPageSizes are the page sizes a Linux swap header may be made for.
var swapPageSizes = []int64{4096, 8192, 16384, 65536}

// Hibernation images replace the swap signature at the end of the first page.
var hibernationSigs = []string{"S1SUSPEND", "S2SUSPEND", "ULSUSPEND", "LINHIB0001"}

// swapInfo maps a Linux swap area: its header page (the contents are not
// worth keeping). A swap area holding a hibernation image is copied raw and
// marked unsafe: the image is the state of a suspended system. FSType ""
// when there is no swap signature.
func swapInfo(r io.ReaderAt, size int64, head []byte) (Info, error) {
	sig := make([]byte, 10)
	for _, ps := range swapPageSizes {
		if size < ps {
			break
		}
		if int64(len(head)) >= ps {
			copy(sig, head[ps-10:ps])
		} else if err := disk.ReadFull(r, sig, ps-10); err != nil {
			return Info{}, fmt.Errorf("read swap signature: %w", err)
		}
		switch s := string(sig); {
		case s == "SWAPSPACE2":
			// Version 1, in either byte order, right after the boot bits.
			v := make([]byte, 4)
			if err := disk.ReadFull(r, v, 1024); err != nil {
				return Info{}, fmt.Errorf("read swap header: %w", err)
			}
			if binary.LittleEndian.Uint32(v) != 1 && binary.BigEndian.Uint32(v) != 1 {
				continue
			}
			return Info{FSType: "swap", Used: []disk.Extent{{Offset: 0, Length: ps}}}, nil
		case s == "SWAP-SPACE":
			return Info{FSType: "swap", Used: []disk.Extent{{Offset: 0, Length: ps}}}, nil
		case hasAnyPrefix(sig, hibernationSigs):
			ex, err := Raw(r, size)
			if err != nil {
				return Info{}, err
			}
			return Info{FSType: "swap", Used: ex,
				Warnings: []string{"swap holds a hibernation image: copied raw"},
				Unsafe: errors.New("the swap partition holds a hibernation image (the source system is suspended to disk): " +
					"boot the source to resume it and shut it down normally, or run mkswap on the partition, before capture")}, nil
		}
	}
	return Info{}, nil
}

func hasAnyPrefix(b []byte, prefixes []string) bool {
	for _, p := range prefixes {
		if bytes.HasPrefix(b, []byte(p)) {
			return true
		}
	}
	return false
}
