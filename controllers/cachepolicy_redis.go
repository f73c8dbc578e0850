package controllers

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// redisTimeout bounds each Redis call of a reconcile, so a stalled server
// shows up as a condition instead of a stuck worker.
const redisTimeout = 5 * time.Second

// connect opens (or reuses) the policy's Redis connection and records the
// outcome in the RedisConnected condition. It reports whether Redis answered.
func (r *CachePolicyReconciler) connect(ctx context.Context, s *scope) bool {
	p := s.policy
	opts, fp, reason, err := r.connectionOptions(ctx, p)
	if err == nil {
		var store Store
		reason = cachev1alpha1.ReasonRedisUnreachable
		if store, err = r.stores.get(types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, fp, opts); err == nil {
			pingCtx, cancel := context.WithTimeout(ctx, redisTimeout)
			err = store.Ping(pingCtx)
			cancel()
			switch {
			case isAuthError(err):
				reason = cachev1alpha1.ReasonRedisAuthFailed
			case isTLSError(err):
				reason = cachev1alpha1.ReasonTLSFailed
			}
			if err == nil {
				s.store = store
			}
		}
		if err != nil {
			err = fmt.Errorf("cannot reach Redis at %s: %w", redisconn.Redact(p.Spec.Redis.URL), err)
		}
	}
	if err != nil {
		r.redisDown(s, reason, err)
		return false
	}
	s.setCondition(cachev1alpha1.ConditionRedisConnected, metav1.ConditionTrue, cachev1alpha1.ReasonConnected,
		"connected to "+redisconn.Redact(p.Spec.Redis.URL))
	return true
}

// redisDown records a connection problem: condition, an Event when it starts,
// and a retry that backs off the longer the problem lasts.
func (r *CachePolicyReconciler) redisDown(s *scope, reason string, err error) {
	p := s.policy
	prev := meta.FindStatusCondition(p.Status.Conditions, cachev1alpha1.ConditionRedisConnected)
	if prev == nil || prev.Status != metav1.ConditionFalse || prev.Reason != reason {
		r.event(p, corev1.EventTypeWarning, reason, "Connect", err.Error())
	}
	s.setCondition(cachev1alpha1.ConditionRedisConnected, metav1.ConditionFalse, reason, err.Error())
	since := time.Duration(0)
	if c := meta.FindStatusCondition(p.Status.Conditions, cachev1alpha1.ConditionRedisConnected); c != nil {
		since = s.now.Sub(c.LastTransitionTime.Time)
	}
	s.requeue(backoff(since))
}

// backoff grows the retry delay with how long a problem has lasted: about
// doubling at every retry, from 1s up to 1 minute.
func backoff(lasted time.Duration) time.Duration {
	return min(max(lasted, time.Second), time.Minute)
}

// connectionOptions builds the policy's Redis options, reading the password
// and TLS material from their Secrets, and a fingerprint of all of it. The
// reason names what to fix when it fails.
func (r *CachePolicyReconciler) connectionOptions(ctx context.Context, p *cachev1alpha1.CachePolicy) (redisconn.Options, string, string, error) {
	spec := p.Spec.Redis
	o := redisconn.Options{
		Mode:       string(spec.Mode),
		URL:        spec.URL,
		Addrs:      spec.Addresses,
		MasterName: spec.MasterName,
		Username:   spec.Username,
		Timeout:    redisTimeout,
		PoolSize:   8,
	}
	specJSON, _ := json.Marshal(spec) // plain strings and bools cannot fail
	parts := [][]byte{specJSON}
	if ref := spec.PasswordSecretRef; ref != nil {
		key := cmp.Or(ref.Key, cachev1alpha1.DefaultPasswordKey)
		pw, err := r.secretKey(ctx, p.Namespace, ref.Name, key, "spec.redis.passwordSecretRef")
		if err != nil {
			return o, "", cachev1alpha1.ReasonSecretNotFound, err
		}
		o.Password = string(pw)
		parts = append(parts, pw)
	}
	if t := spec.TLS; t != nil && (t.Enabled || strings.HasPrefix(spec.URL, "rediss://")) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
		if ref := t.CASecretRef; ref != nil {
			ca, err := r.secretKey(ctx, p.Namespace, ref.Name, "ca.crt", "spec.redis.tls.caSecretRef")
			if err != nil {
				return o, "", cachev1alpha1.ReasonSecretNotFound, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca) {
				return o, "", cachev1alpha1.ReasonTLSFailed, fmt.Errorf("the Secret %q key ca.crt (spec.redis.tls.caSecretRef) holds no PEM certificate", ref.Name)
			}
			cfg.RootCAs = pool
			parts = append(parts, ca)
		}
		if ref := t.ClientCertSecretRef; ref != nil {
			crt, err := r.secretKey(ctx, p.Namespace, ref.Name, corev1.TLSCertKey, "spec.redis.tls.clientCertSecretRef")
			if err != nil {
				return o, "", cachev1alpha1.ReasonSecretNotFound, err
			}
			key, err := r.secretKey(ctx, p.Namespace, ref.Name, corev1.TLSPrivateKeyKey, "spec.redis.tls.clientCertSecretRef")
			if err != nil {
				return o, "", cachev1alpha1.ReasonSecretNotFound, err
			}
			pair, err := tls.X509KeyPair(crt, key)
			if err != nil {
				return o, "", cachev1alpha1.ReasonTLSFailed, fmt.Errorf("the Secret %q (spec.redis.tls.clientCertSecretRef) holds no usable tls.crt/tls.key pair", ref.Name)
			}
			cfg.Certificates = []tls.Certificate{pair}
			parts = append(parts, crt, key)
		}
		o.TLS = cfg
	}
	return o, fingerprint(parts...), "", nil
}

// secretKey reads one key of a Secret in ns; field names the spec field that
// references it, for the message.
func (r *CachePolicyReconciler) secretKey(ctx context.Context, ns, name, key, field string) ([]byte, error) {
	secret := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no Secret %q (%s) in namespace %q", name, field, ns)
		}
		return nil, fmt.Errorf("read Secret %q (%s): %w", name, field, err)
	}
	v, ok := secret.Data[key]
	if !ok {
		return nil, fmt.Errorf("the Secret %q has no key %q (%s)", name, key, field)
	}
	return v, nil
}

// publishPolicy writes the declared prefixes' TTLs into the policy hash and
// records each prefix's TTL and generation in status.
func (r *CachePolicyReconciler) publishPolicy(ctx context.Context, s *scope) bool {
	p := s.policy
	want := make(map[string]keyspace.PrefixPolicy, len(p.Spec.Prefixes))
	for _, d := range p.Spec.Prefixes {
		want[d.Name] = keyspace.PrefixPolicy{TTLMillis: p.TTLFor(d.Name).Milliseconds(), NearCache: d.NearCache}
	}
	cctx, cancel := context.WithTimeout(ctx, redisTimeout)
	gens, err := s.store.SyncPolicy(cctx, s.space, want, statusGenerations(p))
	cancel()
	if err != nil {
		r.redisDown(s, cachev1alpha1.ReasonRedisUnreachable, fmt.Errorf("publish policy: %w", err))
		return false
	}
	setPrefixStatus(p, gens)
	return true
}

// statusGenerations are the generations status remembers: a floor for Redis's.
func statusGenerations(p *cachev1alpha1.CachePolicy) map[string]int64 {
	out := make(map[string]int64, len(p.Status.Prefixes))
	for _, ps := range p.Status.Prefixes {
		out[ps.Name] = ps.Generation
	}
	return out
}

// setPrefixStatus makes status.prefixes list the declared prefixes in spec
// order with their TTLs and the given generations, keeping their stats.
func setPrefixStatus(p *cachev1alpha1.CachePolicy, gens map[string]int64) {
	old := make(map[string]cachev1alpha1.PrefixStatus, len(p.Status.Prefixes))
	for _, ps := range p.Status.Prefixes {
		old[ps.Name] = ps
	}
	next := make([]cachev1alpha1.PrefixStatus, 0, len(p.Spec.Prefixes))
	for _, d := range p.Spec.Prefixes {
		ps := old[d.Name]
		ps.Name = d.Name
		ps.TTL = metav1.Duration{Duration: p.TTLFor(d.Name)}
		if g, ok := gens[d.Name]; ok {
			ps.Generation = g
		}
		next = append(next, ps)
	}
	p.Status.Prefixes = next
}
