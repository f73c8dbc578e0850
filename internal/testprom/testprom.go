// Package testprom runs a real Prometheus (the prometheus binary on PATH, see
// hack/ensure-prometheus.sh) for tests and the demo, and reads the queries of
// cacheplane's PrometheusRule and Grafana dashboard so that they can be run
// against it.
package testprom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/cacheplane/cacheplane/pkg/cache/redistest"
)

// Target is one scrape job: plain HTTP, /metrics, on each address.
type Target struct {
	Job   string
	Addrs []string
	// Labels are added to every series of the job (as Kubernetes service
	// discovery would add namespace and pod).
	Labels map[string]string
}

// Server is a running Prometheus.
type Server struct {
	// URL is Prometheus' web address, such as http://127.0.0.1:9090.
	URL string
	// Dir holds its configuration, data and log.
	Dir string

	cmd  *exec.Cmd
	done chan error
}

// Start runs Prometheus scraping targets every interval and evaluating the
// rule files (plain Prometheus rule files) as often. It returns once
// Prometheus is ready. dir is where its files go; Stop does not remove it.
func Start(ctx context.Context, dir string, interval time.Duration, targets []Target, ruleFiles []string) (*Server, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, errors.New("no prometheus on PATH (hack/ensure-prometheus.sh installs Debian's package)")
	}
	type staticConfig struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels,omitempty"`
	}
	type scrapeConfig struct {
		JobName       string         `json:"job_name"`
		StaticConfigs []staticConfig `json:"static_configs"`
	}
	cfg := struct {
		Global struct {
			ScrapeInterval     string `json:"scrape_interval"`
			EvaluationInterval string `json:"evaluation_interval"`
		} `json:"global"`
		RuleFiles     []string       `json:"rule_files,omitempty"`
		ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
	}{RuleFiles: ruleFiles}
	cfg.Global.ScrapeInterval = interval.String()
	cfg.Global.EvaluationInterval = interval.String()
	for _, t := range targets {
		cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, scrapeConfig{JobName: t.Job, StaticConfigs: []staticConfig{{Targets: t.Addrs, Labels: t.Labels}}})
	}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, raw, 0o644); err != nil {
		return nil, err
	}
	port, err := redistest.FreePort()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--web.console.templates=", "--web.console.libraries=",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &Server{URL: "http://" + addr, Dir: dir, cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); logf.Close() }()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-s.done:
			s.done <- err
			return false, fmt.Errorf("prometheus exited: %v\n%s", err, s.Log())
		default:
		}
		resp, err := http.Get(s.URL + "/-/ready")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("prometheus at %s not ready: %w", addr, err)
	}
	return s, nil
}

// Stop stops Prometheus and waits for it.
func (s *Server) Stop() {
	if s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		s.done <- <-s.done
	}
}

// Log returns Prometheus' log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "prometheus.log"))
	return string(b)
}

// Sample is one series of an instant query's result.
type Sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// Query runs an instant query and returns its vector (or, for a scalar, one
// sample without labels). An expression Prometheus cannot parse or evaluate
// is an error.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.api(ctx, "/api/v1/query?"+url.Values{"query": {expr}}.Encode(), &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var v []Sample
		err := json.Unmarshal(data.Result, &v)
		return v, err
	case "scalar":
		var v [2]any
		err := json.Unmarshal(data.Result, &v)
		return []Sample{{Value: v}}, err
	}
	return nil, fmt.Errorf("query %q: result type %s", expr, data.ResultType)
}

// Rule is a rule as /api/v1/rules reports it.
type Rule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Type      string `json:"type"`   // alerting or recording
	Health    string `json:"health"` // ok, err or unknown
	LastError string `json:"lastError"`
	State     string `json:"state"` // alerting rules: inactive, pending, firing
}

// Rules returns every loaded rule.
func (s *Server) Rules(ctx context.Context) ([]Rule, error) {
	var data struct {
		Groups []struct {
			Rules []Rule `json:"rules"`
		} `json:"groups"`
	}
	if err := s.api(ctx, "/api/v1/rules", &data); err != nil {
		return nil, err
	}
	var out []Rule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

func (s *Server) api(ctx context.Context, path string, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: %s: %.200s", path, resp.Status, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

// WriteRuleFile writes the spec.groups of a PrometheusRule manifest (such as
// config/prometheus/rules.yaml) to dst as a plain Prometheus rule file.
func WriteRuleFile(prometheusRule, dst string) error {
	raw, err := os.ReadFile(prometheusRule)
	if err != nil {
		return err
	}
	var obj struct {
		Kind string `json:"kind"`
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("%s: %w", prometheusRule, err)
	}
	if obj.Kind != "PrometheusRule" || len(obj.Spec.Groups) == 0 {
		return fmt.Errorf("%s: not a PrometheusRule with spec.groups", prometheusRule)
	}
	out, err := yaml.Marshal(map[string]any{"groups": obj.Spec.Groups})
	if err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o644)
}

// Query is one query of a dashboard: the panel's title and the expression
// with Grafana's variables replaced so that Prometheus can run it.
type Query struct {
	Panel, Expr string
}

// grafanaVars are the dashboard variables Prometheus does not know, and what
// stands for them in a test: every namespace, and a rate window that holds a
// few scrapes.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "15s",
	"$__range", "5m",
	"${namespace}", ".*",
	"$namespace", ".*",
)

// labelValues matches Grafana's label_values(metric, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// DashboardQueries returns every Prometheus expression of a Grafana dashboard
// JSON file: each panel's targets (rows' nested panels too) and each query
// variable (label_values(m, l) becomes group by (l) (m)).
func DashboardQueries(path string) ([]Query, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []Query
	var walk func([]json.RawMessage) error
	walk = func(ps []json.RawMessage) error {
		for _, r := range ps {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				return err
			}
			for _, t := range p.Targets {
				if strings.TrimSpace(t.Expr) == "" {
					return fmt.Errorf("panel %q has a target without an expression", p.Title)
				}
				out = append(out, Query{Panel: p.Title, Expr: grafanaVars.Replace(t.Expr)})
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(dash.Panels); err != nil {
		return nil, err
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // a plain string
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q.Query))
		if m == nil {
			return nil, fmt.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
		}
		out = append(out, Query{Panel: "variable " + v.Name, Expr: fmt.Sprintf("group by (%s) (%s)", m[2], m[1])})
	}
	return out, nil
}
