package main

import (
	"context"
	"fmt"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
	"github.com/cacheplane/cacheplane/internal/testenv"
)

var restCfg *rest.Config

func TestMain(m *testing.M) {
	env, cfg, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	restCfg = cfg
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func TestCacheOptionsParsesTheList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ", nil},
		{"team-a", []string{"team-a"}},
		{" team-a, team-b ,", []string{"team-a", "team-b"}},
	} {
		opts, err := cacheOptions(tc.in)
		if err != nil {
			t.Fatalf("cacheOptions(%q): %v", tc.in, err)
		}
		if len(opts.DefaultNamespaces) != len(tc.want) {
			t.Errorf("cacheOptions(%q) watches %v, want %v", tc.in, opts.DefaultNamespaces, tc.want)
		}
		for _, ns := range tc.want {
			if _, ok := opts.DefaultNamespaces[ns]; !ok {
				t.Errorf("cacheOptions(%q) does not watch %q: %v", tc.in, ns, opts.DefaultNamespaces)
			}
		}
	}
	if _, err := cacheOptions("team-a,Team_B"); err == nil {
		t.Error("cacheOptions accepted the namespace name Team_B")
	}
}

// With --watch-namespaces the manager's cache, which every controller read
// goes through, serves the listed namespaces and refuses the others, so
// policies elsewhere never reach the reconciler.
func TestWatchNamespacesRestrictsTheCache(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.New(restCfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"watched", "unwatched"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		p := &cachev1alpha1.CachePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"},
			Spec: cachev1alpha1.CachePolicySpec{
				Redis:     cachev1alpha1.RedisSpec{URL: "redis://127.0.0.1:6379/0"},
				KeyPrefix: ns,
				Prefixes:  []cachev1alpha1.PrefixSpec{{Name: "users"}},
			},
		}
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	opts, err := cacheOptions("watched")
	if err != nil {
		t.Fatal(err)
	}
	opts.Scheme = testenv.Scheme()
	informers, err := cache.New(restCfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = informers.Start(ctx) }()

	var list cachev1alpha1.CachePolicyList
	if err := informers.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Namespace != "watched" {
		t.Fatalf("the cache lists %d policies (want only watched/p): %+v", len(list.Items), list.Items)
	}
	var p cachev1alpha1.CachePolicy
	if err := informers.Get(ctx, client.ObjectKey{Namespace: "unwatched", Name: "p"}, &p); err == nil {
		t.Fatal("the cache served unwatched/p")
	}
}
