package cache

import (
	"maps"
	"testing"
)

// TestParseClusterNodes checks which nodes of a CLUSTER NODES answer the
// near-cache follows: masters and replicas with an address, not a node the
// cluster has failed unless it is a master still owning slots.
func TestParseClusterNodes(t *testing.T) {
	const text = "" +
		"a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460\n" +
		"a2 127.0.0.1:7002@17002,host2 master - 0 0 2 connected 5461-10922\n" +
		"a3 127.0.0.1:7003@17003 master,fail - 0 0 3 connected 10923-16383\n" +
		"r1 127.0.0.1:7004@17004 slave a1 0 0 1 connected\n" +
		"r2 127.0.0.1:7005@17005 slave,fail a2 0 0 2 connected\n" +
		"o1 127.0.0.1:7006@17006 master,fail - 0 0 4 disconnected\n" +
		"n1 :0@0 master,noaddr - 0 0 0 disconnected\n" +
		"h1 127.0.0.1:7007@17007 handshake - 0 0 0 connected\n" +
		"p1 127.0.0.1:7008@17008 slave,fail? a1 0 0 1 connected\n" +
		// IPv6, printed without brackets.
		"i1 ::1:7009@17009 slave a1 0 0 1 connected\n" +
		"i2 fd00::2:7010@17010,host10 slave a2 0 0 2 connected\n"
	view, self, err := parseClusterNodes(text)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"127.0.0.1:7001": "master",
		"127.0.0.1:7002": "master",
		"127.0.0.1:7003": "master", // failed, but nobody else has its slots
		"127.0.0.1:7004": "slave",
		"127.0.0.1:7008": "slave", // only suspected
		"[::1]:7009":     "slave",
		"[fd00::2]:7010": "slave",
	}
	if self != "master" || !maps.Equal(view, want) {
		t.Errorf("parseClusterNodes = %v, %q; want %v, master", view, self, want)
	}
	if _, _, err := parseClusterNodes("r1 127.0.0.1:7004@17004 slave a1 0 0 1 connected\n"); err == nil {
		t.Error("an answer without the node's own line was accepted")
	}
}
