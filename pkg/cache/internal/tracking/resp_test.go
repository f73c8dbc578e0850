package tracking

import (
	"bufio"
	"strings"
	"testing"
)

func read(t *testing.T, wire string) (respValue, error) {
	t.Helper()
	return readResp(bufio.NewReader(strings.NewReader(wire)))
}

func TestReadRespPushAndMap(t *testing.T) {
	v, err := read(t, ">2\r\n$10\r\ninvalidate\r\n*2\r\n$3\r\nk:1\r\n$3\r\nk:2\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if v.kind != respPush || len(v.elems) != 2 || v.elems[0].str != "invalidate" {
		t.Fatalf("push read as %+v", v)
	}
	if keys := v.elems[1].elems; len(keys) != 2 || keys[0].str != "k:1" || keys[1].str != "k:2" {
		t.Fatalf("keys read as %+v", keys)
	}
	// FLUSHALL's invalidation carries a null instead of keys.
	v, err = read(t, ">2\r\n$10\r\ninvalidate\r\n_\r\n")
	if err != nil || v.elems[1].kind != respNull {
		t.Fatalf("null invalidation read as %+v, %v", v, err)
	}
	// An attribute annotates the value after it, which is what is returned.
	v, err = read(t, "|1\r\n+a\r\n:1\r\n+OK\r\n")
	if err != nil || v.kind != respSimple || v.str != "OK" {
		t.Fatalf("attributed reply read as %+v, %v", v, err)
	}
}

func TestReadRespRejectsCorruptInput(t *testing.T) {
	for _, wire := range []string{
		"+OK\n",                   // no CR
		"$abc\r\n",                // bad length
		"*99999999999\r\n",        // aggregate beyond maxRespElems: no huge allocation
		"$5\r\nab",                // truncated bulk
		"?1\r\n",                  // unknown type
		":notanumber\r\n",         // bad integer
		"%-2\r\n",                 // negative map length
		"*2\r\n$1\r\na\r\n$9\r\n", // truncated element
	} {
		if _, err := read(t, wire); err == nil {
			t.Errorf("%q: want an error", wire)
		}
	}
}

func TestAppendCommandRoundTrips(t *testing.T) {
	wire := appendCommand(nil, "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "pre\r\nfix")
	v, err := read(t, string(wire))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.elems) != 6 || v.elems[5].str != "pre\r\nfix" {
		t.Fatalf("command read back as %+v", v)
	}
}

func TestPermanentReply(t *testing.T) {
	for msg, want := range map[string]bool{
		"NOPERM this user has no permissions":      true,
		"NOPROTO unsupported protocol version":     true,
		"ERR unknown command 'HELLO'":              true,
		"ERR unknown subcommand 'TRACKING'":        true,
		"LOADING Redis is loading the dataset":     false,
		"ERR max number of clients reached":        false,
		"WRONGPASS invalid username-password pair": false,
	} {
		if got := PermanentReply(msg); got != want {
			t.Errorf("PermanentReply(%q) = %v, want %v", msg, got, want)
		}
	}
}
