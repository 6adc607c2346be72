package agent

import (
	"strings"
	"testing"
)

func TestParseCmdlineSiteServer(t *testing.T) {
	pin := "sha256:" + strings.Repeat("ab", 32)
	env, err := ParseCmdline("preboot.server=https://10.0.0.1:8443 preboot.token=pbj_x preboot.images=https://10.20.0.5:8443 preboot.images.tls=" + pin)
	if err != nil {
		t.Fatal(err)
	}
	if env.Images != "https://10.20.0.5:8443" || env.ImagesTLS != pin || env.Server != "https://10.0.0.1:8443" {
		t.Fatalf("env %+v", env)
	}
	if _, err := ParseCmdline("preboot.server=https://10.0.0.1:8443 preboot.images=https://x preboot.images.tls=md5:00"); err == nil {
		t.Fatal("a bad site pin was accepted")
	}
}
