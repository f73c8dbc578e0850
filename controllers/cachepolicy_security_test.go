package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

func createSecret(t *testing.T, ns, name string, data map[string][]byte) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TLS with the CA (and a client certificate) from Secrets works; a wrong CA
// is refused with a condition that says so.
func TestTLS(t *testing.T) {
	own, err := redistest.StartTLS(redistest.ClientAuthYes)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	wrong, err := redistest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns := namespace(t)
	createSecret(t, ns, "redis-ca", map[string][]byte{"ca.crt": own.Certs.CAPEM})
	createSecret(t, ns, "wrong-ca", map[string][]byte{"ca.crt": wrong.CAPEM})
	createSecret(t, ns, "redis-client", map[string][]byte{corev1.TLSCertKey: own.Certs.ClientCertPEM, corev1.TLSPrivateKeyKey: own.Certs.ClientKeyPEM})

	p := newPolicy(ns, "p", "tls")
	p.Spec.Redis.URL = own.URL(0) // rediss://
	p.Spec.Redis.TLS = &cachev1alpha1.RedisTLSSpec{
		CASecretRef:         &cachev1alpha1.LocalSecretRef{Name: "wrong-ca"},
		ClientCertSecretRef: &cachev1alpha1.LocalSecretRef{Name: "redis-client"},
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionRedisConnected, metav1.ConditionFalse, cachev1alpha1.ReasonTLSFailed), fmt.Sprintf("%+v", cur.Status.Conditions)
	})
	c := get(t, p).Status.Conditions
	for _, cond := range c {
		if cond.Type == cachev1alpha1.ConditionRedisConnected && !strings.Contains(cond.Message, "certificate") {
			t.Errorf("TLS failure message does not mention the certificate: %q", cond.Message)
		}
	}
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Redis.TLS.CASecretRef.Name = "redis-ca" })
	waitReady(t, p)
	oc := own.Client()
	defer oc.Close()
	if n, err := oc.HLen(context.Background(), "{cacheplane:tls}:policy").Result(); err != nil || n != 2 {
		t.Errorf("policy over TLS: %d fields, %v", n, err)
	}
}

// The controller works with an ACL user limited to the policy's keys and
// channel; a rotated password is picked up from the Secret without a restart.
func TestACLUserAndPasswordRotation(t *testing.T) {
	user := redistest.CacheUser("tenant", "first-Pa55", "acl")
	own, err := redistest.Start(user.Args()...)
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ctx := context.Background()
	oc := own.Client()
	defer oc.Close()
	for i := range 500 {
		oc.Set(ctx, fmt.Sprintf("acl:users:%d", i), "v", 0)
	}
	oc.Set(ctx, "other:users:1", "v", 0)

	ns := namespace(t)
	secret := createSecret(t, ns, "redis-auth", map[string][]byte{"password": []byte("first-Pa55")})
	p := newPolicy(ns, "p", "acl")
	p.Spec.Redis.URL = own.URL(0)
	p.Spec.Redis.Username = "tenant"
	p.Spec.Redis.PasswordSecretRef = &cachev1alpha1.SecretKeyRef{Name: "redis-auth"}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	update(t, p, func(p *cachev1alpha1.CachePolicy) { p.Spec.Invalidation.Token = "a1" })
	if run := waitRun(t, p, cachev1alpha1.TriggerToken, "a1"); run.KeysDeleted != 500 {
		t.Errorf("keysDeleted = %d, want 500", run.KeysDeleted)
	}
	if n := countKeys(t, oc, "other:*"); n != 1 {
		t.Error("another tenant's key is gone")
	}
	if log, err := own.ACLLog(); err != nil || len(log) != 0 {
		t.Errorf("the controller needed rights beyond the tenant's: ACL LOG %v (%v)", log, err)
	}

	// Rotate: Redis first (the old password stops working), then the Secret.
	user.Password = "second-Pa55"
	if err := own.SetUser(user); err != nil {
		t.Fatal(err)
	}
	oc.Do(ctx, "CLIENT", "KILL", "USER", "tenant") // drop connections made with the old password
	eventually(t, 30*time.Second, func() (bool, string) {
		cur := get(t, p)
		return conditionIs(cur, cachev1alpha1.ConditionRedisConnected, metav1.ConditionFalse, cachev1alpha1.ReasonRedisAuthFailed), fmt.Sprintf("%+v", cur.Status.Conditions)
	})
	secret.Data["password"] = []byte("second-Pa55")
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	for _, pw := range []string{"first-Pa55", "second-Pa55"} {
		if strings.Contains(logs.String(), pw) {
			t.Errorf("password %q in the manager's logs", pw)
		}
		for _, e := range events(t, ns, "p") {
			if strings.Contains(e.Message, pw) {
				t.Errorf("password in Event %s", e.Reason)
			}
		}
	}
}
