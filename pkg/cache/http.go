package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/internal/keyspace"
)

// maxCachedBody is the largest response body HTTPMiddleware stores; larger
// responses are served uncached.
const maxCachedBody = 1 << 20

// HTTPMiddleware caches the 200 responses of GET requests (status, headers,
// body) for ttl (<= 0: as in Set) under prefix, and answers GET and HEAD
// requests from the cache, with "X-Cache: HIT" or "X-Cache: MISS". After a 2xx
// response to POST, PUT, PATCH or DELETE it invalidates the whole prefix.
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
// A request with "Cache-Control: no-cache" skips the lookup and refreshes the
// entry; "no-store" skips the cache entirely. Responses that set a cookie,
// carry "Cache-Control: private", "no-store" or "no-cache", name request
// headers in "Vary" (the key does not include them), flush, or exceed 1 MiB
// are not stored, nor are responses to HEAD requests (their body may be
// empty).
// When Redis is down the handler serves the request, after at most one
// SocketTimeout. A nil *Cache passes every request through.
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
				c.serveCached(w, r, next, prefix, ttl, keyParams)
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

func (c *Cache) serveCached(w http.ResponseWriter, r *http.Request, next http.Handler, prefix string, ttl time.Duration, keyParams []string) {
	ctx := r.Context()
	noCache, noStore := requestCacheControl(r.Header)
	key := requestKey(r, prefix, keyParams)
	st := c.state(keyspace.PrefixOf(key))
	writeBack := !noStore && r.Method == http.MethodGet
	if !noCache && !noStore {
		payload, found, err := c.getEntry(ctx, st, key)
		if found {
			if resp, ok := decodeResponse(payload); ok {
				st.hits.Add(1)
				resp.write(w, r)
				return
			}
			st.misses.Add(1)
			st.errors.Add(1)
		}
		if err != nil {
			if ctx.Err() != nil {
				return // the client is gone
			}
			c.warn("cache: read failed; serving from the handler", "key", key, "err", err)
			writeBack = writeBack && !isRedisFailure(err)
		}
	}
	w.Header().Set("X-Cache", "MISS")
	if !writeBack {
		next.ServeHTTP(w, r)
		return
	}
	// Before the handler reads its data: see setEntry and storeLoaded.
	gen, seq := st.gen.Load(), c.invalidationSeq(st)
	rec := &recorder{ResponseWriter: w, limit: maxCachedBody}
	next.ServeHTTP(rec, r)
	if !rec.storable() {
		return
	}
	if err := c.storeLoaded(ctx, st, key, gen, seq, rec.encode(), ttl); err != nil {
		c.warn("cache: storing the response failed", "key", key, "err", err)
	}
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
	limit   int
	code    int
	header  http.Header // snapshot at WriteHeader
	body    bytes.Buffer
	tooBig  bool
	flushed bool
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

// Flush supports streaming handlers; a streamed response is not stored.
func (r *recorder) Flush() {
	r.flushed = true
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK // the handler wrote nothing: net/http sends 200
	}
	return r.code
}

func (r *recorder) storable() bool {
	if r.status() != http.StatusOK || r.tooBig || r.flushed {
		return false
	}
	h := r.header
	if h == nil {
		h = r.ResponseWriter.Header()
	}
	if _, ok := h["Set-Cookie"]; ok {
		return false
	}
	// Vary names request headers the response depends on; the key has none
	// of them, so the entry would reach requests it was not made for.
	for _, v := range h.Values("Vary") {
		if strings.TrimSpace(v) != "" {
			return false
		}
	}
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			// no-cache allows reuse only after revalidation with the
			// handler, which a hit never does.
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "no-store", "private", "no-cache":
				return false
			}
		}
	}
	return true
}

// Stored responses are, after the entry header: responseVersion, the status
// as a uvarint, the number of header fields as a uvarint, each field as its
// name and values (a uvarint count, then length-prefixed strings), then the
// body. Binary rather than the codec's JSON: bodies are bytes, and base64
// would cost a third more space and the time to encode it.
const responseVersion = 1

func (r *recorder) encode() []byte {
	h := r.header
	if h == nil {
		h = r.ResponseWriter.Header()
	}
	b := make([]byte, 0, 64+r.body.Len())
	b = append(b, responseVersion)
	b = binary.AppendUvarint(b, uint64(r.status()))
	names := make([]string, 0, len(h))
	for name := range h {
		if name != "X-Cache" {
			names = append(names, name)
		}
	}
	slices.Sort(names) // deterministic bytes for equal responses
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, name := range names {
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(h[name])))
		for _, v := range h[name] {
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
	status int
	header http.Header
	body   []byte
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
	n := d.uvarint()
	if d.err != nil || status < 100 || status > 999 || n > uint64(len(d.b)) {
		return resp, false
	}
	resp.status = int(status)
	resp.header = make(http.Header, n)
	for range n {
		name := d.string()
		count := d.uvarint()
		if d.err != nil || count > uint64(len(d.b)) {
			return resp, false
		}
		values := make([]string, 0, count)
		for range count {
			values = append(values, d.string())
		}
		resp.header[name] = values
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
	for name, values := range s.header {
		h[name] = values
	}
	h.Set("X-Cache", "HIT")
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
