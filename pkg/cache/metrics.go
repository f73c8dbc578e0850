package cache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// NewCollector returns a Prometheus collector of c's counters, by key prefix:
// cacheplane_cache_{hits,misses,errors}_total and the loaders' duration
// histogram cacheplane_cache_load_duration_seconds, each labelled with the
// KeyPrefix. Register it yourself, for example with prometheus.MustRegister.
//
// Label values must be valid UTF-8, keys need not be: in a prefix label each
// run of invalid bytes is written as U+FFFD, and prefixes that become equal
// ("\xff" and "\xfe") are added up under that one label. A key can never make
// a scrape fail.
func NewCollector(c *Cache) prometheus.Collector {
	constLabels := prometheus.Labels{"key_prefix": labelValue(c.cfg.KeyPrefix)}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"prefix"}, constLabels)
	}
	return &collector{
		c:      c,
		hits:   desc("cacheplane_cache_hits_total", "Reads answered from the cache."),
		misses: desc("cacheplane_cache_misses_total", "Reads that found no usable entry."),
		errors: desc("cacheplane_cache_errors_total", "Failed Redis calls and undecodable values."),
	}
}

type collector struct {
	c                    *Cache
	hits, misses, errors *prometheus.Desc
}

func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- col.hits
	ch <- col.misses
	ch <- col.errors
	col.c.loadTime.Describe(ch)
}

func (col *collector) Collect(ch chan<- prometheus.Metric) {
	// Added up by label: two states with one label would be a duplicate
	// series, which fails the whole scrape.
	type counts struct{ hits, misses, errors float64 }
	byLabel := map[string]*counts{}
	for _, st := range *col.c.states.Load() {
		n := byLabel[st.label]
		if n == nil {
			n = &counts{}
			byLabel[st.label] = n
		}
		n.hits += float64(st.allHits())
		n.misses += float64(st.misses.Load())
		n.errors += float64(st.errors.Load())
	}
	for label, n := range byLabel {
		for _, m := range [...]struct {
			desc  *prometheus.Desc
			value float64
		}{{col.hits, n.hits}, {col.misses, n.misses}, {col.errors, n.errors}} {
			// Not MustNewConstMetric: a panic here would take the scrape
			// (and the process) down; labelValue makes errors impossible,
			// and a series left out is better than none at all.
			if metric, err := prometheus.NewConstMetric(m.desc, prometheus.CounterValue, m.value, label); err == nil {
				ch <- metric
			}
		}
	}
	col.c.loadTime.Collect(ch)
}
