package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/internal/testprom"
)

func TestRewriteSampleKeepsThePolicyButTheURL(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", samplePath))
	if err != nil {
		t.Fatal(err)
	}
	out, err := rewriteSample(raw, "redis://127.0.0.1:4242/0")
	if err != nil {
		t.Fatal(err)
	}
	var before, after cachev1alpha1.CachePolicy
	if err := yaml.UnmarshalStrict(raw, &before); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(out, &after); err != nil {
		t.Fatal(err)
	}
	if after.Spec.Redis.URL != "redis://127.0.0.1:4242/0" {
		t.Errorf("url %q", after.Spec.Redis.URL)
	}
	// The demo relies on the sample's name, key prefix and token.
	if after.Name != "demo" || after.Spec.KeyPrefix != "demo" || after.Spec.Invalidation.Token != "v1" {
		t.Errorf("sample changed under the demo: name %q keyPrefix %q token %q", after.Name, after.Spec.KeyPrefix, after.Spec.Invalidation.Token)
	}
	after.Spec.Redis.URL = before.Spec.Redis.URL
	a, _ := yaml.Marshal(after)
	b, _ := yaml.Marshal(before)
	if string(a) != string(b) {
		t.Errorf("rewriting changed more than the URL:\n%s\nvs\n%s", a, b)
	}
	if _, err := rewriteSample([]byte("kind: CachePolicy\n"), "redis://x:1/0"); err == nil {
		t.Error("a document without spec.redis was accepted")
	}
}

func TestShellJoinQuotesWhatAShellWouldSplit(t *testing.T) {
	got := shellJoin([]string{"patch", "cachepolicy", "demo", "-p", `{"spec":{"invalidation":{"token":"v2"}}}`, "it's"})
	want := `patch cachepolicy demo -p '{"spec":{"invalidation":{"token":"v2"}}}' 'it'\''s'`
	if got != want {
		t.Errorf("shellJoin = %s\nwant        %s", got, want)
	}
}

func TestParseRatio(t *testing.T) {
	for in, want := range map[string]float64{"94.8%": 94.8, "100.0%": 100, "0.0%": 0} {
		if got, ok := parseRatio(in); !ok || got != want {
			t.Errorf("parseRatio(%q) = %v, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "94.8", "n/a%"} {
		if _, ok := parseRatio(in); ok {
			t.Errorf("parseRatio(%q) accepted", in)
		}
	}
	if strings.Contains(shellJoin([]string{"get", "cachepolicies"}), "'") {
		t.Error("plain words were quoted")
	}
}

func TestSampleValueSkipsEmptyAndNaN(t *testing.T) {
	if f, ok := sampleValue([]testprom.Sample{{Value: [2]any{1700000000.0, "0.875"}}}); !ok || f != 0.875 {
		t.Errorf("sampleValue = %v, %v", f, ok)
	}
	for _, v := range [][]testprom.Sample{nil, {{Value: [2]any{1700000000.0, "NaN"}}}, {{}, {}}} {
		if f, ok := sampleValue(v); ok {
			t.Errorf("sampleValue(%v) = %v, true", v, f)
		}
	}
}
