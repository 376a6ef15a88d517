package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/guestimages/testguest"
	"github.com/rscvm/rscvm/guestimages/testguest/compat"
	"github.com/rscvm/rscvm/internal/testenv"
)

// requireCompatEnv skips (or fails with RSCVM_REQUIRE_KVM=1) unless root,
// namespaces/TAPs, /dev/kvm and QEMU are usable.
func requireCompatEnv(t *testing.T) {
	t.Helper()
	if err := testguest.NetnsAvailable(); err != nil {
		testenv.SkipOrFail(t, "no network namespaces/TAP (root, /dev/net/tun, ip): %v", err)
	}
	testenv.KVM(t)
	testenv.Tool(t, testguest.QEMUBinary, "qemu-system-x86")
}

// TestCompatQEMUSubset runs `rscvm compat qemu --json` on a few cases (one
// device-property case, the control queue, two RSC scenarios) and requires
// zero unexpected differences and no errors.
func TestCompatQEMUSubset(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: boots QEMU and rscvm")
	}
	requireCompatEnv(t)
	bin := buildRscvm(t)
	elf, err := testguest.Build(context.Background(), t.TempDir())
	if err != nil {
		testenv.SkipOrFail(t, "building the test guest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"compat", "qemu", "--json", "--guest", elf, "--rscvm", bin,
		"--run", "^(defaults|ctrl|rsc-fin|rsc-gap)$"}, &stdout, &stderr)
	t.Logf("stderr: %s", stderr.String())
	var doc struct {
		Summary compat.Summary  `json:"summary"`
		Cases   []compat.Result `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &doc), "%s", stdout.String())
	for _, c := range doc.Cases {
		for _, d := range c.Diffs {
			t.Logf("%s: %s %s", c.Case, d.Class, d)
		}
		require.NotEqual(t, compat.Failed, c.Class, "%s: %s", c.Case, c.Note)
	}
	require.Len(t, doc.Cases, 4)
	require.Zero(t, doc.Summary.Unexpected)
	require.Zero(t, doc.Summary.Failed)
	require.NoError(t, err)
	require.Equal(t, compat.Expected, doc.Cases[3].Class, "rsc-gap differs by QEMU defects")
}

// TestCompatFlags: usage and flag errors, --list.
func TestCompatFlags(t *testing.T) {
	var out, errb bytes.Buffer
	require.Error(t, run(context.Background(), []string{"compat"}, &out, &errb))
	require.Contains(t, errb.String(), "usage: rscvm compat qemu")
	require.ErrorContains(t, run(context.Background(), []string{"compat", "qemu", "--bogus"}, &out, &errb), "--bogus")
	require.ErrorContains(t, run(context.Background(), []string{"compat", "qemu", "--run", "("}, &out, &errb), "--run")
	out.Reset()
	require.NoError(t, run(context.Background(), []string{"compat", "qemu", "--list", "--run", "^rsc-"}, &out, &errb))
	require.Contains(t, out.String(), "rsc-inorder")
	require.NotContains(t, out.String(), "defaults")
	// The scenario coverage follows: every part (a) scenario, driven or not.
	require.Contains(t, out.String(), "(a)50  not host-drivable")
	require.Contains(t, out.String(), "(a)48  rsc-reset-pending")
}
