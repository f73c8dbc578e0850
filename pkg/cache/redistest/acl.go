package redistest

import (
	"context"
	"fmt"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// ACLUser is a Redis ACL user: a name, a password and ACL SETUSER rules.
type ACLUser struct {
	Name     string
	Password string
	// Rules follow "on >password" in ACL SETUSER: key patterns (~),
	// channel patterns (&) and commands (+, -).
	Rules []string
}

// CacheCommands are the commands a cacheplane tenant needs: everything
// pkg/cache and the controller send for one key prefix, on a standalone
// server, a Redis Cluster or a Sentinel master, and nothing else. Found by
// running both against a user with -@all plus this list and reading ACL LOG.
// The tests keep it honest: pkg/cache's ACL subtests (standalone, cluster,
// sentinel) fail on any refusal the library meets, and TestCacheUser here
// makes the controller's calls as such a user.
//
//	ping                     Connect, the events subscription's keep-alive, the controller's health check
//	select                   only with a database other than 0 in the URL (the key patterns hold in
//	                         every database)
//	cluster|slots command    Cluster mode: the client learns the slot map, and (COMMAND) which
//	                         arguments are keys; without COMMAND it asks again before every call
//	get set unlink exists    pkg/cache data operations (write-backs, Delete, Exists and TTL run the
//	pttl                     scripts of keyspace/fence.go, which call GET SET PTTL DEL; the plain
//	                         commands are their fallback without EVAL; reclaims UNLINK)
//	scan                     pkg/cache Invalidate and the controller's purge (SCAN is keyless: it lists
//	                         key names outside the user's patterns too, but cannot read or delete them)
//	hgetall                  the policy hash (both)
//	hincrby                  pkg/cache stats flush (inside its script)
//	subscribe                pkg/cache follows the events channel (go-redis closes the connection
//	                         rather than unsubscribe)
//	hset hdel hmget del      the controller writes the policy and reads and deletes stats hashes
//	publish                  the controller announces policy changes and invalidations
//	eval evalsha             both run the scripts of keyspace/gen.go: generations (bump, ensure,
//	                         raise) and pkg/cache's at-most-once stats flush, and pkg/cache those
//	                         of keyspace/fence.go (write-back, tombstones) (the commands the
//	                         scripts call, HGET HSET HGETALL HINCRBY GET SET PUBLISH, are checked
//	                         against the user's rights too)
//	hget time                called by those scripts
//	multi exec               the controller's transactional policy update
//	getrange                 pkg/cache's reclaims and Invalidate keep tombstones and current entries
//	                         (keyspace.UnlinkStaleLua reads each value's header)
//	info                     the controller reads run_id (INFO server) to know whether a saved SCAN
//	                         cursor belongs to the running process; without it a cursor is trusted
//
// pkg/cache's optional near-cache (Config.NearCache) also needs
// "+client|tracking" for its tracking connection; add it to the Rules of a
// CacheUser when testing that. (Redis checks only the command, not the
// tracked prefixes, against the user's rights.)
//
// HELLO and AUTH need no permission: Redis lets every user authenticate.
// go-redis also sends CLIENT SETINFO on each new connection and ignores its
// failure; Redis 7.0 (the tests' server) does not know the command, so it is
// not listed (ACL rules naming unknown commands are refused); on Redis 7.2
// and later add "+client|setinfo" to keep the refusals out of ACL LOG.
var CacheCommands = []string{
	"ping", "select", "cluster|slots", "command",
	"get", "set", "unlink", "exists", "pttl", "scan",
	"hgetall", "hincrby", "subscribe",
	"hset", "hdel", "hget", "hmget", "del", "publish",
	"eval", "evalsha", "time", "multi", "exec", "info", "getrange",
}

// CacheUser returns a user limited to one key prefix: its data keys
// ("<keyPrefix>:*"), its control keys ("{cacheplane:<keyPrefix>}:*"), its
// events channel, and CacheCommands. Glob characters in keyPrefix are escaped,
// as in the patterns the library and the controller build.
func CacheUser(name, password, keyPrefix string) ACLUser {
	space := keyspace.New(keyPrefix)
	rules := []string{
		"resetkeys",
		"~" + keyspace.EscapeGlob(keyPrefix) + keyspace.Separator + "*",
		"~" + keyspace.EscapeGlob(controlTag(keyPrefix)) + keyspace.Separator + "*",
		"resetchannels",
		"&" + keyspace.EscapeGlob(space.EventsChannel()),
		"-@all",
	}
	for _, c := range CacheCommands {
		rules = append(rules, "+"+c)
	}
	return ACLUser{Name: name, Password: password, Rules: rules}
}

// controlTag is the hash tag of keyPrefix's control keys; keyspace keeps it
// unexported, so it is recovered from the policy key.
func controlTag(keyPrefix string) string {
	k := keyspace.New(keyPrefix).PolicyKey()
	return k[:len(k)-len(":policy")]
}

// setUserArgs are the ACL SETUSER arguments after the name: the user is reset
// first, so the result does not depend on what existed before.
func (u ACLUser) setUserArgs() []string {
	return append([]string{"reset", "on", ">" + u.Password}, u.Rules...)
}

// Args returns redis-server arguments that create the user at start, so it
// survives Stop and Start: pass them to Start or StartTLS. The password is
// visible in the process list, which is fine for a test.
func (u ACLUser) Args() []string {
	return append([]string{"--user", u.Name}, u.setUserArgs()...)
}

// SetUser creates or replaces an ACL user on the running server (a password
// rotation, say). A restart forgets it, unlike a user given with Args.
func (s *Server) SetUser(u ACLUser) error {
	c := s.Client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args := []any{"ACL", "SETUSER", u.Name}
	for _, a := range u.setUserArgs() {
		args = append(args, a)
	}
	if err := c.Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("ACL SETUSER %s on %s: %w", u.Name, s.Addr(), err)
	}
	return nil
}

// SetUser creates or replaces the user on every master.
func (c *Cluster) SetUser(u ACLUser) error {
	for _, s := range c.Nodes {
		if err := s.SetUser(u); err != nil {
			return err
		}
	}
	return nil
}

// SetUser creates or replaces the user on every data node, so it survives a
// failover. (Sentinels keep their default user.)
func (d *Sentinel) SetUser(u ACLUser) error {
	for _, s := range d.Data {
		if err := s.SetUser(u); err != nil {
			return err
		}
	}
	return nil
}

// ACLLog returns the server's ACL LOG: the commands, keys and channels it
// refused, newest first, each entry as field -> value.
func (s *Server) ACLLog() ([]map[string]any, error) {
	c := s.Client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := c.Do(ctx, "ACL", "LOG").Slice()
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, e := range raw {
		m := map[string]any{}
		switch e := e.(type) {
		case map[any]any: // RESP3
			for k, v := range e {
				m[fmt.Sprint(k)] = v
			}
		case []any: // RESP2: alternating fields and values
			for i := 0; i+1 < len(e); i += 2 {
				m[fmt.Sprint(e[i])] = e[i+1]
			}
		}
		out = append(out, m)
	}
	return out, nil
}
