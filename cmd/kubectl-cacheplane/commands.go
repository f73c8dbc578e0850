package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

func (c *cli) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a CachePolicy's conditions, last invalidation run and per-prefix state",
		Example: `  kubectl cacheplane status demo
  kubectl cacheplane status demo -n shop --context prod`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, ns, err := c.client()
			if err != nil {
				return err
			}
			p := &cachev1alpha1.CachePolicy{}
			if err := cl.Get(cmd.Context(), types.NamespacedName{Namespace: ns, Name: args[0]}, p); err != nil {
				return err
			}
			printStatus(c.out(), p, time.Now())
			return nil
		},
	}
}

// printStatus writes a policy's state for people: conditions, the last run and
// a table of prefixes.
func printStatus(w0 io.Writer, p *cachev1alpha1.CachePolicy, now time.Time) {
	w := tabwriter.NewWriter(w0, 0, 4, 2, ' ', 0)
	defer w.Flush()
	st := p.Status
	fmt.Fprintf(w, "Name:\t%s\nNamespace:\t%s\nKey prefix:\t%s\nRedis:\t%s\n", p.Name, p.Namespace, p.Spec.KeyPrefix, p.Spec.Redis.URL)
	synced := "never synced"
	if st.LastStatsSync != nil {
		synced = "synced " + ago(st.LastStatsSync.Time, now) + " ago"
	}
	fmt.Fprintf(w, "Hit ratio:\t%s (%d hits, %d misses, %d errors; %s)\n", orDash(st.HitRatio), st.Hits, st.Misses, st.Errors, synced)
	fmt.Fprintf(w, "\nCONDITION\tSTATUS\tREASON\tAGE\tMESSAGE\n")
	for _, cond := range st.Conditions {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cond.Type, cond.Status, cond.Reason, ago(cond.LastTransitionTime.Time, now), cond.Message)
	}
	fmt.Fprintln(w)
	if run := st.LastInvalidation; run != nil {
		fmt.Fprintf(w, "Last invalidation:\t%s\n", run.Phase)
		fmt.Fprintf(w, "  Trigger:\t%s (token %q)\n", run.Trigger, run.Token)
		fmt.Fprintf(w, "  Prefixes:\t%s\n", strings.Join(run.Prefixes, ", "))
		if run.StartedAt != nil {
			fmt.Fprintf(w, "  Started:\t%s ago\n", ago(run.StartedAt.Time, now))
		}
		fmt.Fprintf(w, "  Keys deleted:\t%d\n  Attempts:\t%d\n", run.KeysDeleted, run.Attempts)
		if run.Message != "" {
			fmt.Fprintf(w, "  Message:\t%s\n", run.Message)
		}
	} else {
		fmt.Fprintf(w, "Last invalidation:\tnone\n")
	}
	fmt.Fprintf(w, "\nPREFIX\tGENERATION\tTTL\tHITS\tMISSES\tERRORS\tHIT RATIO\n")
	for _, ps := range st.Prefixes {
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%d\t%d\t%s\n", ps.Name, ps.Generation, ps.TTL.Duration, ps.Hits, ps.Misses, ps.Errors, orDash(ps.HitRatio))
	}
}

func (c *cli) invalidateCommand() *cobra.Command {
	var (
		prefixes []string
		waitRun  bool
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "invalidate NAME",
		Short: "Start an invalidation run (a new spec.invalidation.token) and optionally wait for it",
		Long: `invalidate sets spec.invalidation.token to a new unique value, which makes the
manager run one invalidation: every selected prefix's generation is bumped at
once (workloads treat older entries as misses), then its keys are deleted.

--prefix P (repeatable) also sets spec.invalidation.prefixes to the given
prefixes. The API has no per-run prefix list: spec.invalidation.prefixes is
part of the spec, so it stays in effect for later token runs, the schedule and
watches that name no prefixes of their own, until you change it again.

--wait follows status.lastInvalidation until the run for the new token
completes, and prints its result. Exit codes: 0 the run completed; 1 an
attempt failed (the manager keeps retrying it with backoff; follow it with
"kubectl cacheplane status") or another error; 2 --timeout passed first.`,
		Example: `  kubectl cacheplane invalidate demo
  kubectl cacheplane invalidate demo --prefix users --wait --timeout 2m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, ns, err := c.client()
			if err != nil {
				return err
			}
			key := types.NamespacedName{Namespace: ns, Name: args[0]}
			token, err := newToken()
			if err != nil {
				return err
			}
			if err := startRun(cmd.Context(), cl, key, token, prefixes); err != nil {
				return err
			}
			fmt.Fprintf(c.out(), "cachepolicy/%s: spec.invalidation.token set to %s", key.Name, token)
			if len(prefixes) > 0 {
				fmt.Fprintf(c.out(), ", spec.invalidation.prefixes to [%s]", strings.Join(prefixes, ", "))
			}
			fmt.Fprintln(c.out())
			if !waitRun {
				return nil
			}
			return waitForRun(cmd.Context(), cl, key, token, timeout, c.out())
		},
	}
	cmd.Flags().StringSliceVar(&prefixes, "prefix", nil, "Prefix to invalidate (repeatable); sets spec.invalidation.prefixes, which persists. Default: what the spec selects (every prefix unless spec.invalidation.prefixes says otherwise).")
	cmd.Flags().BoolVar(&waitRun, "wait", false, "Wait until the run completes and print its result.")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "How long --wait waits; exit code 2 when it passes.")
	return cmd
}

// newToken returns a token no earlier run can have had.
func newToken() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "kubectl-cacheplane-" + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b), nil
}

// startRun patches the token (and the prefixes) with a merge patch, so other
// fields of spec.invalidation stay as they are.
func startRun(ctx context.Context, cl client.Client, key types.NamespacedName, token string, prefixes []string) error {
	inv := map[string]any{"token": token}
	if len(prefixes) > 0 {
		inv["prefixes"] = prefixes
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"invalidation": inv}})
	if err != nil {
		return err
	}
	p := &cachev1alpha1.CachePolicy{}
	p.Namespace, p.Name = key.Namespace, key.Name
	return cl.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch))
}

// waitForRun polls the policy until the token run completes (nil), an attempt
// fails (an error) or timeout passes (errTimeout).
func waitForRun(ctx context.Context, cl client.Client, key types.NamespacedName, token string, timeout time.Duration, out io.Writer) error {
	var (
		run   *cachev1alpha1.InvalidationStatus
		ready *metav1.Condition
	)
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		// Each read has its own deadline, not --timeout's: a read cut short
		// by --timeout would be reported as an error (exit 1), not as a
		// timeout (exit 2); the poll checks --timeout between reads.
		gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		p := &cachev1alpha1.CachePolicy{}
		if err := cl.Get(gctx, key, p); err != nil {
			return false, err
		}
		run = p.Status.LastInvalidation
		ready = meta.FindStatusCondition(p.Status.Conditions, cachev1alpha1.ConditionReady)
		if run == nil || run.Token != token || run.Trigger != cachev1alpha1.TriggerToken {
			return false, nil
		}
		switch run.Phase {
		case cachev1alpha1.InvalidationComplete:
			return true, nil
		case cachev1alpha1.InvalidationFailed:
			return false, fmt.Errorf("invalidation run for token %s failed: %s", token, run.Message)
		}
		return false, nil
	})
	switch {
	case err == nil:
		fmt.Fprintf(out, "invalidation complete: prefixes [%s], %s\n", strings.Join(run.Prefixes, ", "), run.Message)
		return nil
	case wait.Interrupted(err) && ctx.Err() == nil:
		where := "not started yet"
		if ready != nil && ready.Status != metav1.ConditionTrue {
			// A run cannot start while Redis is unreachable; it starts when Redis is back.
			where += fmt.Sprintf("; Ready=%s %s: %s", ready.Status, ready.Reason, ready.Message)
		}
		if run != nil && run.Token == token {
			where = fmt.Sprintf("phase %s, %d keys deleted so far", run.Phase, run.KeysDeleted)
		}
		return fmt.Errorf("%w after %s waiting for the invalidation run for token %s (%s); it goes on in the manager", errTimeout, timeout, token, where)
	}
	return err
}

func (c *cli) statsCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "List CachePolicies with their hit ratios, highest first",
		Example: `  kubectl cacheplane stats
  kubectl cacheplane stats --all-namespaces`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, ns, err := c.client()
			if err != nil {
				return err
			}
			list := &cachev1alpha1.CachePolicyList{}
			var opts []client.ListOption
			if !all {
				opts = append(opts, client.InNamespace(ns))
			}
			if err := cl.List(cmd.Context(), list, opts...); err != nil {
				return err
			}
			printStats(c.out(), list.Items, all)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "List the policies of every namespace.")
	return cmd
}

// printStats writes one row per policy, sorted by hit ratio, highest first;
// policies without lookups yet come last.
func printStats(w0 io.Writer, items []cachev1alpha1.CachePolicy, withNamespace bool) {
	ratio := func(p *cachev1alpha1.CachePolicy) float64 {
		if n := p.Status.Hits + p.Status.Misses; n > 0 {
			return float64(p.Status.Hits) / float64(n)
		}
		return -1
	}
	slices.SortStableFunc(items, func(a, b cachev1alpha1.CachePolicy) int {
		ra, rb := ratio(&a), ratio(&b)
		switch {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	w := tabwriter.NewWriter(w0, 0, 4, 2, ' ', 0)
	defer w.Flush()
	if withNamespace {
		fmt.Fprint(w, "NAMESPACE\t")
	}
	fmt.Fprintln(w, "NAME\tREADY\tHIT RATIO\tHITS\tMISSES\tERRORS\tLAST RUN")
	for i := range items {
		p := &items[i]
		if withNamespace {
			fmt.Fprintf(w, "%s\t", p.Namespace)
		}
		ready := "Unknown"
		for _, cond := range p.Status.Conditions {
			if cond.Type == cachev1alpha1.ConditionReady {
				ready = string(cond.Status)
			}
		}
		last := "-"
		if run := p.Status.LastInvalidation; run != nil {
			last = string(run.Phase)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.Name, ready, orDash(p.Status.HitRatio), p.Status.Hits, p.Status.Misses, p.Status.Errors, last)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago formats the time since t as kubectl does ("5m3s").
func ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(now.Sub(t))
}
