package v1alpha1_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"k8s.io/client-go/rest"

	v1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/pkg/cache/keyspace"
)

// TestKeyPrefixRulesMatchTheLibrary walks one table of key prefixes through
// the API server (the CRD's OpenAPI and CEL rules) and through
// keyspace.ValidateKeyPrefix, which pkg/cache's New applies, and requires the
// same verdict from both: a prefix a CachePolicy cannot hold must not be
// usable by a workload either, and the reverse, or the two halves drift.
//
// The bodies are sent as raw bytes, so the API server sees exactly the
// string in the table, invalid UTF-8 included (a Go client would have
// replaced it with U+FFFD on the way).
//
// The one deliberate difference: "" is rejected by both here, and pkg/cache
// alone accepts it as "no prefix" without calling ValidateKeyPrefix
// (documented on Config.KeyPrefix and on spec.keyPrefix).
func TestKeyPrefixRulesMatchTheLibrary(t *testing.T) {
	table := []string{
		"", "shop", "team-a/shop", "shop.v2_eu-cache", "a", "/", "-", ".", "_", "..", "a/../b", "A9",
		"a:b", "shop:", ":shop", ":", "a::b",
		"shop*", "shop?", "shop[1]", "shop]", `shop\x`, `\`, "{shop}", "{", "}",
		"my shop", "shop\t", "\nshop", "sh\u00a0op", "a\u2028b", "a\u3000b",
		"caf\u00e9", "a\uff1ab", "\u212a", "a\U0001F600",
		"\xff", "shop\xc0", "\xc0\x80", "\xed\xa0\x80", "a\x00b", "a\x7fb",
		strings.Repeat("k", 63), strings.Repeat("k", 64), strings.Repeat("k", 65), strings.Repeat("k", 200),
		strings.Repeat("k", 63) + "\u00e9", strings.Repeat("k", 64) + ":",
	}
	// Every single byte between two letters: each forbidden ASCII character
	// (glob characters, braces, whitespace, ':', the rest of punctuation and
	// control characters) and each byte that cannot start valid UTF-8.
	for b := range 256 {
		table = append(table, "k"+string([]byte{byte(b)})+"k")
	}

	ctx := context.Background()
	ns := newNamespace(t)
	httpClient, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/apis/%s/namespaces/%s/cachepolicies?dryRun=All",
		strings.TrimSuffix(env.Config.Host, "/"), v1alpha1.GroupVersion.String(), ns)

	accepted, rejected := 0, 0
	for i, kp := range table {
		libErr := keyspace.ValidateKeyPrefix(kp)
		status, body := postPolicy(ctx, t, httpClient, url, fmt.Sprintf("kp-%d", i), kp)
		switch {
		case status == http.StatusCreated && libErr == nil:
			accepted++
		case status == http.StatusUnprocessableEntity && libErr != nil:
			rejected++
			if !strings.Contains(body, "spec.keyPrefix") {
				t.Errorf("keyPrefix %q: the API server rejected the policy for another reason: %s", kp, body)
			}
		case status == http.StatusCreated:
			t.Errorf("keyPrefix %q: the API server accepts it, ValidateKeyPrefix rejects it: %v", kp, libErr)
		case status == http.StatusUnprocessableEntity:
			t.Errorf("keyPrefix %q: ValidateKeyPrefix accepts it, the API server rejects it: %s", kp, body)
		default:
			t.Errorf("keyPrefix %q: unexpected answer %d from the API server: %s", kp, status, body)
		}
	}
	t.Logf("%d key prefixes: %d accepted and %d rejected by both", len(table), accepted, rejected)
	if accepted < 10 || rejected < 200 {
		t.Errorf("the table tests too little: %d accepted, %d rejected", accepted, rejected)
	}
}

// postPolicy creates (dry run) a valid policy with keyPrefix kp and returns
// the API server's status code and body.
func postPolicy(ctx context.Context, t *testing.T, c *http.Client, url, name, kp string) (int, string) {
	t.Helper()
	const placeholder = "KEYPREFIX-PLACEHOLDER"
	spec := validSpec()
	spec["keyPrefix"] = placeholder
	obj := map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "CachePolicy",
		"metadata":   map[string]any{"name": name},
		"spec":       spec,
	}
	doc, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	doc = bytes.Replace(doc, []byte(`"`+placeholder+`"`), rawJSONString(kp), 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// rawJSONString quotes s as a JSON string, leaving bytes that are not valid
// UTF-8 as they are (encoding/json would replace them with U+FFFD).
func rawJSONString(s string) []byte {
	if utf8.ValidString(s) {
		b, _ := json.Marshal(s)
		return b
	}
	var b bytes.Buffer
	b.WriteByte('"')
	for i := range len(s) {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.Bytes()
}
