package cache

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Span names and attributes: what a trace backend groups and filters by.
const (
	tracerName = "github.com/cacheplane/cacheplane/pkg/cache"

	spanGetOrLoad         = "cache.GetOrLoad"
	spanHTTP              = "cache.http"
	spanInvalidate        = "cache.Invalidate"
	spanInvalidatePrefix  = "cache.InvalidatePrefix"
	spanInvalidateOnWrite = "cache.InvalidateOnWrite"

	attrOutcome  = "cache.outcome"
	attrPrefix   = "cache.prefix"
	attrKey      = "cache.key"
	attrLoadTime = "cache.load.duration_ms"

	outcomeHit         = "hit"
	outcomeNearHit     = "near-hit"
	outcomeNegativeHit = "negative-hit"
	outcomeMiss        = "miss"
)

// unsetGlobal is the global provider as it is before anyone registers one:
// a delegating no-op. While otel.GetTracerProvider still returns it, the
// cache starts no span at all, so that an application without tracing pays
// nothing (a no-op Start still allocates a context).
var unsetGlobal = otel.GetTracerProvider()

// tracerCache remembers the Tracer of the last provider seen, so a call
// does not look it up in the provider (a lock and a map in the SDK).
type tracerCache struct{ p atomic.Pointer[tracerEntry] }

type tracerEntry struct {
	tp trace.TracerProvider
	t  trace.Tracer
}

// tracer returns the Tracer for the cache's spans, or nil when nothing
// would record them (no provider registered, or a no-op one).
func (c *Cache) tracer() trace.Tracer {
	tp := c.cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
		if tp == unsetGlobal {
			return nil
		}
	}
	if _, ok := tp.(tracenoop.TracerProvider); ok {
		return nil
	}
	canCompare := reflect.TypeOf(tp).Comparable()
	if e := c.tracing.p.Load(); e != nil && canCompare && e.tp == tp {
		return e.t
	}
	t := tp.Tracer(tracerName)
	if canCompare {
		c.tracing.p.Store(&tracerEntry{tp: tp, t: t})
	}
	return t
}

// spanInfo collects what a traced call learns on its way (nil: untraced;
// its methods do nothing then).
type spanInfo struct {
	outcome string
	load    time.Duration // how long this call waited for its load
	loaded  bool
	status  int // the handler's status on a middleware miss
}

func (s *spanInfo) setOutcome(o string) {
	if s != nil {
		s.outcome = o
	}
}

func (s *spanInfo) setLoad(d time.Duration) {
	if s != nil {
		s.load, s.loaded = d, true
	}
}

// startSpan starts a span of the cache's under ctx's span. prefix is
// always an attribute; key only with Config.TraceKeys, since keys often
// carry user data.
func (c *Cache) startSpan(ctx context.Context, t trace.Tracer, name, prefix, keyOrPattern string) (context.Context, trace.Span) {
	attrs := make([]attribute.KeyValue, 1, 2)
	attrs[0] = attribute.String(attrPrefix, prefix)
	if c.cfg.TraceKeys {
		attrs = append(attrs, attribute.String(attrKey, keyOrPattern))
	}
	return t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
}

// endSpan records info and err on span and ends it. A "no value"
// (ErrNoValue) is a result, not an error.
func endSpan(span trace.Span, info *spanInfo, err error) {
	if info != nil {
		if info.outcome != "" {
			span.SetAttributes(attribute.String(attrOutcome, info.outcome))
		}
		if info.loaded {
			span.SetAttributes(attribute.Float64(attrLoadTime, float64(info.load)/float64(time.Millisecond)))
		}
	}
	if err != nil && !errors.Is(err, ErrNoValue) {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
