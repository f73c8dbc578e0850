package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/cacheplane/cacheplane/pkg/cache"
)

// The batch section: a read of 100 cached keys, by pkg/cache's GetMany, by
// 100 of its Gets, by rueidis (DoMulti of 100 GETs, and its MGet helper) and
// by a raw go-redis MGET; and the cost and gain of compression on a 10 KiB
// JSON value. Every contender decodes the 100 JSON values into a
// map[string]user, as GetMany returns them.

const batchKeys = 100

var batchNames = []string{"pkg/cache GetMany", "pkg/cache 100 Gets", "rueidis DoMulti", "rueidis MGet", "go-redis MGET"}

// batchResult is what the batch section measured.
type batchResult struct {
	times     map[int]map[string]measurement // callers -> contender
	zTimes    map[string]measurement         // "off"/"on" -> hit at 1 caller
	zLen      map[string]int64               // "off"/"on" -> STRLEN of the entry
	zMem      map[string]int64               // "off"/"on" -> MEMORY USAGE of the key
	zValueLen int                            // bytes of the JSON value
}

// record is a row of the compression benchmark's value: an order line, with
// the repetition (field names, a few products and states) of real JSON.
type record struct {
	ID       int      `json:"id"`
	SKU      string   `json:"sku"`
	Product  string   `json:"product"`
	Quantity int      `json:"quantity"`
	Price    float64  `json:"price"`
	Status   string   `json:"status"`
	Tags     []string `json:"tags"`
	Created  string   `json:"created"`
}

// tenKiBRecords is a list of records whose JSON is just over 10 KiB.
func tenKiBRecords() []record {
	products := []string{"Espresso beans 1kg", "Ceramic mug", "Pour-over kettle", "Paper filters (100)", "Hand grinder"}
	statuses := []string{"pending", "paid", "shipped", "delivered"}
	var rs []record
	start := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	for i := 0; ; i++ {
		rs = append(rs, record{
			ID: 100_000 + i, SKU: fmt.Sprintf("SKU-%05d", 1000+i*37%9000), Product: products[i%len(products)],
			Quantity: 1 + i%4, Price: float64(499+i*113%4000) / 100, Status: statuses[i*7%len(statuses)],
			Tags: []string{"web", []string{"eu", "us", "apac"}[i%3]}, Created: start.Add(time.Duration(i) * 97 * time.Minute).Format(time.RFC3339),
		})
		if b, _ := json.Marshal(rs); len(b) >= 10<<10 {
			return rs
		}
	}
}

func (r *report) runBatch(ctx context.Context) error {
	s, err := startServer()
	if err != nil {
		return err
	}
	defer s.close()
	if r.redisVersion == "" {
		r.redisVersion = serverVersion(ctx, s)
	}
	res := &batchResult{times: map[int]map[string]measurement{}}
	ops, closeAll, err := batchOps(ctx, s)
	if err != nil {
		return err
	}
	defer closeAll()
	for _, n := range callerCounts {
		progress("batch of %d keys at %d callers", batchKeys, n)
		m, err := r.measure(n, batchNames, ops)
		if err != nil {
			return err
		}
		res.times[n] = m
	}
	progress("compression of a 10 KiB JSON value")
	if err := r.measureCompression(ctx, s, res); err != nil {
		return err
	}
	r.batch = res
	r.rows = append(r.rows, res.rows()...)
	return nil
}

// batchOps seeds 100 keys per contender and returns their reads of all 100.
func batchOps(ctx context.Context, s *server) (map[string]op, func(), error) {
	pkg, err := connect(ctx, cache.Config{URL: s.url(), KeyPrefix: "batch"})
	if err != nil {
		return nil, nil, err
	}
	raw := redis.NewClient(&redis.Options{
		Addr: s.addr(), PoolSize: cache.DefaultMaxConnections,
		DialTimeout: cache.DefaultSocketTimeout, ReadTimeout: cache.DefaultSocketTimeout,
		WriteTimeout: cache.DefaultSocketTimeout, PoolTimeout: cache.DefaultSocketTimeout,
	})
	rue, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.addr()}})
	if err != nil {
		pkg.Close()
		raw.Close()
		return nil, nil, fmt.Errorf("rueidis: %w", err)
	}
	closeAll := func() { pkg.Close(); raw.Close(); rue.Close() }

	keys := make([]string, batchKeys)    // pkg/cache's keys
	rawKeys := make([]string, batchKeys) // the others', under their own prefix
	items := map[string]any{}
	pairs := make([]any, 0, 2*batchKeys)
	for i := range keys {
		keys[i] = "item:" + strconv.Itoa(i)
		rawKeys[i] = "raw:" + keys[i]
		v := value
		v.ID = i
		items[keys[i]] = v
		b, _ := json.Marshal(v)
		pairs = append(pairs, rawKeys[i], b)
	}
	if err := errors.Join(pkg.SetMany(ctx, items, ttl), raw.MSet(ctx, pairs...).Err()); err != nil {
		closeAll()
		return nil, nil, err
	}

	got := func(m map[string]user) error {
		if len(m) != batchKeys {
			return fmt.Errorf("read %d of %d values", len(m), batchKeys)
		}
		return nil
	}
	decodeInto := func(m map[string]user, key string, b []byte) error {
		var v user
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		m[key] = v
		return nil
	}
	getMany := func(c *cache.Cache) op {
		return func(ctx context.Context) error {
			m, err := cache.GetMany[user](ctx, c, keys)
			if err != nil {
				return err
			}
			return got(m)
		}
	}
	ops := map[string]op{
		"pkg/cache GetMany": getMany(pkg),
		"pkg/cache 100 Gets": func(ctx context.Context) error {
			m := make(map[string]user, len(keys))
			for _, k := range keys {
				var v user
				found, err := pkg.Get(ctx, k, &v)
				if err != nil {
					return err
				}
				if found {
					m[k] = v
				}
			}
			return got(m)
		},
		"rueidis DoMulti": func(ctx context.Context) error {
			cmds := make(rueidis.Commands, len(rawKeys))
			for i, k := range rawKeys {
				cmds[i] = rue.B().Get().Key(k).Build()
			}
			m := make(map[string]user, len(rawKeys))
			for i, resp := range rue.DoMulti(ctx, cmds...) {
				b, err := resp.AsBytes()
				if err != nil {
					return err
				}
				if err := decodeInto(m, rawKeys[i], b); err != nil {
					return err
				}
			}
			return got(m)
		},
		"rueidis MGet": func(ctx context.Context) error {
			msgs, err := rueidis.MGet(rue, ctx, rawKeys)
			if err != nil {
				return err
			}
			m := make(map[string]user, len(msgs))
			for k, msg := range msgs {
				b, err := msg.AsBytes()
				if err != nil {
					return err
				}
				if err := decodeInto(m, k, b); err != nil {
					return err
				}
			}
			return got(m)
		},
		"go-redis MGET": func(ctx context.Context) error {
			vals, err := raw.MGet(ctx, rawKeys...).Result()
			if err != nil {
				return err
			}
			m := make(map[string]user, len(vals))
			for i, v := range vals {
				s, ok := v.(string)
				if !ok {
					return errMissed
				}
				if err := decodeInto(m, rawKeys[i], []byte(s)); err != nil {
					return err
				}
			}
			return got(m)
		},
	}
	return ops, closeAll, nil
}

// measureCompression stores tenKiBRecords with CompressAbove off and on and
// measures the bytes Redis holds and a hit (Get, decoded) at 1 caller.
func (r *report) measureCompression(ctx context.Context, s *server, res *batchResult) error {
	v := tenKiBRecords()
	b, _ := json.Marshal(v)
	res.zValueLen = len(b)
	caches := map[string]*cache.Cache{}
	defer func() {
		for _, c := range caches {
			c.Close()
		}
	}()
	rc := newRawClient(s)
	defer rc.Close()
	res.zLen, res.zMem = map[string]int64{}, map[string]int64{}
	ops := map[string]op{}
	for _, mode := range []struct {
		name  string
		above int
	}{{"off", 0}, {"on", 1024}} {
		kp := "z" + mode.name
		c, err := connect(ctx, cache.Config{URL: s.url(), KeyPrefix: kp, CompressAbove: mode.above})
		if err != nil {
			return err
		}
		caches[mode.name] = c
		if err := c.Set(ctx, "orders", v, ttl); err != nil {
			return err
		}
		if res.zLen[mode.name], err = rc.StrLen(ctx, kp+":orders").Result(); err != nil {
			return err
		}
		if res.zMem[mode.name], err = rc.MemoryUsage(ctx, kp+":orders").Result(); err != nil {
			return err
		}
		ops[mode.name] = func(ctx context.Context) error {
			var got []record
			found, err := c.Get(ctx, "orders", &got)
			if err == nil && (!found || len(got) != len(v)) {
				err = errMissed
			}
			return err
		}
	}
	m, err := r.measure(1, []string{"off", "on"}, ops)
	if err != nil {
		return err
	}
	res.zTimes = m
	return nil
}

// rows are the batch section's lines of the table of ratios.
func (b *batchResult) rows() []row {
	var rows []row
	for _, n := range callerCounts {
		m := b.times[n]
		for _, ours := range []string{"pkg/cache GetMany"} {
			subject := "GetMany of 100 keys"
			o := m[ours].nsPerOp
			for _, p := range []struct{ name, label, target string }{
				{"rueidis DoMulti", "rueidis DoMulti of 100 GETs", "≤ 1.10x"},
				{"rueidis MGet", "rueidis MGet", "≤ 1.10x"},
				{"go-redis MGET", "raw go-redis MGET + decode", ""},
				{"pkg/cache 100 Gets", "100 pkg/cache Gets", ""},
			} {
				if ours != "pkg/cache GetMany" && p.target == "" {
					continue
				}
				theirs := m[p.name].nsPerOp
				rw := row{
					what: subject + " vs " + p.label, callers: fmt.Sprint(n),
					ours: fmtNs(o), peer: fmtNs(theirs), ratio: o / theirs, target: p.target,
				}
				if p.target != "" {
					rw.met = yesNo(rw.ratio <= 1.10)
				}
				if p.name != "pkg/cache 100 Gets" { // the chart compares with peers
					rw.speedup = theirs / o
				}
				rows = append(rows, rw)
			}
		}
	}
	rows = append(rows,
		row{
			what:    fmt.Sprintf("bytes in Redis of a %s JSON value: CompressAbove on vs off", fmtBytes(int64(b.zValueLen))),
			callers: "—", ours: fmtBytes(b.zMem["on"]), peer: fmtBytes(b.zMem["off"]),
			ratio: float64(b.zMem["on"]) / float64(b.zMem["off"]),
		},
		row{
			what:    fmt.Sprintf("hit of a %s JSON value: CompressAbove on vs off", fmtBytes(int64(b.zValueLen))),
			callers: "1", ours: fmtNs(b.zTimes["on"].nsPerOp), peer: fmtNs(b.zTimes["off"].nsPerOp),
			ratio: b.zTimes["on"].nsPerOp / b.zTimes["off"].nsPerOp,
		})
	return rows
}

// details is the batch section's part of the generated document.
func (b *batchResult) details() string {
	if b == nil {
		return ""
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\n### Batch read of %d keys (median time per batch, decoding included)\n\n| callers |", batchKeys)
	for _, name := range batchNames {
		fmt.Fprintf(&s, " %s |", name)
	}
	s.WriteString("\n| ---: |" + strings.Repeat(" ---: |", len(batchNames)) + "\n")
	for _, n := range callerCounts {
		fmt.Fprintf(&s, "| %d |", n)
		for _, name := range batchNames {
			fmt.Fprintf(&s, " %s |", fmtNs(b.times[n][name].nsPerOp))
		}
		s.WriteString("\n")
	}
	fmt.Fprintf(&s, "\n### Compression of a %d-byte JSON value (S2, CompressAbove 1024)\n\n", b.zValueLen)
	s.WriteString("| CompressAbove | entry (STRLEN) | MEMORY USAGE | hit, 1 caller |\n| --- | ---: | ---: | ---: |\n")
	for _, mode := range []string{"off", "on"} {
		fmt.Fprintf(&s, "| %s | %d B | %d B | %s |\n", mode, b.zLen[mode], b.zMem[mode], fmtNs(b.zTimes[mode].nsPerOp))
	}
	return s.String()
}

func fmtBytes(n int64) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
