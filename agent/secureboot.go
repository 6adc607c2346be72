package agent

import (
	"os"
	"path/filepath"
	"strings"
)

// SecureBootState is what the imaging environment reads of Secure Boot:
// the firmware's SecureBoot variable and the kernel's lockdown mode.
type SecureBootState struct {
	Enabled  bool   `json:"enabled"`
	Lockdown string `json:"lockdown,omitempty"` // none, integrity, confidentiality
}

// secureBootVar is the global SecureBoot variable in efivarfs: 4 bytes
// of attributes, then 1 (enforcing) or 0.
const secureBootVar = "firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

// readSecureBoot returns the Secure Boot state, or nil when the machine
// did not boot by UEFI or efivarfs is not mounted.
func readSecureBoot(r hostRoots) *SecureBootState {
	b, err := os.ReadFile(filepath.Join(r.sys, secureBootVar))
	if err != nil || len(b) < 5 {
		return nil
	}
	return &SecureBootState{Enabled: b[4] == 1, Lockdown: lockdownMode(filepath.Join(r.sys, "kernel/security/lockdown"))}
}

// lockdownMode reads the bracketed mode of /sys/kernel/security/lockdown
// ("none [integrity] confidentiality"); "" when securityfs is not there.
func lockdownMode(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
}
