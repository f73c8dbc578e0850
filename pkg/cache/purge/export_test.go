package purge

// Hooks into unexported parts for the tests of package purge_test.

// NextCount exposes the adaptive COUNT step.
var NextCount = nextCount

// MinCountForTest and MaxCountForTest are the adaptive COUNT's bounds.
const (
	MinCountForTest = minCount
	MaxCountForTest = maxCount
)

// CmdStatForTest reads one commandstats line's calls and usec.
var CmdStatForTest = cmdStat

// ParseCmdStatsForTest reads the lines the server's clock uses.
func ParseCmdStatsForTest(info string) { parseCmdStats(info, "cmdstat_unlink") }
