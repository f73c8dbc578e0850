package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/internal/testenv"
)

var (
	env       *testenv.Env
	k8sClient client.Client
)

// TestMain starts one API server for the package: installing the CRD there is
// itself a test, since the API server refuses a CRD whose CEL rules exceed the
// cost budget.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var cfg *rest.Config
	var err error
	env, cfg, err = testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the test API server:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
		}
	}()
	k8sClient, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// newNamespace creates a namespace of its own for one test. envtest runs no
// namespace controller, so namespaces are never removed; unique names keep
// tests apart.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cachepol-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	return ns.Name
}

// validSpec uses every spec field, so each case below breaks exactly one rule.
func validSpec() map[string]any {
	return map[string]any{
		"redis": map[string]any{
			"url":               "redis://redis.cache.svc:6379/0",
			"username":          "cacheplane",
			"passwordSecretRef": map[string]any{"name": "redis-auth", "key": "password"},
		},
		"keyPrefix":  "shop",
		"defaultTTL": "5m",
		"prefixes": []any{
			map[string]any{"name": "users", "ttl": "10m"},
			map[string]any{"name": "products"},
		},
		"invalidation": map[string]any{
			"token":            "v1",
			"prefixes":         []any{"users"},
			"patterns":         []any{"users:42:*"},
			"maxKeysPerSecond": int64(1000),
			"schedule":         "0 3 * * *",
			"watch": []any{
				map[string]any{"kind": "ConfigMap", "name": "catalog-version", "prefixes": []any{"products"}},
			},
		},
		"statsInterval":  "30s",
		"deletionPolicy": "Retain",
	}
}

func policy(ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("CachePolicy"))
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// set replaces the value at a dotted path of the spec, creating maps on the way.
func set(path string, value any) func(map[string]any) {
	return func(spec map[string]any) {
		fields := strings.Split(path, ".")
		if err := unstructured.SetNestedField(spec, runtime.DeepCopyJSONValue(value), fields...); err != nil {
			panic(err)
		}
	}
}

func del(path string) func(map[string]any) {
	return func(spec map[string]any) { unstructured.RemoveNestedField(spec, strings.Split(path, ".")...) }
}

func names(prefix string, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func prefixList(names ...any) []any {
	out := make([]any, len(names))
	for i, n := range names {
		out[i] = map[string]any{"name": n}
	}
	return out
}

// The messages of the CRD's rules, as users see them.
const (
	msgURL              = "url must be a Redis URL with scheme redis or rediss and a host, such as redis://redis.cache.svc:6379/0"
	msgURLCredentials   = "url must not contain credentials; put the username in spec.redis.username and the password in a Secret referenced by spec.redis.passwordSecretRef"
	msgKeyPrefixChars   = "keyPrefix may contain only letters, digits and the characters . _ - / (no ':', no whitespace, no glob characters * ? [ ] or backslash, no braces { })"
	msgKeyPrefixColon   = "keyPrefix must not contain ':'; key prefixes cannot nest (cacheplane adds the ':' between key prefix and key itself, and a key prefix 'a' would own the keys of 'a:b'); use . _ - or / instead, such as 'team-a/shop'"
	msgKeyPrefixImmut   = "keyPrefix is immutable; to use another key prefix, create a new CachePolicy instead (and delete this one)"
	msgDefaultTTL       = "defaultTTL must be a positive duration such as 30s, 5m or 1h30m"
	msgStatsInterval    = "statsInterval must be a duration of at least 1s, such as 10s or 1m"
	msgPrefixUnique     = "spec.prefixes names must be unique; remove or rename the duplicate entry"
	msgPrefixEmpty      = "prefix name must not be empty"
	msgPrefixChars      = "prefix name may contain only letters, digits, '.', '_' and '-' (no ':', no whitespace, no glob characters * ? [ ] or backslash)"
	msgPrefixTTL        = "ttl must be a positive duration such as 30s, 10m or 1h; leave it out to use spec.defaultTTL"
	msgInvPrefixes      = "every entry of spec.invalidation.prefixes must name a prefix declared in spec.prefixes; declare it there or remove it"
	msgInvPatterns      = "every entry of spec.invalidation.patterns must start with a prefix declared in spec.prefixes followed by ':' (for example 'users:42:*'); patterns are relative to spec.keyPrefix"
	msgWatchPrefixes    = "every entry of spec.invalidation.watch[].prefixes must name a prefix declared in spec.prefixes; declare it there or remove it"
	msgSchedule         = "schedule must be a cron expression with 5 fields (minute hour day-of-month month day-of-week, such as '0 3 * * *') or one of @hourly, @daily, @weekly, @monthly, @yearly, '@every <duration>' (such as '@every 6h')"
	msgSecretKey        = "key must be a Secret data key: letters, digits, '-', '_' and '.'"
	msgDeletionPolicy   = `spec.deletionPolicy: Unsupported value: "Delete": supported values: "Retain", "Purge"`
	msgWatchKind        = `spec.invalidation.watch[0].kind: Unsupported value: "Deployment": supported values: "ConfigMap", "Secret"`
	msgMaxKeysPerSecond = "spec.invalidation.maxKeysPerSecond: Invalid value: -1: spec.invalidation.maxKeysPerSecond in body should be greater than or equal to 0"
)

func TestInvalidSpecsAreRejected(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(map[string]any)
		want   string
	}{
		{"url is not a URL", set("redis.url", "redis.cache.svc:6379"), msgURL},
		{"url has another scheme", set("redis.url", "http://redis.cache.svc:6379/0"), msgURL},
		{"url has no host", set("redis.url", "redis:///0"), msgURL},
		{"url is empty", set("redis.url", ""), msgURL},
		{"url has user and password", set("redis.url", "redis://app:s3cret@redis:6379/0"), msgURLCredentials},
		{"url has a password only", set("redis.url", "rediss://:s3cret@redis:6380"), msgURLCredentials},
		{"url has a user only", set("redis.url", "redis://app@redis"), msgURLCredentials},
		{"url is missing", del("redis.url"), `spec.redis.url: Required value`},
		{"mode is unknown", set("redis.mode", "Replicated"), `spec.redis.mode: Unsupported value: "Replicated"`},
		{"Sentinel without masterName", set("redis.mode", "Sentinel"), "masterName is required in Sentinel mode"},
		{"addresses in Standalone mode", set("redis.addresses", []any{"redis-1:6379"}), "addresses apply to Cluster and Sentinel mode"},
		{"masterName outside Sentinel mode", set("redis.masterName", "mymaster"), "masterName applies only to Sentinel mode"},
		{"address without port", func(m map[string]any) {
			set("redis.mode", "Cluster")(m)
			set("redis.addresses", []any{"redis-1"})(m)
		}, "each address must be host:port"},
		{"tls skips verification and names a CA", set("redis.tls", map[string]any{"insecureSkipVerify": true, "caSecretRef": map[string]any{"name": "ca"}}), "insecureSkipVerify skips the check that caSecretRef is for"},

		{"keyPrefix is missing", del("keyPrefix"), `spec.keyPrefix: Required value`},
		{"keyPrefix is empty", set("keyPrefix", ""), `spec.keyPrefix: Invalid value: "": spec.keyPrefix in body should be at least 1 chars long`},
		{"keyPrefix is too long", set("keyPrefix", strings.Repeat("k", 65)), `spec.keyPrefix: Too long: may not be more than 64 bytes`},
		{"keyPrefix has a glob star", set("keyPrefix", "shop*"), msgKeyPrefixChars},
		{"keyPrefix has a question mark", set("keyPrefix", "shop?"), msgKeyPrefixChars},
		{"keyPrefix has brackets", set("keyPrefix", "shop[1]"), msgKeyPrefixChars},
		{"keyPrefix has a backslash", set("keyPrefix", `shop\x`), msgKeyPrefixChars},
		{"keyPrefix has braces", set("keyPrefix", "{shop}"), msgKeyPrefixChars},
		{"keyPrefix has a space", set("keyPrefix", "my shop"), msgKeyPrefixChars},
		{"keyPrefix has a tab", set("keyPrefix", "shop\t"), msgKeyPrefixChars},
		{"keyPrefix ends with a colon", set("keyPrefix", "shop:"), msgKeyPrefixColon},
		{"keyPrefix nests in another", set("keyPrefix", "shop:eu"), msgKeyPrefixColon},

		{"defaultTTL is zero", set("defaultTTL", "0s"), msgDefaultTTL},
		{"defaultTTL is negative", set("defaultTTL", "-5m"), msgDefaultTTL},
		{"defaultTTL has no unit", set("defaultTTL", "300"), msgDefaultTTL},
		{"defaultTTL is prose", set("defaultTTL", "5 minutes"), msgDefaultTTL},

		{"prefixes is empty", set("prefixes", []any{}), `spec.prefixes: Invalid value: 0: spec.prefixes in body should have at least 1 items`},
		{"prefixes is missing", del("prefixes"), `spec.prefixes: Required value`},
		{"prefixes has too many entries", set("prefixes", prefixList(names("p", 101)...)), `spec.prefixes: Too many: 101: must have at most 100 items`},
		{"prefix names repeat", set("prefixes", prefixList("users", "products", "users")), msgPrefixUnique},
		{"prefix name is empty", set("prefixes", prefixList("users", "products", "")), msgPrefixEmpty},
		{"prefix name has a colon", set("prefixes", prefixList("users", "products", "orders:eu")), msgPrefixChars},
		{"prefix name has a glob star", set("prefixes", prefixList("users", "products", "ord*")), msgPrefixChars},
		{"prefix name has a question mark", set("prefixes", prefixList("users", "products", "ord?")), msgPrefixChars},
		{"prefix name has brackets", set("prefixes", prefixList("users", "products", "o[rd]")), msgPrefixChars},
		{"prefix name has a backslash", set("prefixes", prefixList("users", "products", `o\rd`)), msgPrefixChars},
		{"prefix name has a space", set("prefixes", prefixList("users", "products", "new orders")), msgPrefixChars},
		{"prefix name is too long", set("prefixes", prefixList("users", "products", strings.Repeat("o", 64))), `spec.prefixes[2].name: Too long: may not be more than 63 bytes`},
		{"prefix ttl is zero", set("prefixes", []any{map[string]any{"name": "users", "ttl": "0s"}, map[string]any{"name": "products"}}), msgPrefixTTL},
		{"prefix ttl is negative", set("prefixes", []any{map[string]any{"name": "users", "ttl": "-1m"}, map[string]any{"name": "products"}}), msgPrefixTTL},
		{"prefix ttl is not a duration", set("prefixes", []any{map[string]any{"name": "users", "ttl": "1d"}, map[string]any{"name": "products"}}), msgPrefixTTL},

		{"invalidation prefix is not declared", set("invalidation.prefixes", []any{"users", "orders"}), msgInvPrefixes},
		{"invalidation prefixes repeat", set("invalidation.prefixes", []any{"users", "users"}), `spec.invalidation.prefixes[1]: Duplicate value: "users"`},
		{"pattern is under an undeclared prefix", set("invalidation.patterns", []any{"orders:*"}), msgInvPatterns},
		{"pattern lacks the colon after its prefix", set("invalidation.patterns", []any{"users*"}), msgInvPatterns},
		{"pattern only shares the start of a prefix", set("invalidation.patterns", []any{"user:*"}), msgInvPatterns},
		{"pattern matches everything", set("invalidation.patterns", []any{"*"}), msgInvPatterns},
		{"pattern tries to leave the key prefix", set("invalidation.patterns", []any{"../other:*"}), msgInvPatterns},
		{"one good and one bad pattern", set("invalidation.patterns", []any{"users:*", "*:42"}), msgInvPatterns},
		{"too many patterns", set("invalidation.patterns", names("users:", 51)), `spec.invalidation.patterns: Too many: 51: must have at most 50 items`},
		{"maxKeysPerSecond is negative", set("invalidation.maxKeysPerSecond", int64(-1)), msgMaxKeysPerSecond},
		{"schedule has 4 fields", set("invalidation.schedule", "0 3 * *"), msgSchedule},
		{"schedule has 6 fields", set("invalidation.schedule", "0 0 3 * * *"), msgSchedule},
		{"schedule is prose", set("invalidation.schedule", "every night"), msgSchedule},
		{"schedule is an unknown descriptor", set("invalidation.schedule", "@nightly"), msgSchedule},
		{"schedule @every lacks a duration", set("invalidation.schedule", "@every"), msgSchedule},
		{"schedule @every has a bad duration", set("invalidation.schedule", "@every 6 hours"), msgSchedule},
		{"watch kind is unknown", set("invalidation.watch", []any{map[string]any{"kind": "Deployment", "name": "web"}}), msgWatchKind},
		{"watch has too many prefixes", set("invalidation.watch", []any{map[string]any{"kind": "Secret", "name": "creds", "prefixes": names("p", 21)}}), `spec.invalidation.watch[0].prefixes: Too many: 21: must have at most 20 items`},
		{"watch prefix is not declared", set("invalidation.watch", []any{map[string]any{"kind": "Secret", "name": "creds", "prefixes": []any{"orders"}}}), msgWatchPrefixes},
		{"watch name is missing", set("invalidation.watch", []any{map[string]any{"kind": "Secret"}}), `spec.invalidation.watch[0].name: Required value`},
		{"watch repeats an object", set("invalidation.watch", []any{
			map[string]any{"kind": "Secret", "name": "creds"},
			map[string]any{"kind": "Secret", "name": "creds"},
		}), `spec.invalidation.watch[1]: Duplicate value`},
		{"too many watches", set("invalidation.watch", func() []any {
			w := make([]any, 21)
			for i := range w {
				w[i] = map[string]any{"kind": "ConfigMap", "name": fmt.Sprintf("cm-%d", i)}
			}
			return w
		}()), `spec.invalidation.watch: Too many: 21: must have at most 20 items`},

		{"statsInterval is below 1s", set("statsInterval", "500ms"), msgStatsInterval},
		{"statsInterval is zero", set("statsInterval", "0s"), msgStatsInterval},
		{"statsInterval is not a duration", set("statsInterval", "often"), msgStatsInterval},

		{"deletionPolicy is unknown", set("deletionPolicy", "Delete"), msgDeletionPolicy},
		{"secret key has a space", set("redis.passwordSecretRef.key", "redis password"), msgSecretKey},
		{"secret name is missing", del("redis.passwordSecretRef.name"), `spec.redis.passwordSecretRef.name: Required value`},
	}
	ns := newNamespace(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			tt.mutate(spec)
			err := k8sClient.Create(context.Background(), policy(ns, fmt.Sprintf("bad-%d", i), spec))
			if err == nil {
				t.Fatalf("the API server accepted the policy; want an error containing %q", tt.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("got %v; want an Invalid error", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			t.Log(err)
		})
	}
}

// Rules that reject too much are as wrong as rules that reject too little.
func TestValidVariantsAreAccepted(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(map[string]any)
	}{
		{"the valid spec itself", func(map[string]any) {}},
		{"rediss with a cluster DNS name", set("redis.url", "rediss://redis-0.redis.cache.svc.cluster.local:6380")},
		{"IPv6 host", set("redis.url", "redis://[::1]:6379/0")},
		{"Redis Cluster with seeds", func(m map[string]any) {
			set("redis.mode", "Cluster")(m)
			set("redis.addresses", []any{"redis-1.cache.svc:6379", "10.0.0.8:7000"})(m)
		}},
		{"Sentinel with a master name", func(m map[string]any) {
			set("redis.mode", "Sentinel")(m)
			set("redis.masterName", "mymaster")(m)
			set("redis.addresses", []any{"sentinel-1:26379"})(m)
		}},
		{"TLS with CA, client certificate and server name", set("redis.tls", map[string]any{"enabled": true, "caSecretRef": map[string]any{"name": "ca"}, "clientCertSecretRef": map[string]any{"name": "client"}, "serverName": "redis.cache.svc"})},
		{"IP host without port or db", set("redis.url", "redis://10.0.0.7")},
		{"URL with query options", set("redis.url", "redis://redis:6379/0?dial_timeout=3s&client_name=a@b")},
		{"no credentials at all", del("redis.passwordSecretRef")},
		{"keyPrefix with the allowed punctuation", set("keyPrefix", "team-a/shop.v2_eu-cache")},
		{"keyPrefix of 64 characters", set("keyPrefix", strings.Repeat("k", 64))},
		{"compound TTL", set("defaultTTL", "1h30m")},
		{"fractional TTL", set("defaultTTL", "1.5s")},
		{"TTL as Go prints it", set("defaultTTL", "5m0s")},
		{"prefix names with the allowed punctuation", set("prefixes", prefixList("user_profiles.v2-eu", "users", "products"))},
		{"100 prefixes", set("prefixes", prefixList(append(names("p", 98), "users", "products")...))},
		{"glob patterns under declared prefixes", set("invalidation.patterns", []any{"users:42:*", "products:sku-1?", "users:[ab]*", `users:\*`})},
		{"empty invalidation", set("invalidation", map[string]any{})},
		{"no invalidation", del("invalidation")},
		{"empty token", set("invalidation.token", "")},
		{"unlimited rate", set("invalidation.maxKeysPerSecond", int64(0))},
		{"@daily", set("invalidation.schedule", "@daily")},
		{"@hourly", set("invalidation.schedule", "@hourly")},
		{"@weekly", set("invalidation.schedule", "@weekly")},
		{"@monthly", set("invalidation.schedule", "@monthly")},
		{"@yearly", set("invalidation.schedule", "@yearly")},
		{"@every with a compound duration", set("invalidation.schedule", "@every 1h30m")},
		{"step values", set("invalidation.schedule", "*/15 * * * *")},
		{"names and ranges", set("invalidation.schedule", "0 3 1,15 JAN-JUN MON-FRI")},
		{"watch without prefixes", set("invalidation.watch", []any{map[string]any{"kind": "Secret", "name": "creds"}})},
		{"ConfigMap and Secret of the same name", set("invalidation.watch", []any{
			map[string]any{"kind": "Secret", "name": "flags"},
			map[string]any{"kind": "ConfigMap", "name": "flags"},
		})},
		{"statsInterval of 1s", set("statsInterval", "1s")},
		{"Purge", set("deletionPolicy", "Purge")},
	}
	ns := newNamespace(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := validSpec()
			tt.mutate(spec)
			if err := k8sClient.Create(context.Background(), policy(ns, fmt.Sprintf("good-%d", i), spec)); err != nil {
				t.Fatalf("the API server rejected a valid policy: %v", err)
			}
		})
	}
}

// The largest spec the limits allow must stay within the API server's runtime
// CEL budget, not only its static estimate.
func TestLargestSpecIsAccepted(t *testing.T) {
	// Names of the maximum length; the rules' loops find the ones referenced
	// below last, which is their most expensive case.
	declared := make([]any, 100)
	for i := range declared {
		declared[i] = fmt.Sprintf("%s%02d", strings.Repeat("p", 61), i)
	}
	last := declared[99].(string)
	patterns := make([]any, 50)
	for i := range patterns {
		head := fmt.Sprintf("%s:%02d", last, i)
		patterns[i] = head + strings.Repeat("x", 256-len(head))
	}
	watch := make([]any, 20)
	for i := range watch {
		watch[i] = map[string]any{"kind": "ConfigMap", "name": fmt.Sprintf("cm-%d", i), "prefixes": declared[80:]}
	}
	spec := validSpec()
	set("keyPrefix", strings.Repeat("k", 64))(spec)
	set("prefixes", prefixList(declared...))(spec)
	set("invalidation", map[string]any{
		"token":    strings.Repeat("t", 256),
		"prefixes": declared,
		"patterns": patterns,
		"schedule": strings.Repeat("1,", 20) + "1 * * * *",
		"watch":    watch,
	})(spec)
	if err := k8sClient.Create(context.Background(), policy(newNamespace(t), "largest", spec)); err != nil {
		t.Fatalf("the API server rejected the largest valid policy: %v", err)
	}
}

func TestSampleIsAccepted(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "samples", "cache_v1alpha1_cachepolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var sample v1alpha1.CachePolicy
	if err := yaml.UnmarshalStrict(data, &sample); err != nil {
		t.Fatalf("the sample does not match the Go types: %v", err)
	}
	sample.Namespace = newNamespace(t)
	if err := k8sClient.Create(context.Background(), &sample); err != nil {
		t.Fatalf("the API server rejected the sample: %v", err)
	}
	if got := sample.TTLFor("users"); got != 10*time.Minute {
		t.Errorf("users TTL = %v, want 10m", got)
	}
}

func TestDefaultsAreApplied(t *testing.T) {
	ns := newNamespace(t)
	minimal := map[string]any{
		"redis":     map[string]any{"url": "redis://redis:6379", "passwordSecretRef": map[string]any{"name": "redis-auth"}},
		"keyPrefix": "shop",
		"prefixes":  prefixList("users"),
	}
	if err := k8sClient.Create(context.Background(), policy(ns, "minimal", minimal)); err != nil {
		t.Fatal(err)
	}
	var got v1alpha1.CachePolicy
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "minimal"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.DefaultTTL.Duration != v1alpha1.DefaultDefaultTTL {
		t.Errorf("defaultTTL = %v, want %v", got.Spec.DefaultTTL.Duration, v1alpha1.DefaultDefaultTTL)
	}
	if got.Spec.StatsInterval.Duration != v1alpha1.DefaultStatsInterval {
		t.Errorf("statsInterval = %v, want %v", got.Spec.StatsInterval.Duration, v1alpha1.DefaultStatsInterval)
	}
	if got.Spec.DeletionPolicy != v1alpha1.DeletionPolicyRetain {
		t.Errorf("deletionPolicy = %q, want Retain", got.Spec.DeletionPolicy)
	}
	if ref := got.Spec.Redis.PasswordSecretRef; ref == nil || ref.Key != v1alpha1.DefaultPasswordKey {
		t.Errorf("passwordSecretRef = %+v, want key %q", ref, v1alpha1.DefaultPasswordKey)
	}
	if got.Spec.Prefixes[0].TTL != nil {
		t.Errorf("prefix ttl = %v, want unset (it falls back to defaultTTL)", got.Spec.Prefixes[0].TTL)
	}
	if ttl := got.TTLFor("users"); ttl != v1alpha1.DefaultDefaultTTL {
		t.Errorf("TTLFor(users) = %v, want %v", ttl, v1alpha1.DefaultDefaultTTL)
	}
}

// A Go client leaves zero durations out (omitzero), so the API server's
// defaults apply instead of "0s" being rejected.
func TestTypedClientGetsDefaults(t *testing.T) {
	p := &v1alpha1.CachePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace(t), Name: "typed"},
		Spec: v1alpha1.CachePolicySpec{
			Redis:     v1alpha1.RedisSpec{URL: "redis://redis:6379"},
			KeyPrefix: "shop",
			Prefixes:  []v1alpha1.PrefixSpec{{Name: "users"}},
		},
	}
	if err := k8sClient.Create(context.Background(), p); err != nil {
		t.Fatalf("creating a policy with zero durations from Go: %v", err)
	}
	if p.Spec.DefaultTTL.Duration != v1alpha1.DefaultDefaultTTL || p.Spec.StatsInterval.Duration != v1alpha1.DefaultStatsInterval {
		t.Errorf("defaults not applied: defaultTTL %v, statsInterval %v", p.Spec.DefaultTTL, p.Spec.StatsInterval)
	}
}

func fullPolicy(ns string) *v1alpha1.CachePolicy {
	return &v1alpha1.CachePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "full"},
		Spec: v1alpha1.CachePolicySpec{
			Redis: v1alpha1.RedisSpec{
				URL:               "rediss://redis.cache.svc:6380/2",
				Username:          "cacheplane",
				PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "redis-auth", Key: "pw"},
				Mode:              v1alpha1.RedisModeStandalone,
				TLS: &v1alpha1.RedisTLSSpec{
					CASecretRef: &v1alpha1.LocalSecretRef{Name: "redis-ca"},
					ServerName:  "redis.cache.svc",
				},
			},
			KeyPrefix:  "shop",
			DefaultTTL: metav1.Duration{Duration: 2 * time.Minute},
			Prefixes: []v1alpha1.PrefixSpec{
				{Name: "users", TTL: &metav1.Duration{Duration: 10 * time.Minute}},
				{Name: "products"},
			},
			Invalidation: v1alpha1.InvalidationSpec{
				Token:            "v7",
				Prefixes:         []string{"users"},
				Patterns:         []string{"users:42:*"},
				MaxKeysPerSecond: 5000,
				Schedule:         "@every 6h",
				Watch: []v1alpha1.WatchSpec{
					{Kind: v1alpha1.WatchKindConfigMap, Name: "catalog-version", Prefixes: []string{"products"}},
					{Kind: v1alpha1.WatchKindSecret, Name: "signing-key"},
				},
			},
			StatsInterval:  metav1.Duration{Duration: 10 * time.Second},
			DeletionPolicy: v1alpha1.DeletionPolicyPurge,
		},
	}
}

// Every Go field survives the API server: none is pruned for lack of a schema.
func TestFullSpecRoundTrips(t *testing.T) {
	want := fullPolicy(newNamespace(t))
	if err := k8sClient.Create(context.Background(), want.DeepCopy()); err != nil {
		t.Fatalf("the API server rejected a full valid policy: %v", err)
	}
	var got v1alpha1.CachePolicy
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(want), &got); err != nil {
		t.Fatal(err)
	}
	if !apiequality.Semantic.DeepEqual(got.Spec, want.Spec) {
		t.Errorf("spec changed on the way through the API server:\n got %+v\nwant %+v", got.Spec, want.Spec)
	}
}

// The status the controller writes, checkpoint included, fits the schema and
// comes back unchanged.
func TestStatusRoundTrips(t *testing.T) {
	p := fullPolicy(newNamespace(t))
	if err := k8sClient.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	micro := metav1.NewMicroTime(time.Now().Truncate(time.Microsecond))
	p.Status = v1alpha1.CachePolicyStatus{
		ObservedGeneration: p.Generation,
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonInvalidationFailed, Message: "UNLINK: connection refused", LastTransitionTime: now, ObservedGeneration: p.Generation},
			{Type: v1alpha1.ConditionRedisConnected, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonRedisUnreachable, Message: "dial tcp: connection refused", LastTransitionTime: now},
			{Type: v1alpha1.ConditionWatchesResolved, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonWatchedObjectNotFound, Message: "ConfigMap catalog-version not found", LastTransitionTime: now},
		},
		ObservedToken: "v6",
		LastInvalidation: &v1alpha1.InvalidationStatus{
			Token:       "v7",
			Trigger:     v1alpha1.WatchTrigger(v1alpha1.WatchKindConfigMap, "catalog-version"),
			Phase:       v1alpha1.InvalidationFailed,
			Prefixes:    []string{"users"},
			Patterns:    []string{`shop:users:42:*`, `shop:users:\*`},
			StartedAt:   &micro,
			CompletedAt: &micro,
			KeysDeleted: 12345,
			Attempts:    3,
			Message:     "connection refused",
			Checkpoint: &v1alpha1.InvalidationCheckpoint{
				Pattern: 1,
				Cursors: []v1alpha1.ScanCursor{
					{Node: "", Cursor: "18446744073709551615"},
					{Node: "10.0.0.2:6379", Cursor: "0", Done: true},
				},
			},
		},
		LastScheduleTime: &now,
		NextScheduleTime: &now,
		Watched:          []v1alpha1.WatchedObjectStatus{{Kind: v1alpha1.WatchKindConfigMap, Name: "catalog-version", DataHash: "sha256:abc"}},
		Hits:             948,
		Misses:           52,
		Errors:           1,
		HitRatio:         "94.8%",
		LastStatsSync:    &now,
		Prefixes: []v1alpha1.PrefixStatus{
			{Name: "users", TTL: metav1.Duration{Duration: 10 * time.Minute}, Generation: 4, Hits: 900, Misses: 50, Errors: 1, HitRatio: "94.7%"},
			{Name: "products", TTL: metav1.Duration{Duration: 2 * time.Minute}, Generation: 1, Hits: 48, Misses: 2, HitRatio: "96.0%"},
		},
	}
	want := p.Status.DeepCopy()
	if err := k8sClient.Status().Update(context.Background(), p); err != nil {
		t.Fatalf("writing status: %v", err)
	}
	var got v1alpha1.CachePolicy
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), &got); err != nil {
		t.Fatal(err)
	}
	if !apiequality.Semantic.DeepEqual(got.Status, *want) {
		t.Errorf("status changed on the way through the API server:\n got %+v\nwant %+v", got.Status, *want)
	}
	if got.Generation != p.Generation {
		t.Errorf("a status write bumped metadata.generation from %d to %d", p.Generation, got.Generation)
	}
}

func TestStatusPhaseIsAnEnum(t *testing.T) {
	p := fullPolicy(newNamespace(t))
	if err := k8sClient.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	p.Status.LastInvalidation = &v1alpha1.InvalidationStatus{Phase: "Done"}
	err := k8sClient.Status().Update(context.Background(), p)
	if want := `Unsupported value: "Done": supported values: "Running", "Complete", "Failed"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("status update with phase Done: got %v, want an error containing %q", err, want)
	}
}

func TestKeyPrefixIsImmutable(t *testing.T) {
	p := fullPolicy(newNamespace(t))
	if err := k8sClient.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}

	changed := p.DeepCopy()
	changed.Spec.KeyPrefix = "shop2"
	err := k8sClient.Update(context.Background(), changed)
	if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), msgKeyPrefixImmut) {
		t.Fatalf("changing keyPrefix: got %v, want an Invalid error containing %q", err, msgKeyPrefixImmut)
	}

	// The rest of the spec stays editable: that is how users invalidate.
	edited := p.DeepCopy()
	edited.Spec.Invalidation.Token = "v8"
	edited.Spec.Prefixes[0].TTL = &metav1.Duration{Duration: time.Minute}
	if err := k8sClient.Update(context.Background(), edited); err != nil {
		t.Fatalf("editing the token and a TTL: %v", err)
	}
	if edited.Generation <= p.Generation {
		t.Errorf("a spec edit left metadata.generation at %d (was %d)", edited.Generation, p.Generation)
	}
}
