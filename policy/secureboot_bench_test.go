package policy

import (
	"context"
	"testing"

	"github.com/insomniacslk/dhcp/iana"
)

// BenchmarkBootForSecureBoot measures the DHCP-stage answer for UEFI x64
// PXE clients (secure_boot auto: the learnt state is read from the
// device's events) against BIOS clients (no Secure Boot lookup).
func BenchmarkBootForSecureBoot(b *testing.B) {
	for _, tc := range []struct {
		name string
		arch iana.Arch
	}{{"bios", iana.INTEL_X86PC}, {"efi-x64-auto", iana.EFI_X86_64}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEngine(b, "never")
			stageFakeSigned(b, e)
			c := client(tc.arch, "PXEClient:Arch:00007:UNDI:003000", "")
			ctx := context.Background()
			for b.Loop() {
				if _, err := e.BootFor(ctx, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
