# cacheplane: kubebuilder's usual targets. `make help` lists them.

IMG ?= cacheplane/manager:latest
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
# Tools built from their Go modules at pinned versions into bin/ (no binary
# downloads); bump a version here and the next make rebuilds that tool.
KUSTOMIZE_VERSION ?= v5.8.2
HELM_VERSION ?= v3.22.0
GOLANGCI_LINT_VERSION ?= v2.15.0
KUSTOMIZE ?= $(LOCALBIN)/kustomize
HELM ?= $(LOCALBIN)/helm
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
# build-installer writes here; tests point it at a temporary file.
INSTALLER ?= dist/install.yaml
# What `make manifests generate build-installer helm-sync` writes; verify-gen
# fails when running them changes any of it.
GENERATED := config/crd/bases config/rbac/role.yaml api/v1alpha1/zz_generated.deepcopy.go dist/install.yaml charts/cacheplane/files
KUBECTL ?= kubectl
GO_TEST_FLAGS ?= -race -count=1 -timeout 30m
# Every Go module of the repository: `go test ./...` stops at a nested go.mod,
# so vet, lint and test walk each one (the root last: its results close the log).
GO_MODULES ?= pkg/cache bench .

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC from the API types and kubebuilder markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet in every module.
	@for m in $(GO_MODULES); do echo "go vet ($$m)"; (cd $$m && go vet ./...) || exit 1; done

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (.golangci.yml) in every module.
	@for m in $(GO_MODULES); do echo "golangci-lint ($$m)"; (cd $$m && $(GOLANGCI_LINT) run ./...) || exit 1; done

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint and apply its fixes.
	$(GOLANGCI_LINT) run --fix ./...

.PHONY: verify-gen
verify-gen: ## Regenerate CRD, RBAC, deepcopy, dist/install.yaml and the chart's files; fail if that changed any.
	@before="$$(find $(GENERATED) -type f 2>/dev/null | sort | xargs -r sha256sum || true)"; \
	  $(MAKE) --no-print-directory manifests generate build-installer helm-sync >/dev/null; \
	  after="$$(find $(GENERATED) -type f 2>/dev/null | sort | xargs -r sha256sum || true)"; \
	  if [ "$$before" != "$$after" ]; then \
	    diff <(echo "$$before") <(echo "$$after") || true; \
	    echo "generated files were stale (above: before and after regenerating); review git diff and commit them" >&2; \
	    exit 1; \
	  fi; \
	  if [ -n "$$(git status --porcelain -- $(GENERATED) 2>/dev/null)" ]; then \
	    echo "    generated files are up to date with their sources but not committed:"; \
	    git status --short -- $(GENERATED); \
	  fi

.PHONY: test
test: ## Run every test with -race against a real redis-server and a real API server (envtest).
	@echo "==> make lint (golangci-lint $(GOLANGCI_LINT_VERSION))"
	@$(MAKE) --no-print-directory lint
	@echo "==> make verify-gen (CRD, RBAC, deepcopy, dist/install.yaml, chart files match their sources)"
	@$(MAKE) --no-print-directory verify-gen
	@echo "==> building helm $(HELM_VERSION) into bin/ (the install tests use it)"
	@$(MAKE) --no-print-directory helm
	@echo "==> making sure redis-server is installed"
	@hack/ensure-redis.sh
	@echo "==> making sure prometheus and promtool are installed"
	@hack/ensure-prometheus.sh
	@echo "==> finding or building envtest binaries (kube-apiserver, etcd, kubectl)"
	@assets="$$(hack/envtest.sh)"; echo "    KUBEBUILDER_ASSETS=$$assets"; \
	  for m in $(GO_MODULES); do \
	    echo "==> go vet ./... (module $$m)"; (cd $$m && go vet ./...); \
	  done; \
	  for m in $(GO_MODULES); do \
	    echo "==> go test $(GO_TEST_FLAGS) ./... (module $$m)"; \
	    (cd $$m && KUBEBUILDER_ASSETS="$$assets" HELM="$(HELM)" go test $(GO_TEST_FLAGS) ./...); \
	  done

.PHONY: bench
bench: ## Run the library benchmarks against a real redis-server.
	@hack/ensure-redis.sh
	@# bench/ is its own module (the peers never enter go.mod): it compares
	@# pkg/cache and the purge engine with them and writes docs/benchmarks.md.
	cd bench && go run . $(BENCH_FLAGS)
	@if [ "$(GOTEST)" = 1 ]; then \
	  echo "==> go test -bench . (module pkg/cache)"; \
	  cd pkg/cache && go test -run '^$$' -bench . -benchmem .; \
	fi

##@ Build

.PHONY: build
build: ## Build the manager and the kubectl plugin (bin/kubectl-cacheplane; put bin/ on PATH for `kubectl cacheplane`).
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/kubectl-cacheplane ./cmd/kubectl-cacheplane

.PHONY: build-installer
build-installer: manifests generate kustomize ## Write dist/install.yaml (or INSTALLER=path): CRDs, RBAC, the manager running IMG, metrics Service.
	@hack/build-installer.sh "$(KUSTOMIZE)" "$(IMG)" "$(INSTALLER)"
	@echo "wrote $(INSTALLER) (image $(IMG))"

.PHONY: helm-sync
helm-sync: ## Copy the CRDs, the manager's RBAC, the ServiceMonitor, alerts and dashboard from config/ into charts/cacheplane/files.
	@rm -rf charts/cacheplane/files
	@mkdir -p charts/cacheplane/files/crd charts/cacheplane/files/rbac charts/cacheplane/files/prometheus charts/cacheplane/files/grafana
	@cp config/crd/bases/*.yaml charts/cacheplane/files/crd/
	@cp config/rbac/role.yaml charts/cacheplane/files/rbac/
	@cp config/prometheus/monitor.yaml config/prometheus/rules.yaml charts/cacheplane/files/prometheus/
	@cp config/grafana/cacheplane-dashboard.json charts/cacheplane/files/grafana/

.PHONY: run
run: ## Run the manager against the cluster in $KUBECONFIG.
	go run ./cmd/manager

.PHONY: docker-build
docker-build: ## Build the manager image $(IMG) (needs a Docker engine).
	docker build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the manager image $(IMG).
	docker push $(IMG)

.PHONY: demo
demo: ## Local control plane + Redis + manager + sample policy + workload; Ctrl-C cleans up. DEMO_FLAGS=--prometheus adds a Prometheus.
	@hack/ensure-redis.sh
	@if [[ " $(DEMO_FLAGS) " == *" --prometheus"* ]]; then hack/ensure-prometheus.sh; fi
	@assets="$$(hack/envtest.sh)"; KUBEBUILDER_ASSETS="$$assets" go run ./hack/demo $(DEMO_FLAGS)

.PHONY: dashboard-png
dashboard-png: ## Run the demo with a Prometheus through its invalidation and draw the dashboard's hit-ratio and run panels into docs/dashboard.png.
	@hack/ensure-redis.sh
	@hack/ensure-prometheus.sh
	@assets="$$(hack/envtest.sh)"; KUBEBUILDER_ASSETS="$$assets" go run ./hack/demo --exit-after-invalidation --hot-keys 500 --hit-ratio 75 --dashboard-png docs/dashboard.png $(DEMO_FLAGS)

##@ Deployment

.PHONY: install
install: ## Install the CRDs into the cluster in $KUBECONFIG.
	$(KUBECTL) apply -k config/crd

.PHONY: uninstall
uninstall: ## Remove the CRDs from the cluster in $KUBECONFIG.
	$(KUBECTL) delete --ignore-not-found -k config/crd

.PHONY: deploy
deploy: ## Deploy the manager (CRDs, RBAC, Deployment) running image $(IMG) to the cluster in $KUBECONFIG.
	$(KUBECTL) kustomize config/default | sed 's|image: cacheplane/manager:latest|image: $(IMG)|' | $(KUBECTL) apply -f -

.PHONY: undeploy
undeploy: ## Remove the manager from the cluster in $KUBECONFIG.
	$(KUBECTL) delete --ignore-not-found -k config/default

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into ./bin.
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: kustomize
kustomize: ## Build kustomize (KUSTOMIZE_VERSION) into ./bin.
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: helm
helm: ## Build helm (HELM_VERSION) into ./bin.
	$(call go-install-tool,$(HELM),helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))

.PHONY: golangci-lint
golangci-lint: ## Build golangci-lint (GOLANGCI_LINT_VERSION) into ./bin.
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: lint-tools
lint-tools: golangci-lint helm kustomize ## Build every pinned tool (slow once on 2 cores; start it early).

# go-install-tool builds package $(2) at version $(3) into $(1)-$(3) and points
# the symlink $(1) at it, so changing a version above rebuilds the tool.
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$(1)-$(3)" ] || { \
  set -e; \
  echo "building $(2)@$(3) into $(LOCALBIN)"; \
  rm -f "$(1)"; \
  GOBIN="$(LOCALBIN)" go install "$(2)@$(3)"; \
  mv "$(1)" "$(1)-$(3)"; \
}; \
ln -sf "$(1)-$(3)" "$(1)"
endef

.PHONY: envtest
envtest: ## Find or build envtest's binaries and print their directory.
	@hack/envtest.sh
