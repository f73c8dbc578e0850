package consistency_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// Fault kinds.
const (
	// faultKillTracking kills the near-caches' tracking connections (CLIENT
	// KILL ID of every client named cacheplane-near).
	faultKillTracking = "kill-tracking"
	// faultKillPool kills the pooled connections of every process (every
	// normal client but the trackers and the injector's own).
	faultKillPool = "kill-pool"
	// faultKillAll kills every client but the injector's: pools, trackers
	// and policy subscriptions.
	faultKillAll = "kill-all"
	// faultStall stalls one process's network (its proxy holds every byte
	// both ways) for the fault's duration: a server that hangs, not one
	// that refuses.
	faultStall = "stall"
	// faultRestartLost kills redis-server (SIGKILL, nothing saved) and
	// starts it again on the same port, empty.
	faultRestartLost = "restart-lost"
	// faultRestartKept stops redis-server with SHUTDOWN SAVE and starts it
	// again from that snapshot: every write acknowledged before the
	// shutdown is kept.
	faultRestartKept = "restart-kept"
)

var allFaults = []string{faultKillTracking, faultKillPool, faultKillAll, faultStall, faultRestartLost, faultRestartKept}

// faultSpec schedules a fault once the run has recorded AtOps operations,
// so that a seed replays the same faults at the same points of the sequence
// however fast the machine is.
type faultSpec struct {
	Kind  string
	AtOps int64
	Dur   time.Duration // stall length
	Proc  int           // stalled process; -1: drawn from the seed
}

// injector injects faults into one run's cache server and proxies.
type injector struct {
	srv     *redistest.Server
	admin   *redis.Client
	proxies []*redistest.Proxy
	rec     *recorder
	rng     *rand.Rand
}

const adminName = "consistency-admin"

func newInjector(srv *redistest.Server, proxies []*redistest.Proxy, rec *recorder, rng *rand.Rand) *injector {
	return &injector{
		srv:     srv,
		admin:   redis.NewClient(&redis.Options{Addr: srv.Addr(), ClientName: adminName}),
		proxies: proxies,
		rec:     rec,
		rng:     rng,
	}
}

func (in *injector) close() { in.admin.Close() }

// inject runs f now and records it in the history.
func (in *injector) inject(ctx context.Context, f faultSpec) error {
	e := Event{Proc: -1, Op: opFault, Fault: f.Kind, Start: mono()}
	var err error
	switch f.Kind {
	case faultKillTracking:
		err = in.kill(ctx, func(c clientInfo) bool { return c.name == "cacheplane-near" })
	case faultKillPool:
		err = in.kill(ctx, func(c clientInfo) bool { return c.name != "cacheplane-near" && !strings.Contains(c.flags, "P") })
	case faultKillAll:
		err = in.kill(ctx, func(clientInfo) bool { return true })
	case faultStall:
		p := f.Proc
		if p < 0 {
			p = in.rng.IntN(len(in.proxies))
		}
		e.Proc = p
		in.proxies[p].Stall()
		select {
		case <-time.After(f.Dur):
		case <-ctx.Done():
		}
		in.proxies[p].Resume()
	case faultRestartLost:
		in.srv.Stop()
		err = in.srv.Start()
	case faultRestartKept:
		err = in.restartKept(ctx)
	default:
		err = fmt.Errorf("unknown fault %q", f.Kind)
	}
	e.End = mono()
	e.Err = errString(err)
	in.rec.add(e)
	return err
}

type clientInfo struct {
	id    string
	name  string
	flags string
}

// kill kills the clients that match, never the injector's own.
func (in *injector) kill(ctx context.Context, match func(clientInfo) bool) error {
	list, err := in.admin.ClientList(ctx).Result()
	if err != nil {
		return err
	}
	pipe := in.admin.Pipeline()
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		var c clientInfo
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				c.id = v
			case "name":
				c.name = v
			case "flags":
				c.flags = v
			}
		}
		if c.id == "" || c.name == adminName || !match(c) {
			continue
		}
		id, _ := strconv.ParseInt(c.id, 10, 64)
		pipe.ClientKillByFilter(ctx, "ID", strconv.FormatInt(id, 10))
	}
	_, err = pipe.Exec(ctx)
	if errors.Is(err, redis.Nil) || (err != nil && strings.Contains(err.Error(), "No such client")) {
		err = nil // gone on its own meanwhile
	}
	return err
}

// restartKept shuts the server down with a snapshot, restarts it from the
// snapshot, and removes the snapshot so that a later restart-lost starts
// empty rather than from this old state.
func (in *injector) restartKept(ctx context.Context) error {
	dirs, err := in.admin.ConfigGet(ctx, "dir").Result()
	if err != nil {
		return err
	}
	dir := dirs["dir"]
	// Its own client: SHUTDOWN never answers (the connection just closes),
	// and a retry would find the server gone.
	sc := redis.NewClient(&redis.Options{Addr: in.srv.Addr(), MaxRetries: -1})
	err = sc.ShutdownSave(ctx).Err()
	sc.Close()
	if err != nil && !isConnClosed(err) {
		return fmt.Errorf("SHUTDOWN SAVE: %w", err)
	}
	in.srv.Stop() // waits for the exit; the snapshot is complete once the connection closed
	if err := in.srv.Start(); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, "dump.rdb")); err != nil {
		return fmt.Errorf("snapshot not where expected (was it taken?): %w", err)
	}
	return nil
}

func isConnClosed(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "closed")
}

// runSchedule injects the faults of specs in order, each once the run has
// recorded its AtOps operations, until ctx ends.
func (in *injector) runSchedule(ctx context.Context, specs []faultSpec) error {
	var errs []error
	for _, f := range specs {
		for in.rec.ops.Load() < f.AtOps {
			select {
			case <-ctx.Done():
				return errors.Join(errs...)
			case <-time.After(2 * time.Millisecond):
			}
		}
		if err := in.inject(ctx, f); err != nil {
			errs = append(errs, fmt.Errorf("fault %s: %w", f.Kind, err))
		}
	}
	return errors.Join(errs...)
}

// runRandom injects a fault of a kind drawn from kinds every 0.3 to 2
// seconds until ctx ends (the soak).
func (in *injector) runRandom(ctx context.Context, kinds []string, stall time.Duration) error {
	var errs []error
	for {
		wait := 300*time.Millisecond + time.Duration(in.rng.Int64N(int64(1700*time.Millisecond)))
		kind := kinds[in.rng.IntN(len(kinds))]
		dur := time.Duration(in.rng.Int64N(int64(stall))) + stall/4
		select {
		case <-ctx.Done():
			return errors.Join(errs...)
		case <-time.After(wait):
		}
		if err := in.inject(ctx, faultSpec{Kind: kind, Dur: dur, Proc: -1}); err != nil {
			errs = append(errs, fmt.Errorf("fault %s: %w", kind, err))
		}
	}
}
