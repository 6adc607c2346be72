package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// localDiskMarker is what the local disk's boot sector writes to COM1.
const localDiskMarker = "PREBOOT-LOCAL-DISK"

// mbrProgram returns a 512-byte MBR boot sector: a real-mode x86 program,
// assembled by hand, that writes localDiskMarker (plus CR LF) to COM1 and
// halts. The BIOS loads it at 0000:7C00 and jumps there.
func mbrProgram() []byte {
	const org = 0x7C00
	const msgOff = 35 // offset of the message inside the sector, see below
	code := []byte{
		/* 00 */ 0xFA, // cli                 ; no interrupts: we never return
		/* 01 */ 0x31, 0xC0, // xor ax,ax           ; ax = 0
		/* 03 */ 0x8E, 0xD8, // mov ds,ax           ; ds = 0, so ds:si addresses 0000:7Cxx
		/* 05 */ 0xFC, // cld                 ; lodsb counts upwards
		/* 06 */ 0xBE, byte((org + msgOff) & 0xFF), byte((org + msgOff) >> 8), // mov si,msg
		// next:
		/* 09 */ 0xAC, // lodsb               ; al = [ds:si], si++
		/* 0A */ 0x84, 0xC0, // test al,al          ; end of string?
		/* 0C */ 0x74, 0x12, // jz done (+18 -> 0x20)
		/* 0E */ 0x88, 0xC4, // mov ah,al           ; keep the character in ah
		/* 10 */ 0xBA, 0xFD, 0x03, // mov dx,0x3FD        ; COM1 line status register
		// wait:
		/* 13 */ 0xEC, // in al,dx            ; read LSR
		/* 14 */ 0xA8, 0x20, // test al,0x20        ; THR empty?
		/* 16 */ 0x74, 0xFB, // jz wait (-5 -> 0x13)
		/* 18 */ 0x88, 0xE0, // mov al,ah           ; the character again
		/* 1A */ 0xBA, 0xF8, 0x03, // mov dx,0x3F8        ; COM1 transmit holding register
		/* 1D */ 0xEE, // out dx,al           ; send it
		/* 1E */ 0xEB, 0xE9, // jmp next (-23 -> 0x09)
		// done:
		/* 20 */ 0xF4, // hlt                 ; interrupts are off: stop here
		/* 21 */ 0xEB, 0xFD, // jmp done (-3 -> 0x20) ; in case of an NMI
	}
	if len(code) != msgOff {
		panic(fmt.Sprintf("mbr: code is %d bytes, message offset is %d", len(code), msgOff))
	}
	sector := make([]byte, 512)
	copy(sector, code)
	copy(sector[msgOff:], localDiskMarker+"\r\n\x00")
	sector[510], sector[511] = 0x55, 0xAA // boot signature
	return sector
}

// writeLocalDisk writes a 1 MiB raw disk image whose MBR is mbrProgram.
func writeLocalDisk(path string) error {
	img := make([]byte, 1<<20)
	copy(img, mbrProgram())
	if err := os.WriteFile(path, img, 0o644); err != nil {
		return fmt.Errorf("write local disk: %w", err)
	}
	return nil
}

// TestLocalDiskMBR boots the disk alone (no network, no root needed) and
// expects the marker on the serial console: it validates the hand-written
// boot sector the local-boot scenario depends on.
func TestLocalDiskMBR(t *testing.T) {
	requireQEMU(t)
	dir := workDir(t)
	disk := filepath.Join(dir, "disk.img")
	if err := writeLocalDisk(disk); err != nil {
		t.Fatal(err)
	}
	vm := startVM(t, vmConfig{
		Name: "mbr",
		Dir:  dir,
		Args: []string{"-drive", "file=" + disk + ",format=raw,if=ide,index=0"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := vm.waitFor(ctx, localDiskMarker); err != nil {
		t.Fatal(err)
	}
}
