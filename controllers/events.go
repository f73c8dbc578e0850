package controllers

import (
	"k8s.io/apimachinery/pkg/runtime"
)

// Event reasons of the controller, beside the condition reasons in the API.
const (
	ReasonInvalidationStarted  = "InvalidationStarted"
	ReasonInvalidationComplete = "InvalidationComplete"
	ReasonInvalidationFailed   = "InvalidationFailed"
)

// event records an Event on obj when a recorder is configured. Messages never
// carry secrets: they are built from conditions and errors that do not either.
func (r *CachePolicyReconciler) event(obj runtime.Object, eventType, reason, action, note string) {
	if r.Recorder == nil {
		return
	}
	r.Recorder.Eventf(obj, nil, eventType, reason, action, "%s", note)
}
