package cache

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
)

// The near-cache hears about changed keys on a connection of its own, in
// RESP3 with CLIENT TRACKING ON BCAST: Redis then pushes an "invalidate"
// message with the names of the keys under the tracked prefixes whenever any
// client changes them (writes, deletes, expiry, eviction), and a null one on
// FLUSHDB/FLUSHALL. The connection is raw rather than a go-redis one because
// the cache must see every frame in order: a PING answered on it proves that
// every invalidation Redis sent before the PING has been applied (see
// barrier), and its loss must be noticed at once, never hidden by a silent
// reconnect.

// trackHealthInterval is how long the connection may be silent before the
// tracker PINGs it; a PING unanswered within the socket timeout means the
// connection is dead (a peer gone without a FIN), and the tier is flushed.
const trackHealthInterval = time.Second

// errTrackingRefused marks a server that will not track keys for us: the
// tier stays off for the life of the Cache.
var errTrackingRefused = errors.New("server refuses client tracking")

// trackConn is one established tracking connection.
type trackConn struct {
	conn    net.Conn
	rd      *bufio.Reader
	timeout time.Duration
	id      int64 // CLIENT ID, for tests that kill it

	mu      sync.Mutex // serialises writes and guards waiters and err
	waiters []chan error
	err     error // set once the reader has stopped
}

// dialTracker opens a tracking connection: HELLO 3 (with credentials), then
// CLIENT TRACKING ON BCAST with the given prefixes. An error reply means the
// server refuses (errTrackingRefused wraps it), except for the transient
// ones a server gives while starting or failing over.
func dialTracker(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), username, password string, prefixes []string, timeout time.Duration) (*trackConn, error) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(dctx)
	if err != nil {
		return nil, err
	}
	t := &trackConn{conn: conn, rd: bufio.NewReaderSize(conn, 32<<10), timeout: timeout}
	fail := func(err error) (*trackConn, error) {
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
				t.id = v.elems[i+1].int
			}
		}
	}
	track := []string{"CLIENT", "TRACKING", "ON", "BCAST"}
	for _, p := range prefixes {
		track = append(track, "PREFIX", p)
	}
	if _, err := t.roundTrip(track...); err != nil {
		return fail(err)
	}
	_ = conn.SetDeadline(time.Time{})
	return t, nil
}

// roundTrip sends one command and reads its reply during the handshake, when
// no push can arrive yet. An error reply becomes an error.
func (t *trackConn) roundTrip(args ...string) (respValue, error) {
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
			if transientReply(v.str) {
				return v, fmt.Errorf("%s: %s", args[0], v.str)
			}
			return v, fmt.Errorf("%w: %s: %s", errTrackingRefused, strings.Join(args[:min(2, len(args))], " "), v.str)
		}
		return v, nil
	}
}

// transientReply tells the errors of a server that will answer differently
// soon from those of one that never will.
func transientReply(msg string) bool {
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// serve reads the connection until it fails or ctx ends, calling onInvalidate
// for each invalidation push (keys nil: everything). It PINGs a connection
// that has been silent for trackHealthInterval, and gives up on one that does
// not answer within the socket timeout.
func (t *trackConn) serve(ctx context.Context, onInvalidate func(keys []string)) error {
	stop := context.AfterFunc(ctx, func() { t.conn.Close() })
	defer stop()
	err := t.readLoop(onInvalidate)
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	t.mu.Lock()
	t.err = err
	waiters := t.waiters
	t.waiters = nil
	t.mu.Unlock()
	for _, w := range waiters {
		if w != nil {
			w <- err
		}
	}
	t.conn.Close()
	return err
}

func (t *trackConn) readLoop(onInvalidate func(keys []string)) error {
	pinged := false
	for {
		// Peek waits for the next frame without consuming anything, so a
		// timeout here leaves the stream intact.
		wait := trackHealthInterval
		if pinged {
			wait = t.timeout
		}
		_ = t.conn.SetReadDeadline(time.Now().Add(wait))
		if _, err := t.rd.Peek(1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				if err := t.send(nil, "PING"); err != nil {
					return err
				}
				pinged = true
				continue
			}
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("no answer to PING within %v", t.timeout)
			}
			return err
		}
		// A frame has begun: the rest of it gets the socket timeout.
		_ = t.conn.SetReadDeadline(time.Now().Add(t.timeout))
		v, err := readResp(t.rd)
		if err != nil {
			return err
		}
		pinged = false
		if v.kind == respPush {
			if len(v.elems) >= 2 && v.elems[0].str == "invalidate" {
				if v.elems[1].kind == respNull {
					onInvalidate(nil)
					continue
				}
				keys := make([]string, 0, len(v.elems[1].elems))
				for _, k := range v.elems[1].elems {
					keys = append(keys, k.str)
				}
				onInvalidate(keys)
			}
			continue
		}
		// A reply: to the oldest command still waiting (PINGs, in order).
		t.mu.Lock()
		var w chan error
		if len(t.waiters) > 0 {
			w = t.waiters[0]
			t.waiters = t.waiters[1:]
		}
		t.mu.Unlock()
		if w != nil {
			var rerr error
			if v.kind == respError {
				rerr = errors.New(v.str)
			}
			w <- rerr
		}
	}
}

// send writes a command whose reply goes to w (nil: nobody waits).
func (t *trackConn) send(w chan error, args ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return t.err
	}
	_ = t.conn.SetWriteDeadline(time.Now().Add(t.timeout))
	if _, err := t.conn.Write(appendCommand(nil, args...)); err != nil {
		return err
	}
	t.waiters = append(t.waiters, w)
	return nil
}

// barrier returns once every invalidation Redis sent before it got here has
// been applied: Redis writes a connection's pushes and replies in order, and
// the reader applies each push before it reads the next frame.
func (t *trackConn) barrier(ctx context.Context) error {
	w := make(chan error, 1)
	if err := t.send(w, "PING"); err != nil {
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
