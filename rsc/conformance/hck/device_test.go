package hck_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/rsc/conformance"
	"github.com/rscvm/rscvm/rsc/conformance/hck"
)

func TestDeviceRunnerScenarios(t *testing.T) {
	r := hck.NewDeviceRunner(hck.Options{})
	for _, sc := range conformance.Scenarios() {
		t.Run(sc.ID, func(t *testing.T) {
			res := r.Run(context.Background(), sc, conformance.DefaultConfig())
			t.Logf("%s %s %v in=%d out=%d", res.Outcome, res.Detail, res.Duration, len(res.Inputs), len(res.Outputs))
			if sc.Runners&conformance.Device == 0 {
				require.Equal(t, conformance.Skip, res.Outcome)
				return
			}
			require.Equal(t, conformance.Pass, res.Outcome, res.Detail)
		})
	}
}

// TestDeviceRunnerReportsFailures breaks expectations on purpose: the
// device runner must report FAIL with a detail naming what differed.
func TestDeviceRunnerReportsFailures(t *testing.T) {
	r := hck.NewDeviceRunner(hck.Options{})
	cases := []struct {
		id, want string
		mutate   func(p *conformance.Program)
	}{
		{"S01_BasicV4", "packet 0: SCU: csum_start (segments) 10, want 9", func(p *conformance.Program) { p.Expect.Packets[0].Segs = 9 }},
		{"S01_BasicV4", "packet 0: hdr_len 54, want 58", func(p *conformance.Program) {
			p.Expect.Packets[0].Fields = append(p.Expect.Packets[0].Fields, conformance.F("hdr_len", 58))
		}},
		{"S06_FIN", "2 packets delivered, want 3", func(p *conformance.Program) { p.Expect.Count = 3 }},
		{"S06_FIN", "packet 1: want input 2 unchanged", func(p *conformance.Program) { p.Expect.Packets[1].Input = 2 }},
		{"S01_BasicV4", "step 1 (check delivered): 0 packets delivered, want 1", func(p *conformance.Program) { p.Steps[1].N = 1 }},
		{"S46_DisableDropsGSO", "device counter RxDropGSO = 1, want 2", func(p *conformance.Program) { p.Expect.DeviceStats[0].Want = 2 }},
		{"S54_Statistics", "counter Timer = 2, want 3", func(p *conformance.Program) {
			for i := range p.Expect.Stats {
				if p.Expect.Stats[i].Name == "Timer" {
					p.Expect.Stats[i].Want = 3
				}
			}
		}},
		{"S45_OffloadsSetValidation", "answered 0, want 1", func(p *conformance.Program) {
			p.Steps[0].WantAck = conformance.CtrlErr
		}},
		{"S53_PropertyParsing", "rsc_interval=1000000 gives 1000000, want 1", func(p *conformance.Program) { p.Steps[0].Want = 1 }},
		{"S44_OfferedFeatures", "feature bits 61 offered", func(p *conformance.Program) { p.Steps[0].NotOffered |= 1 << 61 }},
	}
	for _, c := range cases {
		t.Run(c.id+"/"+c.want, func(t *testing.T) {
			sc, ok := conformance.Lookup(c.id)
			require.True(t, ok)
			build := sc.Build
			sc.Build = func(cfg conformance.Config) conformance.Program {
				p := build(cfg)
				c.mutate(&p)
				return p
			}
			res := r.Run(context.Background(), sc, conformance.DefaultConfig())
			require.Equal(t, conformance.Fail, res.Outcome)
			require.Contains(t, res.Detail, c.want)
		})
	}
}

// TestDeviceRunnerSeesDeviceBehaviour changes the device, not the
// expectation: with x-rsc-batch-flush=on the device delivers S01's packet at
// the end of the read batch, and the runner must notice.
func TestDeviceRunnerSeesDeviceBehaviour(t *testing.T) {
	sc, ok := conformance.Lookup("S01_BasicV4")
	require.True(t, ok)
	base := conformance.DefaultConfig()
	base.FlushAtBatchEnd = true
	res := hck.NewDeviceRunner(hck.Options{}).Run(context.Background(), sc, base)
	require.Equal(t, conformance.Fail, res.Outcome)
	require.Equal(t, "step 1 (check delivered): 1 packets delivered, want 0", res.Detail)

	// A device property the scenario adds: guest_rsc_ext=off means no SCU.
	build := sc.Build
	sc.Build = func(cfg conformance.Config) conformance.Program {
		p := build(cfg)
		p.Device.Props = []string{"guest_rsc_ext=off"}
		return p
	}
	res = hck.NewDeviceRunner(hck.Options{}).Run(context.Background(), sc, conformance.DefaultConfig())
	require.Equal(t, conformance.Fail, res.Outcome)
	require.Contains(t, res.Detail, "packets delivered, want 0")
}
