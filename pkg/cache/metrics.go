package cache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// NewCollector returns a Prometheus collector of c's counters, by key prefix:
// cacheplane_cache_{hits,misses,errors}_total and the loaders' duration
// histogram cacheplane_cache_load_duration_seconds, each labelled with the
// KeyPrefix. Register it yourself, for example with prometheus.MustRegister.
func NewCollector(c *Cache) prometheus.Collector {
	constLabels := prometheus.Labels{"key_prefix": c.cfg.KeyPrefix}
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
	for name, st := range *col.c.states.Load() {
		ch <- prometheus.MustNewConstMetric(col.hits, prometheus.CounterValue, float64(st.allHits()), name)
		ch <- prometheus.MustNewConstMetric(col.misses, prometheus.CounterValue, float64(st.misses.Load()), name)
		ch <- prometheus.MustNewConstMetric(col.errors, prometheus.CounterValue, float64(st.errors.Load()), name)
	}
	col.c.loadTime.Collect(ch)
}
