package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ClientAuth is a TLS server's --tls-auth-clients: whether clients must
// present a certificate signed by the CA.
type ClientAuth string

// Client certificate requirements of StartTLS.
const (
	ClientAuthNo       ClientAuth = "no"
	ClientAuthOptional ClientAuth = "optional"
	ClientAuthYes      ClientAuth = "yes"
)

// StartTLS launches a redis-server that speaks only TLS (--port 0,
// --tls-port on a free port) with certificates made for the occasion (see
// Certs), and waits until it answers. Its URL is rediss://, its Client and
// TLSConfig trust the CA and present the client certificate. args are extra
// redis-server arguments.
func StartTLS(auth ClientAuth, args ...string) (*Server, error) {
	switch auth {
	case ClientAuthNo, ClientAuthOptional, ClientAuthYes:
	default:
		return nil, fmt.Errorf("redistest: unknown ClientAuth %q", auth)
	}
	dir, err := os.MkdirTemp("", "redistest-tls-")
	if err != nil {
		return nil, err
	}
	certs, err := NewCerts(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var lastErr error
	for range 5 { // a free port can be taken between choosing and binding it
		port, err := FreePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s := &Server{Port: port, args: args, dir: dir, Certs: certs, clientAuth: auth}
		if lastErr = s.Start(); lastErr == nil {
			return s, nil
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// Certs is a throwaway PKI: a CA, a server certificate for 127.0.0.1 and
// localhost, and a client certificate, both signed by the CA, with ECDSA
// P-256 keys. The files are PEM; the PEM bytes are kept too, for tests that
// put them into Kubernetes Secrets.
type Certs struct {
	// Dir holds the files.
	Dir string
	// CAFile, ServerCertFile, ServerKeyFile, ClientCertFile and
	// ClientKeyFile are the PEM files in Dir.
	CAFile, ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile string
	// CAPEM is the CA certificate (a Secret's ca.crt).
	CAPEM []byte
	// ClientCertPEM and ClientKeyPEM are the client certificate and its key
	// (a Secret's tls.crt and tls.key).
	ClientCertPEM, ClientKeyPEM []byte
	// Pool trusts the CA alone.
	Pool *x509.CertPool
	// ClientCert is the client certificate with its key, for tls.Config.
	ClientCert tls.Certificate
}

// NewCerts makes a CA and certificates signed by it, and writes them to dir.
// Every call makes a new CA, so a second Certs is a "wrong CA" for the first.
func NewCerts(dir string) (*Certs, error) {
	caKey, caDER, err := newCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "cacheplane test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	serverKey, serverDER, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	if err != nil {
		return nil, err
	}
	clientKey, clientDER, err := newCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "cacheplane test client"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	if err != nil {
		return nil, err
	}

	c := &Certs{
		Dir:            dir,
		CAFile:         filepath.Join(dir, "ca.crt"),
		ServerCertFile: filepath.Join(dir, "server.crt"),
		ServerKeyFile:  filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.crt"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
		CAPEM:          certPEM(caDER),
		ClientCertPEM:  certPEM(clientDER),
		Pool:           x509.NewCertPool(),
	}
	c.Pool.AddCert(ca)
	if c.ClientKeyPEM, err = keyPEM(clientKey); err != nil {
		return nil, err
	}
	serverKeyPEM, err := keyPEM(serverKey)
	if err != nil {
		return nil, err
	}
	if c.ClientCert, err = tls.X509KeyPair(c.ClientCertPEM, c.ClientKeyPEM); err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{
		c.CAFile:         c.CAPEM,
		c.ServerCertFile: certPEM(serverDER),
		c.ServerKeyFile:  serverKeyPEM,
		c.ClientCertFile: c.ClientCertPEM,
		c.ClientKeyFile:  c.ClientKeyPEM,
	} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ClientTLS returns a client configuration that trusts only the CA and
// presents the client certificate (which a server without client
// authentication ignores).
func (c *Certs) ClientTLS() *tls.Config {
	return &tls.Config{
		RootCAs:      c.Pool,
		Certificates: []tls.Certificate{c.ClientCert},
		MinVersion:   tls.VersionTLS12,
	}
}

// newCert makes a key and a certificate from tmpl, signed by parent's key, or
// self-signed when parent is nil. Validity starts an hour back, so clock skew
// between the test and redis-server cannot make a fresh certificate "not yet
// valid".
func newCert(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, errors.Join(errors.New("redistest: create certificate"), err)
	}
	return key, der, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
