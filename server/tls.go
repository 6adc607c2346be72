package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/tlspin"
)

// Where a generated certificate is kept, under the data directory.
const (
	tlsDir       = "tls"
	tlsCertFile  = "cert.pem"
	tlsKeyFile   = "key.pem"
	certValidity = 20 * 365 * 24 * time.Hour
)

// serverCert is the HTTPS certificate and its pin.
type serverCert struct {
	cert        tls.Certificate
	fingerprint string // sha256:HEX of the leaf's DER
	generated   bool   // self-signed by this server
	certFile    string
}

// loadOrCreateCert loads http.tls_cert/tls_key, else the certificate
// generated at an earlier start, else generates a self-signed ECDSA P-256
// certificate for this machine's addresses and host name (key mode 0600
// in a 0700 directory).
func loadOrCreateCert(cfg config.Config, log *slog.Logger) (serverCert, error) {
	certFile, keyFile := cfg.HTTP.TLSCert, cfg.HTTP.TLSKey
	generated := false
	if certFile == "" {
		dir := filepath.Join(cfg.DataDir, tlsDir)
		certFile, keyFile = filepath.Join(dir, tlsCertFile), filepath.Join(dir, tlsKeyFile)
		generated = true
		if _, err := os.Stat(certFile); errors.Is(err, os.ErrNotExist) {
			dns, ips := certNames(cfg)
			if err := generateCert(dir, certFile, keyFile, dns, ips); err != nil {
				return serverCert{}, fmt.Errorf("generate a TLS certificate: %w", err)
			}
			log.Info("generated a self-signed TLS certificate", "cert", certFile)
		}
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return serverCert{}, fmt.Errorf("TLS certificate: %w", err)
	}
	if len(c.Certificate) == 0 {
		return serverCert{}, fmt.Errorf("TLS certificate %s: no certificate", certFile)
	}
	return serverCert{cert: c, fingerprint: tlspin.Fingerprint(c.Certificate[0]), generated: generated, certFile: certFile}, nil
}

// certNames are the subject alternative names of a generated
// certificate: localhost, the host name, server_ip and every address of
// the machine's interfaces.
func certNames(cfg config.Config) (dns []string, ips []net.IP) {
	dns = []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	dns = append(dns, cfg.HTTP.Hosts...)
	seen := map[string]bool{}
	add := func(ip net.IP) {
		if ip != nil && !seen[ip.String()] && !ip.IsLinkLocalUnicast() {
			seen[ip.String()] = true
			ips = append(ips, ip)
		}
	}
	add(net.ParseIP(cfg.ServerIP))
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				add(n.IP)
			}
		}
	}
	add(net.IPv4(127, 0, 0, 1))
	add(net.IPv6loopback)
	return dns, ips
}

func generateCert(dir, certFile, keyFile string, dns []string, ips []net.IP) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	host := "preboot"
	if len(dns) > 1 {
		host = dns[1]
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"Preboot (self-signed)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first, so that a certificate never exists without its key.
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFileAtomic writes a file with mode perm under a temporary name and
// renames it into place.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// tlsConfig serves the certificate.
func (c serverCert) tlsConfig() *tls.Config {
	cert := c.cert
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
}

// firmwarePath reports whether a path is served on plain HTTP even when
// TLS is on: what boot firmware (iPXE, UEFI HTTP boot) fetches, and the
// health check. Nothing secret is there.
func firmwarePath(p string) bool {
	return p == "/boot.ipxe" || strings.HasPrefix(p, "/files/") || p == "/healthz" || p == "/readyz" || p == "/metrics" || p == "/"
}

// plainHTTPOnly restricts the plain HTTP port, when HTTPS is on, to the
// firmware's paths: browsers asking for anything else are redirected to
// HTTPS, other clients get 403 naming the HTTPS address.
func plainHTTPOnly(next http.Handler, tlsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil || firmwarePath(r.URL.Path) {
			if r.URL.Path == "/" && strings.Contains(r.Header.Get("Accept"), "text/html") {
				http.Redirect(w, r, httpsURL(r, tlsPort, "/console/"), http.StatusFound)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.Contains(r.Header.Get("Accept"), "text/html") {
			http.Redirect(w, r, httpsURL(r, tlsPort, r.URL.RequestURI()), http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(
			"plain HTTP serves only boot firmware (/boot.ipxe, /files/): use %s (the fingerprint of the server's TLS certificate is in its log)",
			httpsURL(r, tlsPort, r.URL.Path))})
	})
}

// httpsURL is the HTTPS address of the same host for path.
func httpsURL(r *http.Request, tlsPort, path string) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		host = "SERVER"
	}
	return "https://" + net.JoinHostPort(strings.Trim(host, "[]"), tlsPort) + path
}

// agentServer returns the base URL the imaging agent uses for a boot
// request that came to host (the request's Host): the same address on the
// HTTPS port.
func agentServer(tlsPort string) func(host string) string {
	return func(host string) string {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if host == "" {
			return ""
		}
		// An IPv6 zone ("fe80::1%eth0") is escaped as a URL wants it
		// ("%25eth0").
		if h, err := url.PathUnescape(host); err == nil {
			host = h
		}
		return (&url.URL{Scheme: "https", Host: net.JoinHostPort(host, tlsPort)}).String()
	}
}
