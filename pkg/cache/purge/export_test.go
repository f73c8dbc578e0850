package purge

// Hooks into unexported parts for the tests of package purge_test.

// NextCount exposes the adaptive COUNT step.
var NextCount = nextCount

// MinCountForTest and MaxCountForTest are the adaptive COUNT's bounds.
const (
	MinCountForTest = minCount
	MaxCountForTest = maxCount
)
