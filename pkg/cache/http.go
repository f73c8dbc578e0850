package cache

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// maxCachedBody is the largest response body HTTPMiddleware stores; larger
// responses are served uncached.
const maxCachedBody = 1 << 20

// HTTPMiddleware caches the 200 responses of GET requests (status, the
// headers the handler set, body) for ttl (0: as in Set) under prefix, and
// answers GET and HEAD requests from the cache, with "X-Cache: HIT" or
// "X-Cache: MISS". After a 2xx response to POST, PUT, PATCH or DELETE it
// invalidates the whole prefix. A negative ttl is a programming error: like
// http.ServeMux given a bad pattern, HTTPMiddleware panics, with an error
// wrapping ErrInvalidTTL, when it is called (at startup, not per request).
//
// Wrap the handlers registered on an http.ServeMux, so that the request
// carries its route pattern and path values. The key of a request is
// GenerateKey(prefix, {"route": r.Pattern, "path": {name: r.PathValue(name)},
// "query": {name: values}}), where the names are keyParams: a name that is a
// wildcard of the route selects a path value, any other name a query
// parameter; without keyParams, every wildcard and every query parameter
// count. Without a route pattern (the handler is not behind a ServeMux),
// or with one that ends in '/' (it matches a whole subtree, so the rest of
// the path picks the response), "route" is the URL path.
//
// Only the route and keyParams shape the key: a handler whose response also
// depends on anything else (the caller's identity, a request header) must
// not be wrapped. Concurrent misses of one key each run the handler.
//
// Headers: only what the wrapped handler changes in the header map is
// stored (compared with the map before it ran), not what outer middleware
// set for the request (a request id, CORS, a session cookie). A hit applies
// those changes to the current request's header as the handler did: a header
// the handler set is set, values it added to an outer layer's are added
// after this request's, and every other header an outer layer set for this
// request stays as it is. A hit also carries "Age" (seconds since stored).
//
// Not stored: responses whose handler set a cookie or named request
// headers in "Vary" (the key does not include them; an outer layer's Vary
// and cookies concern its own headers, which are not stored); responses
// whose final "Cache-Control" (whoever set it) says no-store, private or
// no-cache, or whose freshness is zero or invalid; responses that were
// flushed while streaming, hijacked, or exceed 1 MiB; and responses to HEAD
// requests (their body may be empty). The response's freshness caps ttl:
// s-maxage, else max-age, else Expires (relative to the response's Date,
// else to now). A request with "Cache-Control: no-cache" skips the lookup
// and refreshes the entry; "no-store" skips the cache entirely.
//
// When Redis is down the handler serves the request, after at most one
// SocketTimeout. If the request's deadline passes during the lookup, the
// handler serves it (and sees the expired context, as it would without the
// cache); only a cancelled request (the client went away) ends there
// without a response. A nil *Cache passes every request through.
func HTTPMiddleware(c *Cache, prefix string, ttl time.Duration, keyParams ...string) func(http.Handler) http.Handler {
	if err := checkTTL("middleware", prefix, ttl); err != nil {
		panic(err)
	}
	return func(next http.Handler) http.Handler {
		if c == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodGet, http.MethodHead:
				if t := c.tracer(); t != nil {
					c.serveTraced(t, w, r, next, prefix, ttl, keyParams)
				} else {
					c.serveCached(w, r, next, prefix, ttl, keyParams, nil)
				}
			case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
				rec := &recorder{ResponseWriter: w, limit: -1}
				next.ServeHTTP(rec, r)
				// Before the handler's response leaves net/http's buffer (for
				// all but large bodies), so the client's next read misses.
				if rec.status() >= 200 && rec.status() < 300 {
					c.invalidatePrefix(r.Context(), prefix)
				}
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}

// serveTraced is serveCached in a "cache.http" span, the request's context
// carrying it to the handler. A 5xx response the handler gives on a miss
// marks the span as an error.
func (c *Cache) serveTraced(t trace.Tracer, w http.ResponseWriter, r *http.Request, next http.Handler, prefix string, ttl time.Duration, keyParams []string) {
	var key string
	if c.cfg.TraceKeys {
		key = requestKey(r, prefix, keyParams)
	}
	ctx, span := c.startSpan(r.Context(), t, spanHTTP, prefix, key)
	var info spanInfo
	c.serveCached(w, r.WithContext(ctx), next, prefix, ttl, keyParams, &info)
	var err error
	if info.status >= 500 {
		err = fmt.Errorf("cache: handler answered %d", info.status)
	}
	endSpan(span, &info, err)
}

func (c *Cache) serveCached(w http.ResponseWriter, r *http.Request, next http.Handler, prefix string, ttl time.Duration, keyParams []string, info *spanInfo) {
	ctx := r.Context()
	noCache, noStore := requestCacheControl(r.Header)
	key := requestKey(r, prefix, keyParams)
	st := c.state(keyspace.PrefixOf(key))
	writeBack := !noStore && r.Method == http.MethodGet
	// What the lookup saw under the key: the write-back is a compare-and-set
	// against it (see storeLoaded). A no-cache request reads it too, only
	// for that.
	var obs observation
	if noCache && !noStore {
		c.observe(ctx, key, &obs)
	}
	if !noCache && !noStore {
		var payload []byte
		var found bool
		err := c.generationsKnown(ctx, st, "get", key)
		if err == nil {
			payload, found, err = c.getEntry(ctx, st, key, &obs)
		}
		if found {
			if resp, ok := decodeResponse(payload); ok {
				st.hits.Add(1)
				info.setOutcome(outcomeHit)
				resp.write(w, r)
				return
			}
			obs.settle()
			st.misses.Add(1)
			if len(payload) == 0 || payload[0] != 1 {
				st.errors.Add(1) // a version 1 entry is just a miss
			}
		}
		if err != nil {
			switch {
			case errors.Is(ctx.Err(), context.Canceled):
				return // the client is gone
			case ctx.Err() != nil:
				// The deadline passed: the handler answers as it would
				// without the cache; storing would fail.
				writeBack = false
			default:
				c.warn("cache: read failed; serving from the handler", "key", key, "err", err)
				writeBack = writeBack && !isRedisFailure(err)
			}
		}
	}
	w.Header().Set("X-Cache", "MISS")
	info.setOutcome(outcomeMiss)
	var start time.Time
	if info != nil {
		start = time.Now()
	}
	if !writeBack {
		next.ServeHTTP(w, r)
		info.setLoad(time.Since(start))
		return
	}
	// Before the handler reads its data: see setEntry and storeLoaded.
	gen, seq := st.gen.Load(), c.invalidationSeq(st)
	rec := &recorder{ResponseWriter: w, limit: maxCachedBody, before: w.Header().Clone()}
	next.ServeHTTP(rec, r)
	if info != nil {
		info.setLoad(time.Since(start))
		info.status = rec.status()
	}
	if !rec.storable() {
		return
	}
	limit, fresh := freshness(rec.finalHeader(), time.Now())
	if !fresh {
		return
	}
	if limit > 0 {
		ttl = min(c.effectiveTTL(st, ttl), limit)
	}
	if err := c.storeLoaded(ctx, st, key, gen, seq, obs, rec.encode(time.Now()), ttl); err != nil {
		c.warn("cache: storing the response failed", "key", key, "err", err)
	}
}

// effectiveTTL resolves a ttl of 0 as setEntry does: the policy's TTL for
// the prefix, else DefaultTTL.
func (c *Cache) effectiveTTL(st *prefixState, ttl time.Duration) time.Duration {
	if ttl > 0 {
		return ttl
	}
	if p := time.Duration(st.ttl.Load()); p > 0 {
		return p
	}
	return c.cfg.DefaultTTL
}

// maxFreshness caps max-age and s-maxage, as RFC 9111 suggests (2^31 s).
const maxFreshness = 1 << 31

// freshness reads how long a response may be stored from its header: limit
// is s-maxage, else max-age, else Expires minus Date (or now); 0 means no
// limit. fresh is false for a response that must not be stored at all:
// no-store, private or no-cache, a zero or invalid max-age or s-maxage, an
// Expires that is invalid or not in the future.
func freshness(h http.Header, now time.Time) (limit time.Duration, fresh bool) {
	maxAge, sMaxAge := int64(-1), int64(-1)
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "private", "no-cache":
				// With or without a field list: no-cache allows reuse
				// only after revalidation with the handler, which a hit
				// never does; private="Set-Cookie" would mean storing
				// the rest, which this is not worth.
				return 0, false
			case "max-age", "s-maxage":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(arg), `"`), 10, 64)
				if err != nil || n < 0 {
					return 0, false // invalid: RFC 9111 treats it as stale
				}
				n = min(n, maxFreshness)
				if strings.EqualFold(strings.TrimSpace(name), "max-age") {
					maxAge = minSet(maxAge, n)
				} else {
					sMaxAge = minSet(sMaxAge, n)
				}
			}
		}
	}
	switch {
	case sMaxAge >= 0: // a shared cache's own, before max-age
		return time.Duration(sMaxAge) * time.Second, sMaxAge > 0
	case maxAge >= 0:
		return time.Duration(maxAge) * time.Second, maxAge > 0
	}
	if _, ok := h["Expires"]; ok {
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil {
			return 0, false // "Expires: 0" and the like mean already expired
		}
		base := now
		if date, err := http.ParseTime(h.Get("Date")); err == nil {
			base = date // the origin's clock, like Expires
		}
		left := exp.Sub(base)
		return left, left > 0
	}
	return 0, true
}

// minSet is min(a, b) where a < 0 means unset.
func minSet(a, b int64) int64 {
	if a < 0 {
		return b
	}
	return min(a, b)
}

// requestCacheControl reads the directives of the request's Cache-Control
// that concern the middleware.
func requestCacheControl(h http.Header) (noCache, noStore bool) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "no-cache":
				noCache = true
			case "no-store":
				noStore = true
			}
		}
	}
	return noCache, noStore
}

// requestKey builds the cache key of a GET or HEAD request.
func requestKey(r *http.Request, prefix string, keyParams []string) string {
	route := r.Pattern
	if route == "" || strings.HasSuffix(route, "/") {
		// A subtree pattern ("GET /static/") leaves the rest of the path
		// unnamed: keyed by the pattern alone, /static/a.css and
		// /static/b.js would share one entry.
		route = r.URL.Path
	}
	wildcards := patternWildcards(r.Pattern)
	path := map[string]any{}
	query := map[string]any{}
	q := r.URL.Query()
	if len(keyParams) == 0 {
		for _, name := range wildcards {
			path[name] = r.PathValue(name)
		}
		for name, vs := range q {
			query[name] = vs
		}
	} else {
		for _, name := range keyParams {
			if slices.Contains(wildcards, name) {
				path[name] = r.PathValue(name)
			} else if vs, ok := q[name]; ok {
				query[name] = vs
			}
		}
	}
	return GenerateKey(prefix, map[string]any{"route": route, "path": path, "query": query})
}

// patternWildcards returns the wildcard names of a ServeMux pattern such as
// "GET /users/{id}/files/{path...}".
func patternWildcards(pattern string) []string {
	var names []string
	for {
		i := strings.IndexByte(pattern, '{')
		if i < 0 {
			return names
		}
		j := strings.IndexByte(pattern[i:], '}')
		if j < 0 {
			return names
		}
		name := strings.TrimSuffix(pattern[i+1:i+j], "...")
		if name != "" && name != "$" {
			names = append(names, name)
		}
		pattern = pattern[i+j+1:]
	}
}

// recorder passes a response through while keeping a copy to store (limit >=
// 0) or just noting its status (limit < 0).
type recorder struct {
	http.ResponseWriter
	limit    int
	code     int
	before   http.Header // the header map before the handler ran
	header   http.Header // snapshot at WriteHeader
	body     bytes.Buffer
	tooBig   bool
	flushed  bool
	hijacked bool
}

func (r *recorder) WriteHeader(code int) {
	// An informational status (103 Early Hints) precedes the response's
	// own; taken for it, a 2xx write would not invalidate and a 200 would
	// not be stored. 101 ends the exchange, as net/http treats it.
	if r.code == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		r.code = code
		if r.limit >= 0 {
			r.header = r.ResponseWriter.Header().Clone()
		}
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if r.limit >= 0 && !r.tooBig {
		if r.body.Len()+len(p) > r.limit {
			r.tooBig = true
			r.body = bytes.Buffer{}
		} else {
			r.body.Write(p)
		}
	}
	return r.ResponseWriter.Write(p)
}

// Flush supports streaming handlers (http.Flusher); a streamed response is
// not stored.
func (r *recorder) Flush() { _ = r.FlushError() }

// FlushError is what http.ResponseController calls to flush.
func (r *recorder) FlushError() error {
	r.flushed = true
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack supports handlers that take the connection over (http.Hijacker);
// a hijacked response is not stored. Where the writer underneath cannot
// (HTTP/2), the error wraps http.ErrNotSupported.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	r.hijacked = true
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK // the handler wrote nothing: net/http sends 200
	}
	return r.code
}

// finalHeader is the response's header as sent.
func (r *recorder) finalHeader() http.Header {
	if r.header != nil {
		return r.header
	}
	return r.ResponseWriter.Header()
}

// headerChange is one header the handler changed.
type headerChange struct {
	name   string
	add    bool // values follow those outer layers set; else they replace them
	values []string
}

// changes are the handler's changes to the header, sorted by name for
// deterministic bytes. A header the handler deleted is not among them: a
// hit never removes what outer layers set.
func (r *recorder) changes() []headerChange {
	var out []headerChange
	for name, values := range r.finalHeader() {
		old, had := r.before[name]
		switch {
		case name == "X-Cache" || (had && slices.Equal(old, values)):
			continue
		case had && len(values) > len(old) && slices.Equal(values[:len(old)], old):
			out = append(out, headerChange{name, true, values[len(old):]})
		default:
			out = append(out, headerChange{name, false, values})
		}
	}
	slices.SortFunc(out, func(a, b headerChange) int { return strings.Compare(a.name, b.name) })
	return out
}

func (r *recorder) storable() bool {
	if r.status() != http.StatusOK || r.tooBig || r.flushed || r.hijacked {
		return false
	}
	for _, ch := range r.changes() {
		switch ch.name {
		case "Set-Cookie":
			return false // the handler's cookie is one client's
		case "Vary":
			// Vary names request headers the response depends on; the
			// key has none of them, so the entry would reach requests it
			// was not made for.
			for _, v := range ch.values {
				if strings.TrimSpace(v) != "" {
					return false
				}
			}
		}
	}
	return true
}

// Stored responses are, after the entry header: responseVersion, the status
// as a uvarint, the Unix time it was stored in seconds as a uvarint (for
// Age), the number of header changes as a uvarint, each as a byte (0 set, 1
// add), its name and values (a uvarint count, then length-prefixed
// strings), then the body. Binary rather than the codec's JSON: bodies are
// bytes, and base64 would cost a third more space and the time to encode it.
// Version 1 stored the whole header map; its entries are read as misses.
const responseVersion = 2

func (r *recorder) encode(now time.Time) []byte {
	changes := r.changes()
	b := make([]byte, 0, 64+r.body.Len())
	b = append(b, responseVersion)
	b = binary.AppendUvarint(b, uint64(r.status()))
	b = binary.AppendUvarint(b, uint64(max(now.Unix(), 0)))
	b = binary.AppendUvarint(b, uint64(len(changes)))
	for _, ch := range changes {
		op := byte(0)
		if ch.add {
			op = 1
		}
		b = append(b, op)
		b = appendString(b, ch.name)
		b = binary.AppendUvarint(b, uint64(len(ch.values)))
		for _, v := range ch.values {
			b = appendString(b, v)
		}
	}
	return append(b, r.body.Bytes()...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type storedResponse struct {
	status  int
	stored  int64 // Unix seconds
	changes []headerChange
	body    []byte
}

var errBadResponse = errors.New("malformed stored response")

// decodeResponse parses what recorder.encode stored; ok is false for bytes it
// did not write (the payload is then treated as a miss).
func decodeResponse(b []byte) (resp storedResponse, ok bool) {
	d := decoder{b: b}
	if v := d.byte(); v != responseVersion {
		return resp, false
	}
	status := d.uvarint()
	stored := d.uvarint()
	n := d.uvarint()
	if d.err != nil || status < 100 || status > 999 || stored > 1<<62 || n > uint64(len(d.b)) {
		return resp, false
	}
	resp.status = int(status)
	resp.stored = int64(stored)
	resp.changes = make([]headerChange, 0, n)
	for range n {
		op := d.byte()
		name := d.string()
		count := d.uvarint()
		if d.err != nil || op > 1 || count > uint64(len(d.b)) {
			return resp, false
		}
		values := make([]string, 0, count)
		for range count {
			values = append(values, d.string())
		}
		resp.changes = append(resp.changes, headerChange{name, op == 1, values})
	}
	if d.err != nil {
		return resp, false
	}
	// Copied: the payload aliases the Redis client's reply.
	resp.body = bytes.Clone(d.b)
	return resp, true
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errBadResponse
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errBadResponse
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errBadResponse
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (s storedResponse) write(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for _, ch := range s.changes {
		if ch.add {
			h[ch.name] = slices.Concat(h[ch.name], ch.values)
		} else {
			h[ch.name] = ch.values
		}
	}
	h.Set("X-Cache", "HIT")
	// The time spent in the cache, which a client adds to its own (RFC
	// 9111): otherwise a max-age would start afresh with every hit.
	age := max(time.Now().Unix()-s.stored, 0)
	for _, ch := range s.changes {
		if ch.name == "Age" && len(ch.values) > 0 {
			// The handler's response came from a cache already.
			if prev, err := strconv.ParseInt(ch.values[len(ch.values)-1], 10, 64); err == nil && prev > 0 {
				age += prev
			}
		}
	}
	h.Set("Age", strconv.FormatInt(age, 10))
	if h.Get("Content-Length") == "" {
		h.Set("Content-Length", strconv.Itoa(len(s.body)))
	}
	w.WriteHeader(s.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(s.body)
	}
}

// StatsHandler serves Stats as JSON, for a debug or admin endpoint. JSON
// strings are UTF-8: prefixes that are not valid UTF-8 are named as in
// NewCollector (each run of invalid bytes as U+FFFD), those that become
// equal added up.
func StatsHandler(c *Cache) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(c.Stats().jsonSafe())
	})
}
