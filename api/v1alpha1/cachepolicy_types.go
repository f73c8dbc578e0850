package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults the API server applies (the +kubebuilder:default markers below must
// agree; the validation tests check that they do). Exported so code that reads
// a policy the API server has not defaulted, such as one built in a unit test,
// behaves the same.
const (
	// DefaultDefaultTTL is spec.defaultTTL when the user leaves it out.
	DefaultDefaultTTL = 5 * time.Minute
	// DefaultStatsInterval is spec.statsInterval when the user leaves it out.
	DefaultStatsInterval = 30 * time.Second
	// DefaultPasswordKey is spec.redis.passwordSecretRef.key when the user leaves it out.
	DefaultPasswordKey = "password"
)

// Condition types reported in status.conditions.
const (
	// ConditionReady is True when the policy is published to Redis and no
	// trigger is failing.
	ConditionReady = "Ready"
	// ConditionRedisConnected is True when the controller reached Redis with
	// the spec's URL and credentials.
	ConditionRedisConnected = "RedisConnected"
	// ConditionWatchesResolved is True when every object in
	// spec.invalidation.watch exists (or none is declared).
	ConditionWatchesResolved = "WatchesResolved"
)

// Condition reasons: CamelCase words that say why a condition has its status.
const (
	// ReasonReconciled: Ready=True, the policy is published and up to date.
	ReasonReconciled = "Reconciled"
	// ReasonConnected: RedisConnected=True.
	ReasonConnected = "Connected"
	// ReasonRedisUnreachable: Redis did not answer (connection refused,
	// timeout, DNS).
	ReasonRedisUnreachable = "RedisUnreachable"
	// ReasonRedisAuthFailed: Redis answered but rejected the username or password.
	ReasonRedisAuthFailed = "RedisAuthFailed"
	// ReasonSecretNotFound: spec.redis.passwordSecretRef names a Secret, or a
	// key in it, that does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonInvalidSchedule: spec.invalidation.schedule has the right shape
	// but the controller cannot parse it.
	ReasonInvalidSchedule = "InvalidSchedule"
	// ReasonWatchedObjectNotFound: WatchesResolved=False, a watched
	// ConfigMap or Secret does not exist.
	ReasonWatchedObjectNotFound = "WatchedObjectNotFound"
	// ReasonWatchesFound: WatchesResolved=True.
	ReasonWatchesFound = "WatchesFound"
	// ReasonInvalidationFailed: the last invalidation run failed and is
	// being retried with backoff.
	ReasonInvalidationFailed = "InvalidationFailed"
	// ReasonTLSFailed: the TLS handshake with Redis failed (wrong CA,
	// server name, or client certificate).
	ReasonTLSFailed = "TLSFailed"
	// ReasonInvalidKeyPrefix: spec.keyPrefix breaks a rule the API server
	// enforces today (a policy stored before a rule was added, such as ':'
	// which would let it nest inside another tenant's prefix). The policy
	// touches nothing in Redis until it is replaced.
	ReasonInvalidKeyPrefix = "InvalidKeyPrefix"
)

// InvalidationPhase is the state of an invalidation run.
// +kubebuilder:validation:Enum=Running;Complete;Failed
type InvalidationPhase string

// Invalidation phases.
const (
	// InvalidationRunning: the run is scanning and deleting; status.lastInvalidation.checkpoint
	// says where to resume.
	InvalidationRunning InvalidationPhase = "Running"
	// InvalidationComplete: every pattern was scanned on every node.
	InvalidationComplete InvalidationPhase = "Complete"
	// InvalidationFailed: the last attempt failed; the controller retries with backoff.
	InvalidationFailed InvalidationPhase = "Failed"
)

// Invalidation triggers recorded in status.lastInvalidation.trigger. Watched
// objects are recorded as "<Kind>/<name>"; see WatchTrigger.
const (
	// TriggerToken: spec.invalidation.token changed.
	TriggerToken = "Token"
	// TriggerSchedule: spec.invalidation.schedule fired.
	TriggerSchedule = "Schedule"
)

// WatchTrigger returns the trigger recorded for a change of a watched object,
// for example "ConfigMap/feature-flags".
func WatchTrigger(kind WatchKind, name string) string {
	return string(kind) + "/" + name
}

// DeletionPolicy says what happens to a policy's keys in Redis when the
// CachePolicy is deleted.
// +kubebuilder:validation:Enum=Retain;Purge
type DeletionPolicy string

// Deletion policies.
const (
	// DeletionPolicyRetain leaves every key in Redis.
	DeletionPolicyRetain DeletionPolicy = "Retain"
	// DeletionPolicyPurge deletes <keyPrefix>:<prefix>:* for every declared
	// prefix (and the control keys) before the object goes away.
	DeletionPolicyPurge DeletionPolicy = "Purge"
)

// WatchKind is the kind of an object whose data changes trigger an invalidation.
// +kubebuilder:validation:Enum=ConfigMap;Secret
type WatchKind string

// Watchable kinds.
const (
	// WatchKindConfigMap watches a core/v1 ConfigMap.
	WatchKindConfigMap WatchKind = "ConfigMap"
	// WatchKindSecret watches a core/v1 Secret.
	WatchKindSecret WatchKind = "Secret"
)

// CachePolicySpec declares how a Redis cache is keyed, expired, invalidated and
// measured. Workloads embedding pkg/cache with the same key prefix follow it
// without a redeploy.
//
// +kubebuilder:validation:XValidation:rule=`!has(self.invalidation) || !has(self.invalidation.prefixes) || self.invalidation.prefixes.all(p, self.prefixes.exists(d, d.name == p))`,message="every entry of spec.invalidation.prefixes must name a prefix declared in spec.prefixes; declare it there or remove it",fieldPath=".invalidation.prefixes"
// +kubebuilder:validation:XValidation:rule=`!has(self.invalidation) || !has(self.invalidation.patterns) || self.invalidation.patterns.all(pat, self.prefixes.exists(d, pat.startsWith(d.name + ':')))`,message="every entry of spec.invalidation.patterns must start with a prefix declared in spec.prefixes followed by ':' (for example 'users:42:*'); patterns are relative to spec.keyPrefix",fieldPath=".invalidation.patterns"
// +kubebuilder:validation:XValidation:rule=`!has(self.invalidation) || !has(self.invalidation.watch) || self.invalidation.watch.all(w, !has(w.prefixes) || w.prefixes.all(p, self.prefixes.exists(d, d.name == p)))`,message="every entry of spec.invalidation.watch[].prefixes must name a prefix declared in spec.prefixes; declare it there or remove it",fieldPath=".invalidation.watch"
type CachePolicySpec struct {
	// redis says how the controller connects to the Redis server (or Redis
	// Cluster) that holds the cache. Workloads use their own connection
	// settings; this one is for publishing the policy, invalidating and
	// reading stats.
	// +required
	Redis RedisSpec `json:"redis"`

	// keyPrefix is the namespace in Redis the policy owns: data keys are
	// <keyPrefix>:<prefix>:<rest>, and the policy never touches keys outside
	// <keyPrefix>:. Control keys live under {cacheplane:<keyPrefix>}. It must
	// match the KeyPrefix the workloads configure in pkg/cache.
	// 1 to 64 characters: letters, digits and . _ - /. Never ':', so key
	// prefixes cannot nest: "a" would otherwise own the keys of "a:b".
	// Immutable: to move a cache to another prefix, create a new CachePolicy.
	// Example: "shop" or "team-a/shop".
	// pkg/cache's Config.KeyPrefix follows the same rules, except that it
	// may also be empty (no prefix), which no policy governs.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[A-Za-z0-9._/-]*$')`,message="keyPrefix may contain only letters, digits and the characters . _ - / (no ':', no whitespace, no glob characters * ? [ ] or backslash, no braces { })"
	// +kubebuilder:validation:XValidation:rule=`!self.contains(':')`,message="keyPrefix must not contain ':'; key prefixes cannot nest (cacheplane adds the ':' between key prefix and key itself, and a key prefix 'a' would own the keys of 'a:b'); use . _ - or / instead, such as 'team-a/shop'"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="keyPrefix is immutable; to use another key prefix, create a new CachePolicy instead (and delete this one)"
	KeyPrefix string `json:"keyPrefix"`

	// defaultTTL is the time to live of entries whose prefix sets no ttl, as a
	// Go duration (for example 90s, 5m, 1h30m). Must be positive.
	// Default: 5m.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="defaultTTL must be a positive duration such as 30s, 5m or 1h30m"
	DefaultTTL metav1.Duration `json:"defaultTTL,omitzero"`

	// prefixes declares the key prefixes of the cache and their TTLs: an entry
	// stored under key <keyPrefix>:<name>:<rest> expires after the ttl of the
	// prefix <name>. 1 to 100 entries with unique names.
	// Example: [{name: users, ttl: 10m}, {name: products}].
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:XValidation:rule="self.all(p, self.exists_one(q, q.name == p.name))",message="spec.prefixes names must be unique; remove or rename the duplicate entry"
	Prefixes []PrefixSpec `json:"prefixes"`

	// invalidation says when to delete cached entries: when the token changes,
	// on a schedule, or when a watched ConfigMap or Secret changes. Each
	// trigger runs one invalidation of the selected prefixes (or patterns).
	// Default: no invalidation.
	// +optional
	Invalidation InvalidationSpec `json:"invalidation,omitzero"`

	// statsInterval is how often the controller reads the hit/miss counters
	// that workloads flush to Redis and writes them into status. At least 1s.
	// Default: 30s. Example: 10s.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) >= duration('1s')`,message="statsInterval must be a duration of at least 1s, such as 10s or 1m"
	StatsInterval metav1.Duration `json:"statsInterval,omitzero"`

	// deletionPolicy says what happens to the cached keys when this
	// CachePolicy is deleted: Retain leaves them in Redis (they expire with
	// their TTL); Purge deletes <keyPrefix>:<prefix>:* for every declared
	// prefix before the object goes away.
	// Default: Retain.
	// +optional
	// +kubebuilder:default=Retain
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// RedisMode is the topology of a policy's Redis.
// +kubebuilder:validation:Enum=Standalone;Cluster;Sentinel
type RedisMode string

// The Redis topologies.
const (
	// RedisModeStandalone is one server (or a proxy in front of several).
	RedisModeStandalone RedisMode = "Standalone"
	// RedisModeCluster is a Redis Cluster: invalidations scan every master.
	RedisModeCluster RedisMode = "Cluster"
	// RedisModeSentinel is a master watched by Redis Sentinel, followed
	// through failovers.
	RedisModeSentinel RedisMode = "Sentinel"
)

// RedisSpec says how to connect to Redis.
// +kubebuilder:validation:XValidation:rule=`!has(self.mode) || self.mode != 'Sentinel' || (has(self.masterName) && size(self.masterName) > 0)`,message="masterName is required in Sentinel mode: name the master the sentinels watch (sentinel monitor <name> ...)"
// +kubebuilder:validation:XValidation:rule=`!has(self.addresses) || size(self.addresses) == 0 || (has(self.mode) && self.mode != 'Standalone')`,message="addresses apply to Cluster and Sentinel mode; in Standalone mode give only url"
// +kubebuilder:validation:XValidation:rule=`!has(self.masterName) || size(self.masterName) == 0 || (has(self.mode) && self.mode == 'Sentinel')`,message="masterName applies only to Sentinel mode; set mode: Sentinel or remove masterName"
type RedisSpec struct {
	// url is the address of Redis: redis://host:port/db, or rediss:// for TLS.
	// In Cluster mode it is one seed node (any node of the cluster); in
	// Sentinel mode it is one sentinel, and its path selects the database. It
	// must not contain a username or password: use username and
	// passwordSecretRef.
	// Example: redis://redis.cache.svc:6379/0.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule=`isURL(self) && url(self).getScheme() in ['redis', 'rediss'] && url(self).getHostname() != ''`,message="url must be a Redis URL with scheme redis or rediss and a host, such as redis://redis.cache.svc:6379/0"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('^[^/?#]*//[^/?#]*@')`,message="url must not contain credentials; put the username in spec.redis.username and the password in a Secret referenced by spec.redis.passwordSecretRef"
	URL string `json:"url"`

	// username is the Redis ACL user to authenticate as. Default: none (the
	// "default" user when a password is given).
	// Example: cacheplane.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Username string `json:"username,omitempty"`

	// passwordSecretRef names a Secret in the policy's namespace holding the
	// Redis password. The password never appears in the spec, status, events
	// or logs. Default: no password.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`

	// mode is the topology: Standalone (one server), Cluster (Redis Cluster;
	// invalidations scan every master) or Sentinel (a master found through
	// sentinels, followed through failovers).
	// Default: Standalone.
	// +optional
	// +kubebuilder:default=Standalone
	Mode RedisMode `json:"mode,omitempty"`

	// addresses are more cluster seed nodes (Cluster mode) or more sentinels
	// (Sentinel mode) besides the one in url, as host:port.
	// Example: [redis-1.cache.svc:6379, redis-2.cache.svc:6379].
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=261
	// +kubebuilder:validation:items:XValidation:rule=`self.matches('^[^\\s/@]+:[0-9]{1,5}$')`,message="each address must be host:port, such as redis-1.cache.svc:6379"
	Addresses []string `json:"addresses,omitempty"`

	// masterName is the name the sentinels know the master by (Sentinel mode
	// only). Example: mymaster.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	MasterName string `json:"masterName,omitempty"`

	// tls configures TLS beyond what a rediss:// url turns on: the CA to
	// trust, a client certificate, the server name to verify.
	// Default: TLS only for rediss:// urls, verified against the system roots.
	// +optional
	TLS *RedisTLSSpec `json:"tls,omitempty"`
}

// RedisTLSSpec configures TLS to Redis.
// +kubebuilder:validation:XValidation:rule=`!(has(self.insecureSkipVerify) && self.insecureSkipVerify && has(self.caSecretRef))`,message="insecureSkipVerify skips the check that caSecretRef is for; set one or the other"
type RedisTLSSpec struct {
	// enabled turns TLS on for a redis:// url too (a rediss:// url always
	// uses TLS). Default: false.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// caSecretRef names a Secret in the policy's namespace whose key ca.crt
	// holds the PEM certificates of the CA that signed the server's
	// certificate. Default: the system's roots.
	// +optional
	CASecretRef *LocalSecretRef `json:"caSecretRef,omitempty"`

	// clientCertSecretRef names a kubernetes.io/tls Secret in the policy's
	// namespace (keys tls.crt and tls.key) to present as client certificate,
	// for servers with tls-auth-clients yes. Default: none.
	// +optional
	ClientCertSecretRef *LocalSecretRef `json:"clientCertSecretRef,omitempty"`

	// serverName is the name to verify the server's certificate against.
	// Default: the host of url.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServerName string `json:"serverName,omitempty"`

	// insecureSkipVerify accepts any server certificate. For tests only: it
	// makes TLS useless against an attacker on the network. Default: false.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// LocalSecretRef names a Secret in the policy's namespace.
type LocalSecretRef struct {
	// name is the name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// SecretKeyRef selects one key of a Secret in the policy's namespace.
type SecretKeyRef struct {
	// name is the name of the Secret. Example: redis-auth.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key is the key within the Secret's data that holds the password.
	// Default: password.
	// +optional
	// +kubebuilder:default=password
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[-._a-zA-Z0-9]+$')`,message="key must be a Secret data key: letters, digits, '-', '_' and '.'"
	Key string `json:"key,omitempty"`
}

// PrefixSpec declares one key prefix of the cache.
type PrefixSpec struct {
	// name is the prefix: entries live at <keyPrefix>:<name>:<rest>. 1 to 63
	// characters: letters, digits, '.', '_' and '-'. Example: users.
	// +required
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="prefix name must not be empty"
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[A-Za-z0-9._-]*$')`,message="prefix name may contain only letters, digits, '.', '_' and '-' (no ':', no whitespace, no glob characters * ? [ ] or backslash)"
	Name string `json:"name"`

	// ttl is the time to live of entries under this prefix, as a positive Go
	// duration. Default: spec.defaultTTL. Example: 10m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="ttl must be a positive duration such as 30s, 10m or 1h; leave it out to use spec.defaultTTL"
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// nearCache says whether pods whose cache has a near-cache (an
	// in-process tier kept correct by Redis's client tracking) keep this
	// prefix's entries in memory: true opts the prefix in, false out. It can
	// only choose among the prefixes a pod tracks (all, unless the pod's
	// configuration narrows them). Default: as each pod's configuration says.
	// +optional
	NearCache *bool `json:"nearCache,omitempty"`
}

// InvalidationSpec says when and what to invalidate.
type InvalidationSpec struct {
	// token triggers an invalidation whenever it changes: set it to any new
	// value (a version, a date, a commit) to delete the selected entries once.
	// The token a policy is created with is adopted without invalidating, and
	// a token is never run twice; "" never invalidates.
	// Example: "2024-05-01-1".
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Token string `json:"token,omitempty"`

	// prefixes selects the declared prefixes that an invalidation deletes
	// (<keyPrefix>:<prefix>:*). Default: every prefix in spec.prefixes.
	// Example: [users].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=63
	Prefixes []string `json:"prefixes,omitempty"`

	// patterns narrows an invalidation to Redis glob patterns instead of whole
	// prefixes. Each is relative to keyPrefix and starts with a declared
	// prefix and ':'; the key prefix is escaped and prepended, so a pattern
	// never reaches keys outside the policy. At most 50.
	// Example: ["users:42:*", "products:sku-1?"].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	Patterns []string `json:"patterns,omitempty"`

	// maxKeysPerSecond caps how many keys an invalidation deletes per second,
	// so a large run does not raise the latency of Redis for the workloads.
	// In Redis Cluster it caps the run as a whole: the masters, purged at
	// once, share it. Default: 0 (unlimited). Example: 50000.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxKeysPerSecond int64 `json:"maxKeysPerSecond,omitempty"`

	// schedule runs an invalidation periodically: a cron expression with 5
	// fields (minute hour day-of-month month day-of-week, in the manager's
	// time zone, UTC by default) or one of @hourly, @daily, @weekly,
	// @monthly, @yearly, @every <duration>. Default: no schedule.
	// Example: "0 3 * * *" (03:00 every day) or "@every 6h".
	// +optional
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule=`self in ['@hourly', '@daily', '@midnight', '@weekly', '@monthly', '@yearly', '@annually'] || self.matches('^@every ([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || self.matches('^[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4}$')`,message="schedule must be a cron expression with 5 fields (minute hour day-of-month month day-of-week, such as '0 3 * * *') or one of @hourly, @daily, @weekly, @monthly, @yearly, '@every <duration>' (such as '@every 6h')"
	Schedule string `json:"schedule,omitempty"`

	// watch runs an invalidation whenever the data of one of these ConfigMaps
	// or Secrets (in the policy's namespace) changes; metadata-only changes
	// do not count. A missing object is reported in the WatchesResolved
	// condition. At most 20.
	// Example: [{kind: ConfigMap, name: catalog-version, prefixes: [products]}].
	// +optional
	// +listType=map
	// +listMapKey=kind
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=20
	Watch []WatchSpec `json:"watch,omitempty"`
}

// WatchSpec names an object whose data changes trigger an invalidation.
type WatchSpec struct {
	// kind of the watched object: ConfigMap or Secret.
	// +required
	Kind WatchKind `json:"kind"`

	// name of the watched object, in the policy's namespace.
	// Example: catalog-version.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// prefixes selects the declared prefixes a change invalidates, at most
	// 20 (leave it empty to select more).
	// Default: spec.invalidation.prefixes, or every declared prefix.
	// Example: [products].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=63
	Prefixes []string `json:"prefixes,omitempty"`
}

// CachePolicyStatus is what the controller observed and did.
type CachePolicyStatus struct {
	// observedGeneration is the metadata.generation of the spec the controller
	// last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, RedisConnected and WatchesResolved, each with a
	// reason and a message saying what is wrong.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// observedToken is the spec.invalidation.token the controller has handled:
	// adopted when the policy was created, or invalidated successfully.
	// A spec token different from it starts a run.
	// +optional
	ObservedToken string `json:"observedToken,omitempty"`

	// lastInvalidation is the latest invalidation run, running or finished.
	// +optional
	LastInvalidation *InvalidationStatus `json:"lastInvalidation,omitempty"`

	// lastScheduleTime is when spec.invalidation.schedule last fired.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`

	// nextScheduleTime is when spec.invalidation.schedule fires next.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`

	// watched records, per watched object, the hash of the data the controller
	// has acted on, so each change runs exactly one invalidation.
	// +optional
	// +listType=map
	// +listMapKey=kind
	// +listMapKey=name
	Watched []WatchedObjectStatus `json:"watched,omitempty"`

	// hits is the number of cache hits all workloads reported, summed over prefixes.
	// +optional
	Hits int64 `json:"hits,omitempty"`

	// misses is the number of cache misses all workloads reported.
	// +optional
	Misses int64 `json:"misses,omitempty"`

	// errors is the number of Redis errors all workloads reported.
	// +optional
	Errors int64 `json:"errors,omitempty"`

	// hitRatio is hits / (hits + misses) as a percentage with one decimal,
	// such as "94.8%" (a string: API conventions avoid floats).
	// +optional
	HitRatio string `json:"hitRatio,omitempty"`

	// lastStatsSync is when the controller last read the counters from Redis.
	// +optional
	LastStatsSync *metav1.Time `json:"lastStatsSync,omitempty"`

	// prefixes holds the published TTL, the generation and the counters of
	// each declared prefix.
	// +optional
	// +listType=map
	// +listMapKey=name
	Prefixes []PrefixStatus `json:"prefixes,omitempty"`
}

// InvalidationStatus describes one invalidation run.
type InvalidationStatus struct {
	// token is the spec.invalidation.token the run was started for (for
	// every trigger: the token in effect then).
	// +optional
	Token string `json:"token,omitempty"`

	// trigger is what started the run: Token, Schedule, ConfigMap/<name> or Secret/<name>.
	// +optional
	Trigger string `json:"trigger,omitempty"`

	// phase of the run: Running, Complete or Failed.
	// +optional
	Phase InvalidationPhase `json:"phase,omitempty"`

	// prefixes the run invalidates (their generations were bumped).
	// +optional
	// +listType=atomic
	Prefixes []string `json:"prefixes,omitempty"`

	// patterns are the full, escaped SCAN MATCH patterns of the run, in the
	// order they are scanned; checkpoint.pattern indexes this list.
	// +optional
	// +listType=atomic
	Patterns []string `json:"patterns,omitempty"`

	// startedAt is when the run started (its first attempt), to the
	// microsecond: runs often take less than a second.
	// +optional
	StartedAt *metav1.MicroTime `json:"startedAt,omitempty"`

	// completedAt is when the run completed, to the microsecond.
	// +optional
	CompletedAt *metav1.MicroTime `json:"completedAt,omitempty"`

	// nextAttemptAt is when a failed run is tried again: the delay doubles
	// with every failed attempt, from 1s up to 5 minutes.
	// +optional
	NextAttemptAt *metav1.MicroTime `json:"nextAttemptAt,omitempty"`

	// keysDeleted counts the keys the run has deleted so far.
	// +optional
	KeysDeleted int64 `json:"keysDeleted,omitempty"`

	// attempts counts the attempts of the run; more than 1 means it was
	// retried or resumed.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// message explains a failure, or summarises the outcome.
	// +optional
	Message string `json:"message,omitempty"`

	// checkpoint is where a Running or Failed run resumes.
	// +optional
	Checkpoint *InvalidationCheckpoint `json:"checkpoint,omitempty"`
}

// InvalidationCheckpoint is the resumable position of a run: every pattern
// before Pattern is finished; for patterns[Pattern], Cursors holds the SCAN
// cursor of each master node.
type InvalidationCheckpoint struct {
	// pattern is the index into lastInvalidation.patterns of the pattern
	// being scanned.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Pattern int32 `json:"pattern"`

	// cursors holds one SCAN cursor per master node for the current pattern.
	// +optional
	// +listType=atomic
	Cursors []ScanCursor `json:"cursors,omitempty"`
}

// ScanCursor is the SCAN position on one node.
type ScanCursor struct {
	// node is the address of the master node, "" for a standalone Redis.
	// +optional
	Node string `json:"node"`

	// cursor is the SCAN cursor to continue from, as a decimal string (it is
	// a uint64, which JSON numbers cannot carry exactly). "0" with done=false
	// means not started.
	// +optional
	Cursor string `json:"cursor,omitempty"`

	// done is true when the node's SCAN for the current pattern finished.
	// +optional
	Done bool `json:"done,omitempty"`

	// serverRunID is the run_id of the Redis process the cursor belongs to.
	// A cursor means nothing to another process (a restarted or failed-over
	// server hashes keys with a new seed), so when it changes the node's scan
	// starts over.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	ServerRunID string `json:"serverRunID,omitempty"`
}

// WatchedObjectStatus is the last seen data of a watched object.
type WatchedObjectStatus struct {
	// kind of the watched object: ConfigMap or Secret.
	// +required
	Kind WatchKind `json:"kind"`

	// name of the watched object.
	// +required
	Name string `json:"name"`

	// dataHash is a hash of the object's data (and binaryData) the controller
	// has acted on; a different hash means the data changed.
	// +optional
	DataHash string `json:"dataHash,omitempty"`
}

// PrefixStatus is the published policy and the counters of one prefix.
type PrefixStatus struct {
	// name of the prefix.
	// +required
	Name string `json:"name"`

	// ttl published for the prefix (its ttl, or spec.defaultTTL).
	// +optional
	TTL metav1.Duration `json:"ttl,omitzero"`

	// generation of the prefix: bumped by every invalidation of it; entries
	// written under an older generation read as misses.
	// +optional
	Generation int64 `json:"generation,omitempty"`

	// hits reported for the prefix.
	// +optional
	Hits int64 `json:"hits,omitempty"`

	// misses reported for the prefix.
	// +optional
	Misses int64 `json:"misses,omitempty"`

	// errors reported for the prefix.
	// +optional
	Errors int64 `json:"errors,omitempty"`

	// hitRatio of the prefix, such as "94.8%".
	// +optional
	HitRatio string `json:"hitRatio,omitempty"`
}

// CachePolicy declares the key prefixes, TTLs, invalidation triggers and
// stats collection of a Redis cache that workloads share through pkg/cache.
// The controller publishes the policy into Redis, runs SCAN-based
// invalidations when a trigger fires, and reports hit ratios in status.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=cachepolicies,singular=cachepolicy,shortName=cachepol,scope=Namespaced,categories=cacheplane
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Hit Ratio",type="string",JSONPath=".status.hitRatio"
// +kubebuilder:printcolumn:name="Hits",type="integer",JSONPath=".status.hits"
// +kubebuilder:printcolumn:name="Last Invalidation",type="string",JSONPath=".status.lastInvalidation.phase"
// +kubebuilder:printcolumn:name="Keys Deleted",type="integer",JSONPath=".status.lastInvalidation.keysDeleted"
// +kubebuilder:printcolumn:name="Key Prefix",type="string",JSONPath=".spec.keyPrefix",priority=1
// +kubebuilder:printcolumn:name="Redis",type="string",JSONPath=".spec.redis.url",priority=1
// +kubebuilder:printcolumn:name="Last Run At",type="date",JSONPath=".status.lastInvalidation.startedAt",priority=1
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
// +kubebuilder:printcolumn:name="Message",type="string",JSONPath=`.status.conditions[?(@.type=="Ready")].message`
type CachePolicy struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired policy.
	// +required
	Spec CachePolicySpec `json:"spec"`

	// status is what the controller observed and did.
	// +optional
	Status CachePolicyStatus `json:"status,omitzero"`
}

// CachePolicyList is a list of CachePolicy objects.
//
// +kubebuilder:object:root=true
type CachePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the policies.
	Items []CachePolicy `json:"items"`
}
