// The nodes a near-cache follows: one tracking connection per node, and how
// the set of nodes follows the topology (one server; every node of a Redis
// Cluster; the master a Sentinel deployment names).

package cache

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
	"github.com/cacheplane/cacheplane/pkg/cache/internal/tracking"
	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// nearNode is one Redis node the near-cache follows with a tracking
// connection of its own. Its fields are guarded by nearCache.mu.
type nearNode struct {
	addr string
	// leaseEnd is the send time of its newest accepted probe plus the
	// lease (Standalone: from when tracking was asked for); 0 while its
	// tracker is down.
	leaseEnd int64
	conn     *tracking.Conn // nil while not established
	// role is what the node last said it is ("master", "slave"; Cluster);
	// view the nodes it last listed (address to role), nil while its
	// tracker is down.
	role string
	view map[string]string
	stop context.CancelFunc
	gone bool // removed from the set: its tracker is stopping
}

// nearFollower is how a near-cache follows one topology.
type nearFollower struct {
	dial       func(ctx context.Context, addr string) (net.Conn, error)
	user, pass string
	// probe is sent on every tracking connection every Lease/4; accept
	// judges its answers (tracking.Handler). nil accept: PING, and every
	// answer renews (Standalone).
	probe  []string
	accept func(nd *nearNode, r tracking.Reply) error
	// topology is the loop that sets the nodes, run by run until ctx ends;
	// it also watches the lease (lapses).
	topology func(ctx context.Context)
	// topoLease: the tier serves only while topology renews n.topoEnd
	// (Sentinel).
	topoLease bool
	multi     bool // nodes are named in messages
}

// run follows the topology with one tracking connection per node until ctx
// ends, serving the tier while every one of them is up and its lease current.
func (n *nearCache) run(ctx context.Context, c *Cache) {
	defer n.closed.Store(true)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	f, err := c.nearFollower(n)
	if err != nil {
		n.disable(c, err)
		return
	}
	prefixes := n.trackPrefixes(c.space)
	n.mu.Lock()
	n.nodes = map[string]*nearNode{}
	n.topoEnd = math.MaxInt64
	if f.topoLease {
		n.topoEnd = 0
	}
	n.follow = func(nd *nearNode) {
		nctx, stop := context.WithCancel(ctx)
		nd.stop = stop
		wg.Go(func() { n.track(nctx, c, nd, f, prefixes, cancel) })
	}
	n.mu.Unlock()
	f.topology(ctx)
}

// watchLease counts and logs the lapses of the lease: called every Lease/4
// by the topology loops.
func (n *nearCache) watchLease(c *Cache, serving *bool) {
	now := n.serving(mono.Now())
	if *serving && !now && n.on.Load() {
		n.lapses.Add(1)
		c.warn("cache: near-cache's tracking silent for longer than its lease; reads go to Redis until it answers", "lease", n.cfg.Lease)
	}
	*serving = now
}

// track keeps a tracking connection to nd open until ctx ends.
func (n *nearCache) track(ctx context.Context, c *Cache, nd *nearNode, f *nearFollower, prefixes []string, stopAll context.CancelFunc) {
	dial := func(ctx context.Context) (net.Conn, error) { return f.dial(ctx, nd.addr) }
	named := func(err error) error {
		if f.multi && err != nil {
			return fmt.Errorf("%s: %w", nd.addr, err)
		}
		return err
	}
	var accept func(tracking.Reply) error
	if f.accept != nil {
		accept = func(r tracking.Reply) error { return f.accept(nd, r) }
	}
	backoff := time.Duration(0)
	lost := false
	for ctx.Err() == nil {
		t, err := tracking.Dial(ctx, dial, f.user, f.pass, prefixes, c.timeout)
		if err != nil {
			if errors.Is(err, tracking.ErrRefused) {
				n.disable(c, named(err))
				stopAll()
				return
			}
			if ctx.Err() != nil {
				return
			}
			n.setLastErr(named(err))
			c.warn("cache: near-cache cannot open its tracking connection; retrying, the tier stays off meanwhile", "node", nd.addr, "err", err)
			backoff = nearBackoff(backoff)
			// Jittered, so that the pods of a service do not all dial a
			// restarted server at once.
			select {
			case <-ctx.Done():
			case <-time.After(backoff/2 + rand.N(backoff/2+1)):
			}
			continue
		}
		backoff = 0
		if lost {
			c.log.Info("cache: near-cache tracking re-established", "node", nd.addr)
		}
		n.lastErr.Store(nil)
		n.established(nd, t, f.accept == nil)
		err = t.Serve(ctx, n.cfg.Lease/4, tracking.Handler{
			Invalidate: func(keys []string) { n.invalidate(c.space, keys) },
			Answered:   func(sent int64) { n.renewNode(nd, sent) },
			Probe:      f.probe,
			Accept:     accept,
		})
		n.lostNode(nd)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, tracking.ErrRefused) {
			// The probe is forbidden (an ACL without CLUSTER NODES or
			// ROLE): it never renews, so the tier could never serve.
			n.disable(c, named(err))
			stopAll()
			return
		}
		lost = true
		n.setLastErr(named(err))
		c.warn("cache: near-cache lost a tracking connection; the tier is flushed and off until it is back", "node", nd.addr, "err", err)
	}
}

// established records nd's new tracking connection. Standalone, its lease
// starts when tracking was asked for: every write acknowledged before then
// is in Redis already, and the tier is empty. Elsewhere it starts with the
// first accepted probe.
func (n *nearCache) established(nd *nearNode, t *tracking.Conn, leaseAtTracked bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd.gone {
		return
	}
	nd.conn = t
	if leaseAtTracked {
		nd.leaseEnd = t.Tracked + int64(n.cfg.Lease)
	}
	n.recompute()
}

// lostNode records the loss of nd's tracking connection: whatever only it
// could have invalidated may be stale now, so the tier is emptied.
func (n *nearCache) lostNode(nd *nearNode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nd.conn, nd.leaseEnd, nd.view = nil, 0, nil
	n.recompute()
	n.flush()
}

// renewNode extends nd's lease after the answer to a command sent at sent.
func (n *nearCache) renewNode(nd *nearNode, sent int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd.gone || nd.conn == nil {
		return
	}
	nd.leaseEnd = max(nd.leaseEnd, sent+int64(n.cfg.Lease))
	n.recompute()
}

// recompute sets on and the lease from the nodes (mu held). The epoch moves
// with on: first, so a read that sees on already holds the new epoch; when
// turning off after, so a read that started before cannot fill. The tier is
// empty whenever it turns on: it is flushed whenever it turns off.
func (n *nearCache) recompute() {
	end := n.topoEnd
	up := len(n.nodes) > 0
	for _, nd := range n.nodes {
		if nd.conn == nil {
			up = false
		}
		end = min(end, nd.leaseEnd)
	}
	if !up {
		end = 0
	}
	if up && !n.on.Load() {
		n.epoch.Add(1)
		n.on.Store(true)
	}
	n.leaseEnd.Store(end)
	if !up && n.on.Load() {
		n.on.Store(false)
		n.flush()
	}
}

// setNodes makes the tier follow exactly the nodes of want (mu held). Any
// change empties the tier: a node new to it may hold writes it never heard
// of, and it serves again only once every node's tracker is up and probed.
func (n *nearCache) setNodes(c *Cache, want map[string]string) {
	if n.disabled.Load() != nil {
		return
	}
	first := len(n.nodes) == 0
	changed := false
	for addr := range want {
		if _, ok := n.nodes[addr]; !ok {
			nd := &nearNode{addr: addr}
			n.nodes[addr] = nd
			n.follow(nd)
			changed = true
		}
	}
	for addr, nd := range n.nodes {
		if _, ok := want[addr]; !ok {
			nd.gone = true
			nd.stop()
			delete(n.nodes, addr)
			changed = true
		}
	}
	if !changed {
		return
	}
	if !first {
		c.log.Info("cache: near-cache follows new nodes; the tier is flushed", "nodes", slices.Sorted(mapKeys(want)))
		n.flush()
	}
	n.recompute()
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// conns are the established tracking connections.
func (n *nearCache) conns() []*tracking.Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*tracking.Conn
	for _, nd := range n.nodes {
		if nd.conn != nil {
			out = append(out, nd.conn)
		}
	}
	return out
}

func (n *nearCache) disable(c *Cache, err error) {
	msg := err.Error()
	if !n.disabled.CompareAndSwap(nil, &msg) {
		return
	}
	n.mu.Lock()
	for _, nd := range n.nodes {
		nd.gone = true
		nd.stop()
	}
	n.nodes = map[string]*nearNode{}
	n.recompute()
	n.mu.Unlock()
	n.flush()
	// Once per Cache, so not through the rate-limited warn.
	c.log.Warn("cache: near-cache disabled; reads go to Redis", "err", err)
}

// nearFollower returns how the near-cache follows the Cache's topology.
func (c *Cache) nearFollower(n *nearCache) (*nearFollower, error) {
	switch c.cfg.Mode {
	case ModeCluster:
		return c.nearCluster(n)
	case ModeSentinel:
		return c.nearSentinel(n)
	}
	dial, user, pass, err := c.nearDialer()
	if err != nil {
		return nil, err
	}
	f := &nearFollower{dial: func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx) }, user: user, pass: pass}
	f.topology = func(ctx context.Context) {
		n.mu.Lock()
		n.setNodes(c, map[string]string{"standalone": ""})
		n.mu.Unlock()
		n.every(ctx, c, nil)
	}
	return f, nil
}

// every watches the lease every Lease/4 until ctx ends, calling fn (if set)
// each time first.
func (n *nearCache) every(ctx context.Context, c *Cache, fn func()) {
	t := time.NewTicker(n.cfg.Lease / 4)
	defer t.Stop()
	serving := false
	for {
		if fn != nil {
			fn()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.watchLease(c, &serving)
	}
}

// Redis Cluster. Every node is followed, replicas too, each with BCAST
// tracking of the cached prefixes, and each probed with CLUSTER NODES: the
// answer says what the node is now and which nodes it knows, and comes after
// the invalidations of every write the node acknowledged before the probe
// was sent. A node's lease is renewed only by such an answer, and an answer
// that names a node not followed yet adds it (emptying the tier, which
// serves again once that node's tracker is up and probed). See
// docs/near-cache.md for why this covers slot migrations and failovers.

func (c *Cache) nearCluster(n *nearCache) (*nearFollower, error) {
	dial, user, pass, err := c.nodeDialer()
	if err != nil {
		return nil, err
	}
	f := &nearFollower{dial: dial, user: user, pass: pass, probe: []string{"CLUSTER", "NODES"}, multi: true}
	f.accept = func(nd *nearNode, r tracking.Reply) error {
		if r.Err != "" {
			return probeError("CLUSTER NODES", r.Err)
		}
		view, self, err := parseClusterNodes(r.Text)
		if err != nil {
			return err
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if nd.gone {
			return errors.New("no longer followed")
		}
		if nd.role != "" && nd.role != self {
			// A failover: followed before and after, so nothing was
			// missed, but the doubt costs only a flush.
			c.log.Info("cache: near-cache saw a node change role; the tier is flushed", "node", nd.addr, "was", nd.role, "now", self)
			n.flush()
		}
		nd.role, nd.view = self, view
		// The nodes any follower knows; a node no follower names any
		// more (forgotten, or failed and replaced) is dropped.
		want := map[string]string{}
		for _, o := range n.nodes {
			for a, role := range o.view {
				want[a] = role
			}
		}
		n.setNodes(c, want)
		return nil
	}
	var lastSeed time.Time
	f.topology = func(ctx context.Context) {
		n.every(ctx, c, func() {
			// Seed the nodes from the pool's client while no follower
			// has a view: at start, and if every tracker is down.
			n.mu.Lock()
			seeded := anyView(n.nodes)
			n.mu.Unlock()
			if seeded || n.disabled.Load() != nil || time.Since(lastSeed) < time.Second {
				return
			}
			cl := c.client.Load()
			if cl == nil {
				return
			}
			lastSeed = time.Now()
			sctx, cancel := c.opCtx(ctx)
			text, err := cl.ClusterNodes(sctx).Result()
			cancel()
			if rerr, ok := err.(redis.Error); ok && tracking.PermanentReply(rerr.Error()) {
				n.disable(c, probeError("CLUSTER NODES", rerr.Error()))
				return
			}
			if err != nil {
				c.warn("cache: near-cache cannot list the cluster's nodes; the tier stays off", "err", err)
				return
			}
			view, _, err := parseClusterNodes(text)
			if err != nil {
				c.warn("cache: near-cache cannot list the cluster's nodes; the tier stays off", "err", err)
				return
			}
			n.mu.Lock()
			if !anyView(n.nodes) {
				n.setNodes(c, view)
			}
			n.mu.Unlock()
		})
	}
	return f, nil
}

// probeError is a probe's error reply: one that says the server will never
// answer it for this client (see tracking.PermanentReply) wraps
// tracking.ErrRefused, and turns the tier off for good.
func probeError(cmd, msg string) error {
	if tracking.PermanentReply(msg) {
		return fmt.Errorf("%w: %s: %s", tracking.ErrRefused, cmd, msg)
	}
	return fmt.Errorf("%s: %s", cmd, msg)
}

func anyView(nodes map[string]*nearNode) bool {
	for _, o := range nodes {
		if o.view != nil {
			return true
		}
	}
	return false
}

// parseClusterNodes reads CLUSTER NODES: the nodes to follow (address to
// role) and the answering node's own role. Followed: every master and
// replica with an address, but a node the cluster has failed (FAIL, not the
// local suspicion PFAIL) unless it is a master that still owns slots (then
// nobody else can take its writes, and the tier must hear them or stay off).
// Replicas are followed because a failover makes one a master: it is then
// already tracked, before it acknowledges its first write.
func parseClusterNodes(text string) (map[string]string, string, error) {
	view := map[string]string{}
	self := ""
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		addr, _, _ = strings.Cut(addr, ",")
		flags := strings.Split(f[2], ",")
		role := ""
		switch {
		case slices.Contains(flags, "master"):
			role = "master"
		case slices.Contains(flags, "slave"):
			role = "slave"
		}
		if slices.Contains(flags, "myself") {
			self = role
		}
		// An IPv6 address comes without brackets ("::1:7000"): the port
		// is what follows the last colon.
		i := strings.LastIndexByte(addr, ':')
		if i < 0 {
			continue
		}
		host, port := strings.Trim(addr[:i], "[]"), addr[i+1:]
		addr = net.JoinHostPort(host, port)
		if host == "" || port == "" || port == "0" || role == "" ||
			slices.Contains(flags, "noaddr") || slices.Contains(flags, "handshake") {
			continue
		}
		if slices.Contains(flags, "fail") && (role != "master" || len(f) <= 8) {
			continue
		}
		view[addr] = role
	}
	if self == "" {
		return nil, "", errors.New("CLUSTER NODES: no line for the node itself")
	}
	return view, self, nil
}

// Sentinel. The tier follows the master the sentinels name: its tracker is
// probed with ROLE and renews only while the node says it is a master, and
// the sentinels are asked every Lease/4 which node is the master: the tier
// serves only while the newest answers, asked within the lease, all name the
// followed node. When they name another (+switch-master), the tier is
// emptied and the tracker dials the new master.

func (c *Cache) nearSentinel(n *nearCache) (*nearFollower, error) {
	if c.external {
		return nil, fmt.Errorf("the near-cache cannot follow the master of %s: set Config.Addrs and Config.MasterName instead", clientTarget(c.cfg.Client))
	}
	dial, user, pass, err := c.nodeDialer()
	if err != nil {
		return nil, err
	}
	var sentinels []*redis.SentinelClient
	addrs := slices.Clone(c.cfg.Addrs)
	if c.cfg.URL != "" {
		// As the pool's client: the URL's host joins the sentinels.
		if o, err := redis.ParseURL(c.cfg.URL); err == nil && !slices.Contains(addrs, o.Addr) {
			addrs = append(addrs, o.Addr)
		}
	}
	for _, a := range addrs {
		o, err := c.nodeOptions(a)
		if err != nil {
			return nil, err
		}
		// Sentinels are reached without the data nodes' credentials, as
		// the pool's failover client reaches them.
		o.Username, o.Password = "", ""
		sentinels = append(sentinels, redis.NewSentinelClient(o))
	}
	f := &nearFollower{dial: dial, user: user, pass: pass, probe: []string{"ROLE"}, topoLease: true, multi: true}
	f.accept = func(nd *nearNode, r tracking.Reply) error {
		if r.Err != "" {
			return probeError("ROLE", r.Err)
		}
		if r.First != "master" {
			return fmt.Errorf("ROLE: the node is not a master (%q %s)", r.First, r.Err)
		}
		return nil
	}
	f.topology = func(ctx context.Context) {
		defer func() {
			for _, s := range sentinels {
				_ = s.Close()
			}
		}()
		n.every(ctx, c, func() {
			sent := mono.Now()
			addr, err := askSentinels(ctx, sentinels, c.cfg.MasterName, min(c.timeout, n.cfg.Lease/2))
			if err != nil {
				c.warn("cache: near-cache cannot confirm the master with the sentinels; reads go to Redis until it can", "err", err)
				return
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			if _, ok := n.nodes[addr]; !ok {
				n.setNodes(c, map[string]string{addr: "master"})
			}
			n.topoEnd = max(n.topoEnd, sent+int64(n.cfg.Lease))
			n.recompute()
		})
	}
	return f, nil
}

// askSentinels asks every sentinel for the master's address at once, and
// returns it if all that answer within timeout agree (at least one).
func askSentinels(ctx context.Context, sentinels []*redis.SentinelClient, name string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs := make([]string, len(sentinels))
	errs := make([]error, len(sentinels))
	var wg sync.WaitGroup
	for i, s := range sentinels {
		wg.Go(func() {
			hp, err := s.GetMasterAddrByName(ctx, name).Result()
			if err == nil && len(hp) == 2 {
				addrs[i] = net.JoinHostPort(hp[0], hp[1])
			}
			errs[i] = err
		})
	}
	wg.Wait()
	addr := ""
	for _, a := range addrs {
		switch {
		case a == "":
		case addr == "":
			addr = a
		case a != addr:
			return "", fmt.Errorf("the sentinels disagree on the master: %s and %s", addr, a)
		}
	}
	if addr == "" {
		return "", fmt.Errorf("no sentinel named the master: %w", errors.Join(errs...))
	}
	return addr, nil
}

// nodeDialer returns how to dial any node of the Cache's deployment, and the
// credentials: like the pool's connections (TLS verified against the host
// dialed, keep-alive, dial timeout).
func (c *Cache) nodeDialer() (dial func(context.Context, string) (net.Conn, error), username, password string, err error) {
	if c.external {
		cc, ok := c.cfg.Client.(*redis.ClusterClient)
		if !ok {
			return nil, "", "", fmt.Errorf("cannot dial the nodes of %s", clientTarget(c.cfg.Client))
		}
		o := cc.Options()
		return func(ctx context.Context, addr string) (net.Conn, error) {
			if o.Dialer != nil {
				return o.Dialer(ctx, "tcp", addr)
			}
			d := &net.Dialer{Timeout: o.DialTimeout}
			if o.TLSConfig != nil {
				return (&tls.Dialer{NetDialer: d, Config: o.TLSConfig}).DialContext(ctx, "tcp", addr)
			}
			return d.DialContext(ctx, "tcp", addr)
		}, o.Username, o.Password, nil
	}
	if _, err := c.nodeOptions("127.0.0.1:6379"); err != nil {
		return nil, "", "", err
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		o, err := c.nodeOptions(addr)
		if err != nil {
			return nil, err
		}
		return o.Dialer(ctx, "tcp", addr)
	}, c.conn.Username, c.conn.Password, nil
}

// nodeOptions are the options of a connection to addr, like the pool's.
func (c *Cache) nodeOptions(addr string) (*redis.Options, error) {
	o := c.conn
	o.Mode, o.Addrs, o.MasterName = ModeStandalone, nil, ""
	scheme := "redis"
	if strings.HasPrefix(c.conn.URL, "rediss://") {
		scheme = "rediss"
	}
	o.URL = scheme + "://" + addr
	return redisconn.ClientOptions(o)
}

// nearDialer returns how to dial the tracking connection of a Standalone
// server, and its credentials: like the pool's connections (address, TLS,
// keep-alive, dial timeout).
func (c *Cache) nearDialer() (dial func(context.Context) (net.Conn, error), username, password string, err error) {
	opts, err := c.standaloneOptions()
	if err != nil {
		return nil, "", "", err
	}
	if c.near != nil && c.near.trackAddr != "" {
		opts.Addr = c.near.trackAddr
	}
	return func(ctx context.Context) (net.Conn, error) {
		if opts.Dialer != nil {
			return opts.Dialer(ctx, opts.Network, opts.Addr)
		}
		return redis.NewDialer(opts)(ctx, opts.Network, opts.Addr)
	}, opts.Username, opts.Password, nil
}
