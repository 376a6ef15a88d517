package hck_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/rscvm/rscvm/rsc/conformance/hck"
)

// requireTapEnv skips unless the test runs as root with /dev/net/tun; with
// RSCVM_REQUIRE_KVM=1 (CI) a missing prerequisite fails the test instead.
func requireTapEnv(t *testing.T) {
	t.Helper()
	testenv.TUN(t)
}

func newTapRunner(t *testing.T) *hck.TapRunner {
	t.Helper()
	requireTapEnv(t)
	r, err := hck.NewTapRunner(hck.TapOptions{Name: "hck0", Netns: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r
}

// TestTapRunnerScenarios runs every timing-independent scenario through
// the device on a real TAP in a fresh network namespace.
func TestTapRunnerScenarios(t *testing.T) {
	r := newTapRunner(t)
	for _, sc := range conformance.Scenarios() {
		t.Run(sc.ID, func(t *testing.T) {
			res := r.Run(context.Background(), sc, conformance.DefaultConfig())
			t.Logf("%s %s %v in=%d out=%d", res.Outcome, res.Detail, res.Duration, len(res.Inputs), len(res.Outputs))
			if sc.Runners&conformance.Tap == 0 || sc.TimingDependent {
				require.Equal(t, conformance.Skip, res.Outcome)
				return
			}
			require.Equal(t, conformance.Pass, res.Outcome, res.Detail)
		})
	}
}
