// Package e2e holds cacheplane's end-to-end tests: a real kube-apiserver and
// etcd (envtest), a real redis-server, the controller, pkg/cache clients and
// the real kubectl binary, driven the way a user drives them. There is no
// non-test code here.
//
// Run them with the rest of the tests (make test), or alone:
//
//	KUBEBUILDER_ASSETS="$(hack/envtest.sh)" go test -race ./test/e2e/
//
// The invalidation-visibility measurement with up to a million keys runs only
// when asked for:
//
//	CACHEPLANE_MEASURE=1 go test -v -run TestMeasure ./test/e2e/
//	go test -v -run TestMeasure ./test/e2e/ -args -e2e.measure
package e2e
