package v1alpha1

import "time"

// TTLFor returns the time to live of entries under prefix: the prefix's ttl,
// else spec.defaultTTL, else DefaultDefaultTTL. An undeclared prefix gets the
// default TTL, as the library applies it to keys outside every declared prefix.
func (p *CachePolicy) TTLFor(prefix string) time.Duration {
	for _, d := range p.Spec.Prefixes {
		if d.Name == prefix && d.TTL != nil && d.TTL.Duration > 0 {
			return d.TTL.Duration
		}
	}
	if p.Spec.DefaultTTL.Duration > 0 {
		return p.Spec.DefaultTTL.Duration
	}
	// Only an object the API server has not defaulted gets here.
	return DefaultDefaultTTL
}

// InvalidationPrefixes returns the prefixes an invalidation without a more
// specific selection deletes: spec.invalidation.prefixes when given, else every
// declared prefix in declaration order. The result is a new slice the caller may
// modify.
func (s *CachePolicySpec) InvalidationPrefixes() []string {
	if len(s.Invalidation.Prefixes) > 0 {
		return append([]string(nil), s.Invalidation.Prefixes...)
	}
	names := make([]string, 0, len(s.Prefixes))
	for _, d := range s.Prefixes {
		names = append(names, d.Name)
	}
	return names
}
