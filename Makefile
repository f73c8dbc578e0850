# cacheplane: kubebuilder's usual targets. `make help` lists them.

IMG ?= cacheplane/manager:latest
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUBECTL ?= kubectl
GO_TEST_FLAGS ?= -race -count=1 -timeout 30m

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
vet: ## Run go vet.
	go vet ./...

.PHONY: test
test: ## Run every test with -race against a real redis-server and a real API server (envtest).
	@echo "==> making sure redis-server is installed"
	@hack/ensure-redis.sh
	@echo "==> making sure prometheus and promtool are installed"
	@hack/ensure-prometheus.sh
	@echo "==> finding or building envtest binaries (kube-apiserver, etcd, kubectl)"
	@assets="$$(hack/envtest.sh)"; echo "    KUBEBUILDER_ASSETS=$$assets"; \
	  echo "==> go vet"; go vet ./...; \
	  echo "==> go test $(GO_TEST_FLAGS) ./..."; \
	  KUBEBUILDER_ASSETS="$$assets" go test $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: ## Run the library benchmarks against a real redis-server.
	@hack/ensure-redis.sh
	@# bench/ is its own module (the peers never enter go.mod): it compares
	@# pkg/cache and the purge engine with them and writes docs/benchmarks.md.
	cd bench && go run . $(BENCH_FLAGS)
	@if [ "$(GOTEST)" = 1 ]; then \
	  echo "==> go test -bench ./pkg/cache/"; \
	  go test -run '^$$' -bench . -benchmem ./pkg/cache/; \
	fi

##@ Build

.PHONY: build
build: ## Build the manager and the kubectl plugin (bin/kubectl-cacheplane; put bin/ on PATH for `kubectl cacheplane`).
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/kubectl-cacheplane ./cmd/kubectl-cacheplane

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

.PHONY: envtest
envtest: ## Find or build envtest's binaries and print their directory.
	@hack/envtest.sh
