package manager

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
)

// The manager knows farms only through its Farm interface and the wire
// types of farmapi; a farm in the same process must still fit it.
var _ Farm = (*farm.Farm)(nil)

// The manager builds without the farm agent and its container runtime:
// farms are reached through farmapi alone.
func TestManagerDoesNotImportDocker(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/drover-dev/drover/manager").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/drover-dev/drover/farmapi", "the list is the manager's dependencies")
	for _, d := range deps {
		require.False(t, strings.HasPrefix(d, "github.com/docker/"), "manager depends on %s", d)
		require.NotEqual(t, "github.com/drover-dev/drover/farm", d, "manager depends on the farm agent")
	}
}
