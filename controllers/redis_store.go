package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
	"github.com/cacheplane/cacheplane/pkg/cache/purge"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// Store is every Redis operation the controller performs for one policy. The
// reconciler speaks only this interface, so it reads as policy, not plumbing.
type Store interface {
	// Ping checks that Redis answers and accepts the credentials.
	Ping(ctx context.Context) error
	// SyncPolicy makes the policy hash hold exactly the given prefixes with
	// their TTLs and near-cache choices (want's generations are ignored), and
	// raises each prefix's generation in the generations hash to at least
	// floor[prefix] (the generations status remembers, in case the hash was
	// lost), atomically, never lowering one the library bumped. It publishes
	// a policy-changed event when the policy changed and returns each
	// prefix's generation.
	SyncPolicy(ctx context.Context, space keyspace.Space, want map[string]keyspace.PrefixPolicy, floor map[string]int64) (map[string]int64, error)
	// BumpGenerations raises the generation of each prefix above its current
	// one, floor[prefix] and the server's clock (keyspace.BumpGenerationsLua)
	// and publishes an invalidated event per prefix, so embedded libraries
	// stop serving entries written before. It returns the new generations.
	BumpGenerations(ctx context.Context, space keyspace.Space, prefixes []string, floor map[string]int64) (map[string]int64, error)
	// Purge deletes the keys matching pattern on every node, resuming from
	// cursors (nil = from the start). progress receives the cursors to resume
	// from and the keys deleted since the last report; an error it returns stops
	// the purge and is returned.
	Purge(ctx context.Context, pattern string, cursors []NodeCursor, opt purge.Options, progress func(cursors []NodeCursor, deleted int64) error) error
	// ReadStats returns the cumulative counters pkg/cache flushed for each prefix.
	ReadStats(ctx context.Context, space keyspace.Space, prefixes []string) (map[string]Counters, error)
	// DeletePolicy removes the policy hash (and, with stats, that is when
	// purging, the prefixes' stats hashes and the generations hash) and
	// publishes a policy-changed event.
	DeletePolicy(ctx context.Context, space keyspace.Space, statsOf []string) error
	// Close releases the connections.
	Close() error
}

// NodeCursor is one node's SCAN position in a purge.
type NodeCursor struct {
	Node   string
	Cursor uint64
	Done   bool
	// RunID is the Redis process the cursor belongs to; a cursor from another
	// process (restart, failover) is discarded.
	RunID string
}

// Counters are a prefix's cumulative hit, miss and error counts.
type Counters struct {
	Hits, Misses, Errors int64
}

// StoreFactory opens a Store for connection options; tests and alternative
// topologies plug in here.
type StoreFactory func(redisconn.Options) (Store, error)

// NewRedisStore is the StoreFactory for every topology redisconn supports:
// a standalone server, a Redis Cluster, or a master behind Sentinel.
func NewRedisStore(o redisconn.Options) (Store, error) {
	c, err := redisconn.NewUniversal(o)
	if err != nil {
		return nil, err
	}
	return &redisStore{c: c}, nil
}

type redisStore struct {
	c redis.UniversalClient
}

func (s *redisStore) Ping(ctx context.Context) error { return s.c.Ping(ctx).Err() }

func (s *redisStore) Close() error { return s.c.Close() }

func (s *redisStore) readPolicy(ctx context.Context, space keyspace.Space) (map[string]keyspace.PrefixPolicy, error) {
	raw, err := s.c.HGetAll(ctx, space.PolicyKey()).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]keyspace.PrefixPolicy, len(raw))
	for prefix, v := range raw {
		p, err := keyspace.ParsePrefixPolicy(v)
		if err != nil {
			continue // rewritten below from the spec; a broken field must not block the policy
		}
		out[prefix] = p
	}
	return out, nil
}

func (s *redisStore) SyncPolicy(ctx context.Context, space keyspace.Space, want map[string]keyspace.PrefixPolicy, floor map[string]int64) (map[string]int64, error) {
	current, err := s.readPolicy(ctx, space)
	if err != nil {
		return nil, err
	}
	set := map[string]any{}
	raise := make(map[string]int64, len(want))
	for prefix, w := range want {
		// Generations live in their own hash, raised by a script below: a
		// read-modify-write here could lower a bump the library made
		// meanwhile.
		w.Generation = 0
		raise[prefix] = floor[prefix]
		if cur, ok := current[prefix]; !ok || !cur.Equal(w) {
			set[prefix] = w.Marshal()
		}
	}
	gens, err := space.RaiseGenerations(ctx, s.c, raise)
	if err != nil {
		return nil, fmt.Errorf("raise generations: %w", err)
	}
	var del []string
	for prefix := range current {
		if _, ok := want[prefix]; !ok {
			del = append(del, prefix)
		}
	}
	if len(set) == 0 && len(del) == 0 {
		return gens, nil
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if len(set) > 0 {
			p.HSet(ctx, space.PolicyKey(), set)
		}
		if len(del) > 0 {
			p.HDel(ctx, space.PolicyKey(), del...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Published once the hash holds the change, so a library that re-reads on
	// the event sees it. (Inside the transaction a Redis Cluster client could
	// route the keyless PUBLISH to another node, ahead of the write.)
	return gens, s.c.Publish(ctx, space.EventsChannel(), keyspace.Event{Type: keyspace.EventPolicyChanged}.Marshal()).Err()
}

func (s *redisStore) BumpGenerations(ctx context.Context, space keyspace.Space, prefixes []string, floor map[string]int64) (map[string]int64, error) {
	gens, err := space.BumpGenerations(ctx, s.c, prefixes, floor)
	if err != nil {
		return nil, fmt.Errorf("bump generations of prefixes %v: %w", prefixes, err)
	}
	return gens, nil
}

func (s *redisStore) Purge(ctx context.Context, pattern string, cursors []NodeCursor, opt purge.Options, progress func([]NodeCursor, int64) error) error {
	// Every master of a cluster (or the one server, node "") purges from its
	// own cursor, all at once, under one rate limit for the whole purge
	// (purge.Each). Masters unknown to the checkpoint (the cluster changed)
	// start afresh.
	var (
		mu    sync.Mutex // start runs on every master's goroutine at once
		state = map[string]NodeCursor{}
	)
	for _, c := range cursors {
		state[c.Node] = c
	}
	if _, cluster := s.c.(*redis.ClusterClient); !cluster && len(cursors) > 0 {
		state = map[string]NodeCursor{"": cursors[0]}
	}
	snapshot := func() []NodeCursor {
		out := make([]NodeCursor, 0, len(state))
		for _, c := range state {
			out = append(out, c)
		}
		slices.SortFunc(out, func(a, b NodeCursor) int { return strings.Compare(a.Node, b.Node) })
		return out
	}
	start := func(ctx context.Context, node string, c redis.Cmdable) (uint64, bool, error) {
		mu.Lock()
		saved := state[node]
		mu.Unlock()
		from, err := sameProcess(ctx, c, saved)
		if err != nil {
			return 0, false, err
		}
		from.Node = node
		mu.Lock()
		state[node] = from
		mu.Unlock()
		return from.Cursor, from.Done, nil
	}
	_, err := purge.Each(ctx, s.c, pattern, start, opt, func(pos purge.Position, delta int64) error {
		// Each serializes these calls and hands one master's positions in
		// order, so the checkpoint only moves forward.
		mu.Lock()
		defer mu.Unlock()
		cur := state[pos.Node]
		cur.Node, cur.Cursor, cur.Done = pos.Node, pos.Cursor, pos.Done
		state[pos.Node] = cur
		return progress(snapshot(), delta)
	})
	// A master's failure outranks a spent time slice (purge.Each).
	return err
}

// sameProcess returns the cursor to continue from on the node's current
// process: the saved one if it was taken on this process, else the start. A
// SCAN cursor is a position in one process's hash table; a restarted or
// promoted server seeds its hash differently, so an old cursor would skip keys.
func sameProcess(ctx context.Context, c redis.Cmdable, saved NodeCursor) (NodeCursor, error) {
	info, err := c.Info(ctx, "server").Result()
	if isNoPerm(err) {
		// An ACL user without +info: the process cannot be told apart, so
		// the saved cursor is trusted (a restart during a run may then leave
		// keys behind, which the generation bump already hides).
		return saved, nil
	}
	if err != nil {
		return saved, err
	}
	runID := ""
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			runID = v
		}
	}
	if saved.RunID != runID {
		return NodeCursor{Node: saved.Node, RunID: runID}, nil
	}
	return saved, nil
}

func (s *redisStore) ReadStats(ctx context.Context, space keyspace.Space, prefixes []string) (map[string]Counters, error) {
	cmds := make([]*redis.SliceCmd, len(prefixes))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, prefix := range prefixes {
			cmds[i] = p.HMGet(ctx, space.StatsKey(prefix), keyspace.FieldHits, keyspace.FieldMisses, keyspace.FieldErrors)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]Counters, len(prefixes))
	for i, prefix := range prefixes {
		var v [3]int64
		for j, f := range cmds[i].Val() {
			if str, ok := f.(string); ok {
				_, _ = fmt.Sscan(str, &v[j]) // a damaged counter reads as 0
			}
		}
		out[prefix] = Counters{Hits: v[0], Misses: v[1], Errors: v[2]}
	}
	return out, nil
}

func (s *redisStore) DeletePolicy(ctx context.Context, space keyspace.Space, statsOf []string) error {
	keys := []string{space.PolicyKey()}
	if len(statsOf) > 0 {
		// Purging: the data is gone, so are its generations. (Retain keeps
		// them: running libraries still judge the retained entries by them.)
		keys = append(keys, space.GenKey())
	}
	for _, prefix := range statsOf {
		keys = append(keys, space.StatsKey(prefix))
	}
	if err := s.c.Del(ctx, keys...).Err(); err != nil { // one hash tag: one slot
		return err
	}
	return s.c.Publish(ctx, space.EventsChannel(), keyspace.Event{Type: keyspace.EventPolicyChanged}.Marshal()).Err()
}

// isAuthError tells credentials problems from an unreachable server, so the
// condition says which one to fix.
func isAuthError(err error) bool {
	if err == nil {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		return strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "NOPERM")
	}
	return false
}

func isNoPerm(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOPERM")
}

// isTLSError tells a failed TLS handshake (wrong CA, name or client
// certificate) from an unreachable server.
func isTLSError(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var alert tls.AlertError
	var record tls.RecordHeaderError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &alert) || errors.As(err, &record)
}
