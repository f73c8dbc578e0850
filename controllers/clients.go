package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/cacheplane/cacheplane/internal/redisconn"
)

// storeCache keeps one open Store per policy and replaces it when the
// connection options (URL, user, Secret's password) change.
type storeCache struct {
	open StoreFactory

	mu     sync.Mutex
	stores map[types.NamespacedName]cachedStore
}

type cachedStore struct {
	fingerprint string
	store       Store
}

func newStoreCache(open StoreFactory) *storeCache {
	return &storeCache{open: open, stores: map[types.NamespacedName]cachedStore{}}
}

// get returns the policy's store for o, opening a new one when o changed.
func (c *storeCache) get(policy types.NamespacedName, o redisconn.Options) (Store, error) {
	fp := fingerprint(o)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.stores[policy]; ok {
		if cur.fingerprint == fp {
			return cur.store, nil
		}
		_ = cur.store.Close()
		delete(c.stores, policy)
	}
	s, err := c.open(o)
	if err != nil {
		return nil, err
	}
	c.stores[policy] = cachedStore{fingerprint: fp, store: s}
	return s, nil
}

// forget closes the policy's store, if any.
func (c *storeCache) forget(policy types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.stores[policy]; ok {
		_ = cur.store.Close()
		delete(c.stores, policy)
	}
}

// closeAll closes every store (manager shutdown).
func (c *storeCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, cur := range c.stores {
		_ = cur.store.Close()
		delete(c.stores, k)
	}
}

// fingerprint identifies connection options without keeping the password in a
// comparable (and printable) field.
func fingerprint(o redisconn.Options) string {
	h := sha256.New()
	for _, s := range []string{o.URL, o.Username, o.Password} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
