package policy

import (
	"strings"
	"testing"

	"github.com/preboot/preboot/store"
)

// With peer servers, preboot.server= lists the server the device reached
// first, then the others (this one's own URL, when listed among the
// peers, once only), with the one certificate pin they share.
func TestImagingBootPeerServers(t *testing.T) {
	e := newEngine(t, "never")
	writeEnv(t, e)
	e.AgentServer = func(string) string { return "https://10.0.0.2:8443" }
	e.AgentFingerprint = "sha256:" + strings.Repeat("ab", 32)
	e.PeerServers = []string{"https://10.0.0.3:8443", "https://10.0.0.2:8443", "https://10.0.0.4:8443"}
	b := mkBundle(t, e.Store, "inv", store.KindInventory, `{}`)
	assign(t, e.Store, store.Assignment{BundleID: b.ID, MAC: mac, Once: true})
	body := getOver6(t, e, "/boot.ipxe?mac=52-54-00-12-34-56&platform=efi&arch=x86_64", "10.0.0.2:8080", "10.0.0.150:40000")
	mustContain(t, body,
		" preboot.server=https://10.0.0.2:8443,https://10.0.0.3:8443,https://10.0.0.4:8443 ",
		" preboot.tls="+e.AgentFingerprint)
}
