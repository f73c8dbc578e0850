package cache

// NearTrackerID returns the CLIENT ID of the near-cache's tracking
// connection, 0 while there is none.
func NearTrackerID(c *Cache) int64 {
	if c.near == nil {
		return 0
	}
	if t := c.near.conn.Load(); t != nil {
		return t.id
	}
	return 0
}
