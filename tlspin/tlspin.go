// Package tlspin pins a server's TLS certificate by the SHA-256 of its
// DER encoding ("sha256:HEX"), as the imaging agent and the CLI do for a
// Preboot server's self-signed certificate: the connection is accepted
// only when the server's leaf certificate is exactly the pinned one.
package tlspin

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Prefix starts every fingerprint.
const Prefix = "sha256:"

// Fingerprint returns "sha256:HEX" of a certificate's DER bytes.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return Prefix + hex.EncodeToString(sum[:])
}

// Parse checks a fingerprint ("sha256:HEX", 64 hex digits; colons between
// byte pairs and upper case are accepted) and returns its 32 bytes.
func Parse(fp string) ([]byte, error) {
	s := strings.TrimSpace(fp)
	rest, ok := strings.CutPrefix(strings.ToLower(s), Prefix)
	if !ok {
		return nil, fmt.Errorf("TLS fingerprint %q: want sha256:HEX (64 hex digits)", fp)
	}
	rest = strings.ReplaceAll(rest, ":", "")
	b, err := hex.DecodeString(rest)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("TLS fingerprint %q: want sha256:HEX (64 hex digits)", fp)
	}
	return b, nil
}

// ErrMismatch is the handshake error when the server's certificate is not
// the pinned one.
var ErrMismatch = errors.New("the server's TLS certificate does not match the pinned fingerprint")

// Config returns a client TLS configuration that accepts exactly the
// certificate whose fingerprint is fp, whatever its names, issuer or
// validity dates (the imaging environment's clock may be wrong): chain
// verification is replaced by the pin, never skipped without it.
func Config(fp string) (*tls.Config, error) {
	want, err := Parse(fp)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate: the pin
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("the server sent no TLS certificate")
			}
			got := sha256.Sum256(raw[0])
			if !bytes.Equal(got[:], want) {
				return fmt.Errorf("%w: got %s, want %s", ErrMismatch, Fingerprint(raw[0]), Prefix+hex.EncodeToString(want))
			}
			return nil
		},
	}, nil
}

// CAConfig returns a client TLS configuration that trusts the
// certificates of a PEM file (instead of the system's roots).
func CAConfig(pemFile string) (*tls.Config, error) {
	b, err := os.ReadFile(pemFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", pemFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// Transport returns a clone of http.DefaultTransport using tc (nil: the
// default TLS settings).
func Transport(tc *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	tr.TLSHandshakeTimeout = 15 * time.Second
	return tr
}

// Client returns an HTTP client that pins fp (no timeout of its own: the
// caller's context bounds each request).
func Client(fp string) (*http.Client, error) {
	tc, err := Config(fp)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: Transport(tc)}, nil
}
