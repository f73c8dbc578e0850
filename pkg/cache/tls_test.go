package cache_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// TestTLS runs the cache over rediss:// against a TLS-only redis-server that
// demands client certificates, with certificates made by the test.
func TestTLS(t *testing.T) {
	s, err := redistest.StartTLS(redistest.ClientAuthYes)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tlsCfg := func(roots *x509.CertPool, withClientCert bool) *tls.Config {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if withClientCert {
			cfg.Certificates = []tls.Certificate{s.Certs.ClientCert}
		}
		return cfg
	}

	t.Run("API", func(t *testing.T) {
		kp := testPrefix(t)
		c := connectTopology(t, cache.Config{URL: s.URL(0), TLSConfig: tlsCfg(s.Certs.Pool, true), KeyPrefix: kp, DefaultTTL: time.Minute})
		exerciseAPI(t, c, newTopoOperator(t, s.Client(), kp))
	})

	other, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		// want are fragments of Connect's message that say what is wrong.
		want  []string
		check func(error) bool
	}{{
		name: "WrongCA",
		tls:  tlsCfg(other.Pool, true),
		want: []string{"rediss://" + s.Addr(), "certificate signed by unknown authority"},
		check: func(err error) bool {
			var unknown x509.UnknownAuthorityError
			return errors.As(err, &unknown)
		},
	}, {
		// rediss:// without a TLSConfig trusts the system's roots only.
		name: "SystemRoots",
		want: []string{"certificate signed by unknown authority"},
		check: func(err error) bool {
			var unknown x509.UnknownAuthorityError
			return errors.As(err, &unknown)
		},
	}, {
		// The server trusts the CA but demands a client certificate.
		name: "NoClientCert",
		tls:  tlsCfg(s.Certs.Pool, false),
		want: []string{"rediss://" + s.Addr(), "tls: "},
		check: func(err error) bool {
			var alert tls.AlertError
			return errors.As(err, &alert) || strings.Contains(err.Error(), "certificate required")
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = 2 * time.Second
			c, err := cache.New(cache.Config{URL: s.URL(0), TLSConfig: tc.tls, SocketTimeout: timeout, KeyPrefix: testPrefix(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			err = c.Connect(context.Background())
			if err == nil {
				t.Fatal("Connect succeeded")
			}
			if elapsed := time.Since(start); elapsed > timeout {
				t.Errorf("Connect took %v to fail, more than SocketTimeout %v", elapsed, timeout)
			}
			t.Logf("Connect: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Connect's error %q does not mention %q", err, w)
				}
			}
			if !tc.check(err) {
				t.Errorf("Connect's error %q (%T) is not the expected TLS failure", err, errors.Unwrap(err))
			}
			if c.Client() != nil {
				t.Error("a failed Connect left a client behind")
			}
		})
	}
}
