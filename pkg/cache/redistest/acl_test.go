package redistest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

func TestCacheUser(t *testing.T) {
	u := redistest.CacheUser("app", "s3cret", "my*app")
	s, err := redistest.Start(u.Args()...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	app := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: u.Name, Password: u.Password})
	defer app.Close()

	// Inside the prefix (and its control keys): allowed.
	for _, key := range []string{"my*app:user:1", "{cacheplane:my*app}:stats:user"} {
		if err := app.Set(ctx, key, "v", 0).Err(); err != nil {
			t.Errorf("SET %q: %v", key, err)
		}
	}
	// The prefix's glob character is escaped: "my*app" does not cover "myXapp".
	for _, key := range []string{"myXapp:user:1", "other:1", "{cacheplane:other}:policy"} {
		if err := app.Set(ctx, key, "v", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("SET %q outside the user's keys: err = %v, want NOPERM", key, err)
		}
	}
	if err := app.Do(ctx, "FLUSHALL").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Errorf("FLUSHALL: err = %v, want NOPERM", err)
	}
	if err := app.Publish(ctx, "{cacheplane:other}:events", "x").Err(); err == nil {
		t.Error("PUBLISH to another tenant's channel was allowed")
	}
	log, err := s.ACLLog()
	if err != nil {
		t.Fatal(err)
	}
	if len(log) < 4 {
		t.Fatalf("ACL LOG holds %d entries after 5 refusals: %v", len(log), log)
	}
	if len(log) == 0 {
		t.Fatal("ACL LOG is empty after refused commands")
	}
	if u := log[0]["username"]; u != "app" {
		t.Errorf("newest ACL LOG entry is from %v, want app: %v", u, log[0])
	}

	controllerCalls(t, app, "my*app")

	// The user survives a restart, since it is given on the command line.
	s.Stop()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := app.Set(ctx, "my*app:user:2", "v", 0).Err(); err != nil {
		t.Errorf("after restart: %v", err)
	}

	// SetUser replaces the user at run time: the old password stops working.
	rotated := u
	rotated.Password = "n3w"
	if err := s.SetUser(rotated); err != nil {
		t.Fatal(err)
	}
	stale := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: u.Name, Password: u.Password})
	defer stale.Close()
	if err := stale.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("old password after rotation: err = %v, want WRONGPASS", err)
	}
	fresh := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: rotated.Name, Password: rotated.Password})
	defer fresh.Close()
	if err := fresh.Ping(ctx).Err(); err != nil {
		t.Errorf("new password after rotation: %v", err)
	}
}

// controllerCalls makes, as a CacheUser, the calls the controller makes for
// its key prefix (the shapes of controllers/redis_store.go), and fails on
// any refusal: CacheCommands must cover the controller as well as pkg/cache.
func controllerCalls(t *testing.T, c *redis.Client, keyPrefix string) {
	t.Helper()
	ctx := context.Background()
	tag := "{cacheplane:" + keyPrefix + "}"
	policy, events := tag+":policy", tag+":events"
	check := func(what string, err error) {
		t.Helper()
		if err != nil && err != redis.Nil {
			t.Errorf("%s as a CacheUser: %v", what, err)
		}
	}
	check("PING", c.Ping(ctx).Err())
	check("HGETALL", c.HGetAll(ctx, policy).Err())
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, policy, "user", `{"ttlMillis":1000,"generation":0}`)
		p.HDel(ctx, policy, "gone")
		return nil
	})
	check("MULTI HSET HDEL EXEC", err)
	check("PUBLISH", c.Publish(ctx, events, `{"type":"policyChanged"}`).Err())
	script := redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], cur or '')
redis.call('PUBLISH', ARGV[2], 'bumped')
return 1`)
	check("EVALSHA/EVAL (HGET HSET PUBLISH)", script.Run(ctx, c, []string{policy}, "user", events).Err())
	check("HMGET", c.HMGet(ctx, tag+":stats:order", "hits", "misses", "errors").Err())
	check("SCAN", c.Scan(ctx, 0, tag+":stats:*", 100).Err())
	check("UNLINK", c.Unlink(ctx, keyPrefix+":user:1").Err())
	check("DEL", c.Del(ctx, policy, tag+":stats:user").Err())
}
