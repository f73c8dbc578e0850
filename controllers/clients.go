package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/cacheplane/cacheplane/pkg/cache/redisconn"
)

// storeCache shares one open Store among the policies whose connections are
// built from the same inputs (a thousand policies on one Redis hold one pool,
// not a thousand), and replaces a policy's store when its inputs change.
type storeCache struct {
	open StoreFactory

	mu       sync.Mutex
	byFP     map[string]*sharedStore
	policyFP map[types.NamespacedName]string
}

type sharedStore struct {
	store Store
	users int
}

func newStoreCache(open StoreFactory) *storeCache {
	return &storeCache{open: open, byFP: map[string]*sharedStore{}, policyFP: map[types.NamespacedName]string{}}
}

// get returns the store for a connection fingerprinted fp, opening it on
// first use, and moves the policy to it.
func (c *storeCache) get(policy types.NamespacedName, fp string, o redisconn.Options) (Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.policyFP[policy] == fp {
		return c.byFP[fp].store, nil
	}
	shared, ok := c.byFP[fp]
	if !ok {
		s, err := c.open(o)
		if err != nil {
			return nil, err
		}
		shared = &sharedStore{store: s}
		c.byFP[fp] = shared
	}
	c.releaseLocked(policy)
	shared.users++
	c.policyFP[policy] = fp
	return shared.store, nil
}

// forget releases the policy's store; the last user closes it.
func (c *storeCache) forget(policy types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(policy)
}

func (c *storeCache) releaseLocked(policy types.NamespacedName) {
	fp, ok := c.policyFP[policy]
	if !ok {
		return
	}
	delete(c.policyFP, policy)
	if shared := c.byFP[fp]; shared != nil {
		if shared.users--; shared.users <= 0 {
			_ = shared.store.Close()
			delete(c.byFP, fp)
		}
	}
}

// closeAll closes every store (manager shutdown).
func (c *storeCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for fp, shared := range c.byFP {
		_ = shared.store.Close()
		delete(c.byFP, fp)
	}
	clear(c.policyFP)
}

// fingerprint identifies a connection by everything it is built from (spec
// fields, the password, TLS material) without keeping any of it in a
// comparable, printable field.
func fingerprint(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
