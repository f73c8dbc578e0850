// Package tracking is the near-cache's tracking connection: a raw RESP3
// connection with CLIENT TRACKING ON BCAST that reports invalidations in order
// and proves, with a PING barrier, that every invalidation of an acknowledged
// write has been applied.
package tracking

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/pkg/cache/internal/mono"
)

// The near-cache hears about changed keys on a connection of its own, in
// RESP3 with CLIENT TRACKING ON BCAST: Redis then pushes an "invalidate"
// message with the names of the keys under the tracked prefixes whenever any
// client changes them (writes, deletes, expiry, eviction), and a null one on
// FLUSHDB/FLUSHALL. The connection is raw rather than a go-redis one because
// the cache must see every frame in order: a PING answered on it proves that
// every invalidation of a write acknowledged before the PING was sent has been
// applied (see Barrier), and its loss must be noticed at once, never hidden
// by a silent reconnect.
//
// Why the order holds in BCAST mode, where Redis does not push an
// invalidation while it runs the write but collects the keys and pushes them
// before it next sleeps: it does so before it writes any client's replies
// (beforeSleep runs trackingBroadcastInvalidationMessages before
// handleClientsWithPendingWrites). So by the time a writer reads its reply,
// the push is queued on the tracking connection, ahead of the reply to any
// PING the tracker sends after that.

// Conn is one established tracking connection.
type Conn struct {
	conn    net.Conn
	rd      *bufio.Reader
	timeout time.Duration
	ID      int64 // CLIENT ID, for tests that kill it
	// Tracked is when CLIENT TRACKING ON was sent (mono.Now): writes
	// acknowledged after it are reported on this connection.
	Tracked int64

	mu      sync.Mutex // serialises writes and guards waiters, err and failed
	waiters []waiter
	err     error // set once the reader has stopped
	failed  error // why the pinger closed the connection
}

// waiter is a command sent on the tracking connection whose reply is
// still to come.
type waiter struct {
	sent  int64      // mono.Now when it was written
	ch    chan error // nil: nobody waits
	probe bool       // the periodic probe (Handler.Probe), not a Barrier
}

// Handler is what a tracking connection reports to its near-cache.
type Handler struct {
	// Invalidate applies one invalidation push: Redis keys, nil for all.
	Invalidate func(keys []string)
	// Answered reports that a command written at sent (mono.Now) has been
	// answered, so every invalidation of a write acknowledged before sent
	// has been applied.
	Answered func(sent int64)
	// Tick runs at every PING interval.
	Tick func()
	// Probe is the command sent every interval; nil means PING.
	Probe []string
	// Accept, when set, judges the answer to each probe: only answers it
	// accepts renew (Answered), and the answers to Barrier do not; an error
	// ends the connection (Serve returns it). A probe is also sent as soon
	// as Serve starts. A near-cache on a Cluster or under Sentinel sends
	// CLUSTER NODES or ROLE and accepts only while the node is what it
	// trusts it to be. Nil: every answer renews.
	Accept func(Reply) error
}

// Reply is a probe's answer, flattened for Handler.Accept.
type Reply struct {
	// Text is a string reply's text (a verbatim string without its format).
	Text string
	// First is an array reply's first element, if a string.
	First string
	// Err is an error reply's message.
	Err string
}

func flatten(v respValue) Reply {
	switch v.kind {
	case respError:
		return Reply{Err: v.str}
	case respArray, respSet, respPush:
		if len(v.elems) > 0 {
			return Reply{First: v.elems[0].str}
		}
		return Reply{}
	case respVerbat:
		if len(v.str) >= 4 && v.str[3] == ':' {
			return Reply{Text: v.str[4:]}
		}
	}
	return Reply{Text: v.str}
}

// ErrRefused marks a server that will never track keys for us: the
// tier stays off for the life of the Cache.
var ErrRefused = errors.New("server refuses client tracking")

// Dial opens a tracking connection: HELLO 3 (with credentials), then
// CLIENT TRACKING ON BCAST with the given prefixes. An error reply that says
// the server cannot or may not do this (see PermanentReply) wraps
// ErrRefused; any other error is worth another try.
func Dial(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), username, password string, prefixes []string, timeout time.Duration) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(dctx)
	if err != nil {
		return nil, err
	}
	t := &Conn{conn: conn, rd: bufio.NewReaderSize(conn, 32<<10), timeout: timeout}
	fail := func(err error) (*Conn, error) {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	hello := []string{"HELLO", "3"}
	if password != "" {
		if username == "" {
			username = "default"
		}
		hello = append(hello, "AUTH", username, password)
	}
	hello = append(hello, "SETNAME", "cacheplane-near")
	v, err := t.roundTrip(hello...)
	if err != nil {
		return fail(err)
	}
	if v.kind == respMap {
		for i := 0; i+1 < len(v.elems); i += 2 {
			if v.elems[i].str == "id" {
				t.ID = v.elems[i+1].int
			}
		}
	}
	track := []string{"CLIENT", "TRACKING", "ON", "BCAST"}
	for _, p := range prefixes {
		track = append(track, "PREFIX", p)
	}
	t.Tracked = mono.Now()
	if _, err := t.roundTrip(track...); err != nil {
		return fail(err)
	}
	_ = conn.SetDeadline(time.Time{})
	return t, nil
}

// roundTrip sends one command and reads its reply during the handshake, when
// no push can arrive yet. An error reply becomes an error.
func (t *Conn) roundTrip(args ...string) (respValue, error) {
	if _, err := t.conn.Write(appendCommand(nil, args...)); err != nil {
		return respValue{}, err
	}
	for {
		v, err := readResp(t.rd)
		if err != nil {
			return v, err
		}
		if v.kind == respPush {
			continue
		}
		if v.kind == respError {
			cmd := strings.Join(args[:min(2, len(args))], " ")
			if PermanentReply(v.str) {
				return v, fmt.Errorf("%w: %s: %s", ErrRefused, cmd, v.str)
			}
			return v, fmt.Errorf("%s: %s", cmd, v.str)
		}
		return v, nil
	}
}

// PermanentReply tells the error replies of a server that will never track
// keys for this client (no RESP3, the command renamed or missing, forbidden
// by ACL) from those of one that may soon (LOADING, "max number of clients
// reached", a failing over or restarting server, an ACL user not created
// yet): only the first turn the tier off for good.
func PermanentReply(msg string) bool {
	switch {
	case strings.HasPrefix(msg, "NOPERM"), strings.HasPrefix(msg, "NOPROTO"):
		return true
	case strings.HasPrefix(msg, "ERR unknown command"), strings.HasPrefix(msg, "ERR unknown subcommand"):
		return true
	}
	return false
}

// Serve reads the connection until it fails or ctx ends, reporting to h.
// Every interval it PINGs the connection (the replies renew the near-cache's
// lease) and gives up on one that has left a command unanswered for the
// socket timeout: a peer gone without a FIN, or a stalled network.
func (t *Conn) Serve(ctx context.Context, interval time.Duration, h Handler) error {
	stop := context.AfterFunc(ctx, func() { t.conn.Close() })
	defer stop()
	done := make(chan struct{})
	var pinger sync.WaitGroup
	probe := h.Probe
	if len(probe) == 0 {
		probe = []string{"PING"}
	}
	if h.Accept != nil {
		if err := t.send(nil, true, probe...); err != nil {
			t.fail(err)
		}
	}
	pinger.Go(func() { t.ping(done, interval, h.Tick, probe) })
	err := t.readLoop(h)
	close(done)
	pinger.Wait()
	t.mu.Lock()
	if t.failed != nil {
		err = t.failed
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	t.err = err
	waiters := t.waiters
	t.waiters = nil
	t.mu.Unlock()
	for _, w := range waiters {
		if w.ch != nil {
			w.ch <- err
		}
	}
	t.conn.Close()
	return err
}

// ping sends a PING every interval until done, and closes the connection
// once its oldest unanswered command is older than the socket timeout.
func (t *Conn) ping(done <-chan struct{}, interval time.Duration, tick func(), probe []string) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
		}
		if tick != nil {
			tick()
		}
		t.mu.Lock()
		var oldest int64 = -1
		if len(t.waiters) > 0 {
			oldest = t.waiters[0].sent
		}
		t.mu.Unlock()
		if oldest >= 0 && mono.Now()-oldest > int64(t.timeout) {
			t.fail(fmt.Errorf("no answer to PING within %v", t.timeout))
			return
		}
		if err := t.send(nil, true, probe...); err != nil {
			t.fail(err)
			return
		}
	}
}

// fail closes the connection for reason, which serve then returns.
func (t *Conn) fail(reason error) {
	t.mu.Lock()
	if t.failed == nil && t.err == nil {
		t.failed = reason
	}
	t.mu.Unlock()
	t.conn.Close()
}

func (t *Conn) readLoop(h Handler) error {
	for {
		// No read deadline: the pinger closes a connection that stops
		// answering, wherever in a frame the reader is.
		v, err := readResp(t.rd)
		if err != nil {
			return err
		}
		if v.kind == respPush {
			if len(v.elems) >= 2 && v.elems[0].str == "invalidate" {
				if v.elems[1].kind == respNull {
					h.Invalidate(nil)
					continue
				}
				keys := make([]string, 0, len(v.elems[1].elems))
				for _, k := range v.elems[1].elems {
					keys = append(keys, k.str)
				}
				h.Invalidate(keys)
			}
			continue
		}
		// A reply: to the oldest command still waiting (PINGs, in order).
		t.mu.Lock()
		var w waiter
		ok := len(t.waiters) > 0
		if ok {
			w = t.waiters[0]
			t.waiters = t.waiters[1:]
		}
		t.mu.Unlock()
		if !ok {
			continue
		}
		// Any reply, even an error, comes after the pushes queued before
		// the command was read.
		switch {
		case h.Accept == nil:
			h.Answered(w.sent)
		case w.probe:
			if err := h.Accept(flatten(v)); err != nil {
				return err
			}
			h.Answered(w.sent)
		}
		if w.ch != nil {
			var rerr error
			if v.kind == respError {
				rerr = errors.New(v.str)
			}
			w.ch <- rerr
		}
	}
}

// send writes a command whose reply goes to ch (nil: nobody waits).
func (t *Conn) send(ch chan error, probe bool, args ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return t.err
	}
	if t.failed != nil {
		return t.failed
	}
	_ = t.conn.SetWriteDeadline(time.Now().Add(t.timeout))
	sent := mono.Now()
	if _, err := t.conn.Write(appendCommand(nil, args...)); err != nil {
		return err
	}
	t.waiters = append(t.waiters, waiter{sent: sent, ch: ch, probe: probe})
	return nil
}

// Barrier returns once every invalidation of a write acknowledged before it
// was called has been applied (see the order argument above).
func (t *Conn) Barrier(ctx context.Context) error {
	w := make(chan error, 1)
	if err := t.send(w, false, "PING"); err != nil {
		return err
	}
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A minimal RESP3 codec: the tracker reads HELLO's map, simple replies and
// invalidation pushes, and skips whatever else a server may send.

const (
	respSimple  = '+'
	respError   = '-'
	respInt     = ':'
	respBulk    = '$'
	respArray   = '*'
	respMap     = '%'
	respSet     = '~'
	respPush    = '>'
	respNull    = '_'
	respBool    = '#'
	respDouble  = ','
	respBigNum  = '('
	respVerbat  = '='
	respBlobErr = '!'
	respAttr    = '|'
)

type respValue struct {
	kind  byte
	str   string
	int   int64
	elems []respValue // arrays, sets, pushes; maps as key, value, key, value
}

// maxRespElems bounds an aggregate's announced length, so a corrupt stream
// cannot make the reader allocate without bound.
const maxRespElems = 1 << 24

func readResp(rd *bufio.Reader) (respValue, error) {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		return respValue{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return respValue{}, fmt.Errorf("resp: malformed line %q", line)
	}
	kind, body := line[0], string(line[1:len(line)-2])
	v := respValue{kind: kind}
	switch kind {
	case respSimple, respError, respDouble, respBigNum, respBool:
		v.str = body
	case respInt:
		v.int, err = strconv.ParseInt(body, 10, 64)
	case respNull:
	case respBulk, respVerbat, respBlobErr:
		n, perr := strconv.Atoi(body)
		if perr != nil || n < -1 {
			return v, fmt.Errorf("resp: bad length %q", body)
		}
		if n == -1 {
			v.kind = respNull
			return v, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return v, err
		}
		v.str = string(buf[:n])
		if kind == respBlobErr {
			v.kind = respError
		}
	case respArray, respSet, respPush, respMap, respAttr:
		n, perr := strconv.Atoi(body)
		if perr != nil || n < -1 || n > maxRespElems {
			return v, fmt.Errorf("resp: bad length %q", body)
		}
		if n == -1 {
			v.kind = respNull
			return v, nil
		}
		if kind == respMap || kind == respAttr {
			n *= 2
		}
		v.elems = make([]respValue, n)
		for i := range v.elems {
			if v.elems[i], err = readResp(rd); err != nil {
				return v, err
			}
		}
		if kind == respAttr {
			// Attributes annotate the value that follows: return that one.
			return readResp(rd)
		}
	default:
		return v, fmt.Errorf("resp: unknown type %q", kind)
	}
	return v, err
}

func appendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}
