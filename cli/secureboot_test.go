package cli_test

import (
	"testing"

	"github.com/preboot/preboot/store"
)

func TestSettingsSecureBoot(t *testing.T) {
	s := newServer(t)
	c := newCLI(t, "PREBOOT_SOCKET="+s.sock)
	contains(t, c.ok(t, "settings", "show"), "Secure Boot:", "default auto")
	var st store.Settings
	c.json(t, &st, "settings", "set", "--secure-boot", "on", "--secure-boot-device", "52-54-00-AA-BB-CC=off", "--secure-boot-group", "lab=on")
	if st.SecureBoot.Default != "on" || st.SecureBoot.Devices["52:54:00:aa:bb:cc"] != "off" || st.SecureBoot.Groups["lab"] != "on" {
		t.Fatalf("settings set: %+v", st.SecureBoot)
	}
	contains(t, c.ok(t, "settings", "show"), "default on, device 52:54:00:aa:bb:cc off, group lab on")
	var st2 store.Settings // a fresh value: json.Unmarshal merges into maps
	c.json(t, &st2, "settings", "set", "--secure-boot-device", "52:54:00:aa:bb:cc=auto", "--secure-boot", "auto")
	if st := st2; st.SecureBoot.Default != "" || len(st.SecureBoot.Devices) != 0 || st.SecureBoot.Groups["lab"] != "on" {
		t.Fatalf("settings set auto: %+v", st.SecureBoot)
	}
	c.fails(t, "want auto, on or off", "settings", "set", "--secure-boot", "maybe")
	c.fails(t, "want auto, on or off", "settings", "set", "--secure-boot-group", "lab=yes")
	c.fails(t, "NAME=auto|on|off", "settings", "set", "--secure-boot-rule", "nomode")
}
