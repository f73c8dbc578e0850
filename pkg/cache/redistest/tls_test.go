package redistest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

func TestStartTLS(t *testing.T) {
	s, err := redistest.StartTLS(redistest.ClientAuthYes)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if !strings.HasPrefix(s.URL(0), "rediss://127.0.0.1:") {
		t.Errorf("URL = %q, want rediss://127.0.0.1:port/0", s.URL(0))
	}

	c := s.Client()
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("TLS client with the test CA and client certificate: %v", err)
	}

	// The server speaks only TLS: a plain client gets no answer it can read.
	plain := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Error("a plain-TCP client got an answer from the TLS-only server")
	}

	// Another CA's pool does not trust the server.
	other, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	wrong := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, TLSConfig: other.ClientTLS()})
	defer wrong.Close()
	err = wrong.Ping(ctx).Err()
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("client trusting another CA: err = %v, want x509.UnknownAuthorityError", err)
	}

	// tls-auth-clients yes: a client without a certificate is refused.
	noCert := s.TLSConfig()
	noCert.Certificates = nil
	anon := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, TLSConfig: noCert})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil {
		t.Error("a client without a certificate was served although tls-auth-clients is yes")
	}

	// The server certificate is valid for localhost as well as 127.0.0.1.
	byName := s.TLSConfig()
	byName.ServerName = "localhost"
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.Addr(), byName)
	if err != nil {
		t.Fatalf("verify as localhost: %v", err)
	}
	conn.Close()
}

func TestStartTLSOptionalClientAuth(t *testing.T) {
	s, err := redistest.StartTLS(redistest.ClientAuthOptional)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := s.TLSConfig()
	cfg.Certificates = nil
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: cfg})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Errorf("tls-auth-clients optional refused a client without a certificate: %v", err)
	}
}
