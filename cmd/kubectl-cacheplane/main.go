// Command kubectl-cacheplane is the kubectl plugin of cacheplane: on PATH,
// `kubectl cacheplane` runs it. It shows a CachePolicy's state, starts an
// invalidation and waits for it, and ranks policies by hit ratio. It takes
// kubectl's connection flags (-n, --context, --kubeconfig, ...).
//
//	kubectl cacheplane status NAME
//	kubectl cacheplane invalidate NAME [--prefix P]... [--wait] [--timeout 5m]
//	kubectl cacheplane stats [-A]
//
// Exit codes: 0 success; 1 a failed run or any other error; 2 --wait timed
// out before the run finished.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cacheplane/cacheplane/api/v1alpha1"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitTimeout = 2
)

// errTimeout is returned when --wait ran out of time.
var errTimeout = errors.New("timed out")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	os.Exit(execute(ctx, os.Args[1:], streams))
}

// execute runs the command line args and returns the exit code.
func execute(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	cmd := newRootCommand(streams)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errTimeout):
		fmt.Fprintln(streams.ErrOut, "error:", err)
		return exitTimeout
	default:
		fmt.Fprintln(streams.ErrOut, "error:", err)
		return exitFailed
	}
}

// cli is what every subcommand needs: kubectl's connection flags and the
// output streams.
type cli struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
}

func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	c := &cli{flags: genericclioptions.NewConfigFlags(true), streams: streams}
	root := &cobra.Command{
		Use:   "kubectl-cacheplane",
		Short: "Inspect and invalidate cacheplane CachePolicies",
		Long: `kubectl cacheplane shows the state of cacheplane CachePolicies, starts
invalidations and waits for them, and ranks policies by hit ratio.

Exit codes: 0 success; 1 a failed invalidation run or any other error;
2 --wait ran out of time before the run finished.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// "kubectl cacheplane" is how users run it.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl cacheplane"},
	}
	c.flags.AddFlags(root.PersistentFlags())
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.AddCommand(c.statusCommand(), c.invalidateCommand(), c.statsCommand())
	return root
}

// client connects with kubectl's flags and returns the namespace they select.
func (c *cli) client() (client.Client, string, error) {
	cfg, err := c.flags.ToRESTConfig()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := c.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(cachev1alpha1.AddToScheme(scheme))
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	return cl, ns, err
}

func (c *cli) out() io.Writer { return c.streams.Out }
