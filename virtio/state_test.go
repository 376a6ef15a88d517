package virtio_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio"
)

// A virtio-net-like offer: CSUM(0), MAC(5), GSO(6, legacy only), MRG_RXBUF(15),
// NOTIFY_ON_EMPTY, ANY_LAYOUT, INDIRECT_DESC, EVENT_IDX, BAD_FEATURE,
// VERSION_1, RING_RESET.
const (
	netGSO  = 1 << 6
	offered = 1<<0 | 1<<5 | netGSO | 1<<15 |
		1<<virtio.FeatureNotifyOnEmpty | 1<<virtio.FeatureAnyLayout |
		1<<virtio.FeatureIndirectDesc | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureBadFeature |
		1<<virtio.FeatureVersion1 | 1<<virtio.FeatureRingReset
	legacyOnly = virtio.LegacyOnlyFeatures | netGSO
)

const (
	ack     = virtio.StatusAcknowledge
	drv     = virtio.StatusDriver
	featOK  = virtio.StatusFeaturesOK
	drvOK   = virtio.StatusDriverOK
	failed  = virtio.StatusFailed
	needsRS = virtio.StatusDeviceNeedsReset
)

func newState() *virtio.State { return virtio.NewState(offered, legacyOnly, nil) }

func writeFeatures(s *virtio.State, f uint64) {
	s.SetDriverFeatureSelect(0)
	s.SetDriverFeatures(uint32(f))
	s.SetDriverFeatureSelect(1)
	s.SetDriverFeatures(uint32(f >> 32))
}

func TestConstants(t *testing.T) {
	require.Equal(t, uint64(1<<32), virtio.Bit(virtio.FeatureVersion1))
	for bit, want := range map[uint]uint{
		virtio.FeatureNotifyOnEmpty: 24, virtio.FeatureAnyLayout: 27, virtio.FeatureIndirectDesc: 28,
		virtio.FeatureEventIdx: 29, virtio.FeatureVersion1: 32, virtio.FeatureAccessPlatform: 33,
		virtio.FeatureRingPacked: 34, virtio.FeatureInOrder: 35, virtio.FeatureOrderPlatform: 36,
		virtio.FeatureSRIOV: 37, virtio.FeatureNotificationData: 38, virtio.FeatureNotifConfigData: 39,
		virtio.FeatureRingReset: 40,
	} {
		require.Equal(t, want, bit)
	}
	require.Equal(t, "net", virtio.DeviceTypeNet.String())
	require.Equal(t, "virtio-99", virtio.DeviceType(99).String())
	qf := virtio.QueueFeatures(virtio.Bit(virtio.FeatureEventIdx))
	require.True(t, qf.EventIdx)
	require.False(t, qf.NotifyOnEmpty)
}

// The default QEMU virtio-net bitmaps from the reference doc: the modern
// view hides the legacy-only bits, the legacy view shows the low 32 bits.
func TestFeatureWindowsQEMUBitmap(t *testing.T) {
	const qemuFull = 0x01C00101_79BFFFE7 // legacy-only bits included
	s := virtio.NewState(qemuFull, virtio.LegacyOnlyFeatures|netGSO, nil)
	s.SetDeviceFeatureSelect(0)
	require.Equal(t, uint32(0x30BFFFA7), s.DeviceFeatures())
	s.SetDeviceFeatureSelect(1)
	require.Equal(t, uint32(0x01C00101), s.DeviceFeatures())
	s.SetDeviceFeatureSelect(2)
	require.Zero(t, s.DeviceFeatures())
	s.SetDeviceFeatureSelect(0xFFFFFFFF)
	require.Zero(t, s.DeviceFeatures())
	require.Equal(t, uint32(0xFFFFFFFF), s.DeviceFeatureSelect())
	require.Equal(t, uint32(0x79BFFFE7), s.LegacyHostFeatures())
	require.Equal(t, uint64(0x01C00101_30BFFFA7), s.Offered())
}

func TestModernNegotiation(t *testing.T) {
	s := newState()
	require.Zero(t, s.WriteStatus(ack))
	require.Zero(t, s.WriteStatus(ack|drv))
	want := uint64(1<<0 | 1<<virtio.FeatureEventIdx | 1<<virtio.FeatureVersion1)
	writeFeatures(s, want)
	s.SetDriverFeatureSelect(0)
	require.Equal(t, uint32(want), s.DriverFeatures())
	s.SetDriverFeatureSelect(1)
	require.Equal(t, uint32(want>>32), s.DriverFeatures())
	s.SetDriverFeatureSelect(2)
	s.SetDriverFeatures(0xFFFF) // ignored: only 64 bits
	require.Zero(t, s.DriverFeatures())

	require.Equal(t, virtio.ActionAckFeatures, s.WriteStatus(ack|drv|featOK))
	require.True(t, s.FeaturesOK())
	require.Equal(t, want, s.Negotiated())
	require.Nil(t, s.FeaturesError())
	require.False(t, s.Legacy())

	require.Equal(t, virtio.ActionActivate, s.WriteStatus(ack|drv|featOK|drvOK))
	require.True(t, s.DriverOK())
	require.Equal(t, ack|drv|featOK|drvOK, s.Status())
	require.Zero(t, s.WriteStatus(ack|drv|featOK|drvOK), "rewriting the same status does nothing")

	require.Equal(t, virtio.ActionReset, s.WriteStatus(0))
	require.Zero(t, s.Status())
	require.Zero(t, s.Negotiated())
}

func TestAllBitsInOneWrite(t *testing.T) {
	s := newState()
	writeFeatures(s, 1<<virtio.FeatureVersion1)
	require.Equal(t, virtio.ActionAckFeatures|virtio.ActionActivate, s.WriteStatus(ack|drv|featOK|drvOK))
}

// FEATURES_OK stays clear unless the driver's features are a subset of the
// modern offer (legacy-only bits are not offered there) and include
// VERSION_1; the device's validator can refuse too.
func TestFeaturesOKRefused(t *testing.T) {
	cases := []struct {
		name string
		f    uint64
		want error
	}{
		{"not offered", 1<<virtio.FeatureVersion1 | 1<<3, virtio.ErrFeaturesNotOffered},
		{"legacy-only GSO", 1<<virtio.FeatureVersion1 | netGSO, virtio.ErrFeaturesNotOffered},
		{"legacy-only ANY_LAYOUT", 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureAnyLayout, virtio.ErrFeaturesNotOffered},
		{"packed not offered", 1<<virtio.FeatureVersion1 | 1<<virtio.FeatureRingPacked, virtio.ErrFeaturesNotOffered},
		{"no VERSION_1", 1 << virtio.FeatureEventIdx, virtio.ErrVersion1Required},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newState()
			s.WriteStatus(ack | drv)
			writeFeatures(s, tc.f)
			require.Zero(t, s.WriteStatus(ack|drv|featOK))
			require.False(t, s.FeaturesOK())
			require.ErrorIs(t, s.FeaturesError(), tc.want)
			// DRIVER_OK without FEATURES_OK is refused too.
			require.Zero(t, s.WriteStatus(ack|drv|featOK|drvOK))
			require.Equal(t, ack|drv, s.Status())
			require.ErrorIs(t, s.FeaturesError(), virtio.ErrStatusOrder)
			// The driver may fix its features and try again.
			writeFeatures(s, 1<<virtio.FeatureVersion1)
			require.Equal(t, virtio.ActionAckFeatures, s.WriteStatus(ack|drv|featOK))
		})
	}
	t.Run("validator", func(t *testing.T) {
		bad := errors.New("MRG_RXBUF needs VERSION_1 here")
		s := virtio.NewState(offered, legacyOnly, func(f uint64) error {
			if f&(1<<15) != 0 {
				return bad
			}
			return nil
		})
		s.WriteStatus(ack | drv)
		writeFeatures(s, 1<<virtio.FeatureVersion1|1<<15)
		require.Zero(t, s.WriteStatus(ack|drv|featOK))
		require.ErrorIs(t, s.FeaturesError(), bad)
	})
	t.Run("without VERSION_1 offered it is not required", func(t *testing.T) {
		s := virtio.NewState(1<<virtio.FeatureEventIdx, 0, nil)
		s.WriteStatus(ack | drv)
		writeFeatures(s, 1<<virtio.FeatureEventIdx)
		require.Equal(t, virtio.ActionAckFeatures, s.WriteStatus(ack|drv|featOK))
	})
}

// §7.3 item 5: feature writes after FEATURES_OK, status going backwards,
// DRIVER_OK without FEATURES_OK, FEATURES_OK before ACKNOWLEDGE|DRIVER.
func TestChecklist05_StatusMisuse(t *testing.T) {
	t.Run("feature writes after FEATURES_OK are ignored", func(t *testing.T) {
		s := newState()
		s.WriteStatus(ack | drv)
		writeFeatures(s, 1<<virtio.FeatureVersion1)
		s.WriteStatus(ack | drv | featOK)
		writeFeatures(s, offered)
		require.Equal(t, uint64(1<<virtio.FeatureVersion1), s.Negotiated())
		s.SetLegacyGuestFeatures(0xFFFFFFFF)
		s.WriteStatus(ack | drv | featOK | drvOK)
		s.SetLegacyGuestFeatures(0xFFFFFFFF)
		require.Equal(t, uint64(1<<virtio.FeatureVersion1), s.Negotiated())
	})
	t.Run("status cannot go backwards", func(t *testing.T) {
		s := newState()
		writeFeatures(s, 1<<virtio.FeatureVersion1)
		s.WriteStatus(ack | drv | featOK | drvOK)
		require.Zero(t, s.WriteStatus(ack))
		require.Equal(t, ack|drv|featOK|drvOK, s.Status())
		require.Zero(t, s.WriteStatus(drvOK))
		require.Equal(t, ack|drv|featOK|drvOK, s.Status())
	})
	t.Run("DRIVER_OK without FEATURES_OK", func(t *testing.T) {
		s := newState()
		writeFeatures(s, 1<<virtio.FeatureVersion1)
		require.Zero(t, s.WriteStatus(ack|drv|drvOK))
		require.Equal(t, ack|drv, s.Status())
	})
	t.Run("FEATURES_OK without ACKNOWLEDGE|DRIVER", func(t *testing.T) {
		s := newState()
		writeFeatures(s, 1<<virtio.FeatureVersion1)
		require.Zero(t, s.WriteStatus(featOK))
		require.Zero(t, s.WriteStatus(ack|featOK))
		require.False(t, s.FeaturesOK())
		require.ErrorIs(t, s.FeaturesError(), virtio.ErrStatusOrder)
	})
	t.Run("driver cannot set DEVICE_NEEDS_RESET or reserved bits", func(t *testing.T) {
		s := newState()
		s.WriteStatus(ack | needsRS | 0x30)
		require.Equal(t, ack, s.Status())
		s.WriteLegacyStatus(ack | drv | needsRS | 0x30)
		require.Equal(t, ack|drv, s.Status())
	})
	t.Run("DRIVER_OK after FAILED", func(t *testing.T) {
		s := newState()
		writeFeatures(s, 1<<virtio.FeatureVersion1)
		s.WriteStatus(ack | drv | featOK)
		s.WriteStatus(ack | drv | featOK | failed)
		require.Zero(t, s.WriteStatus(ack|drv|featOK|failed|drvOK))
		require.False(t, s.DriverOK())
	})
}

func TestNeedsReset(t *testing.T) {
	s := newState()
	require.False(t, s.SetNeedsReset(), "reset device: nothing to flag")
	require.Zero(t, s.Status())

	s.WriteStatus(ack | drv)
	require.False(t, s.SetNeedsReset(), "no DRIVER_OK: flag without notification")
	require.Equal(t, ack|drv|needsRS, s.Status())
	writeFeatures(s, 1<<virtio.FeatureVersion1)
	s.WriteStatus(ack | drv | featOK)
	require.Equal(t, virtio.ActionNotifyConfig, s.WriteStatus(ack|drv|featOK|drvOK),
		"DRIVER_OK while NEEDS_RESET is pending: no activation, tell the driver")
	require.Equal(t, ack|drv|featOK|drvOK|needsRS, s.Status())
	require.Equal(t, virtio.ActionReset, s.WriteStatus(0))

	writeFeatures(s, 1<<virtio.FeatureVersion1)
	s.WriteStatus(ack | drv | featOK | drvOK)
	require.True(t, s.SetNeedsReset())
	require.False(t, s.SetNeedsReset(), "only the first time")
	require.Equal(t, ack|drv|featOK|drvOK|needsRS, s.Status())
	s.WriteStatus(ack | drv | featOK | drvOK) // the driver cannot clear it
	require.Equal(t, ack|drv|featOK|drvOK|needsRS, s.Status())
	s.WriteStatus(0)
	require.Zero(t, s.Status())
}

func TestLegacyNegotiation(t *testing.T) {
	s := newState()
	require.Equal(t, uint32(offered&0xFFFFFFFF), s.LegacyHostFeatures())
	s.WriteLegacyStatus(ack)
	s.WriteLegacyStatus(ack | drv)
	s.SetLegacyGuestFeatures(1<<virtio.FeatureEventIdx | netGSO | 1<<3 /* not offered */)
	require.Equal(t, uint32(1<<virtio.FeatureEventIdx|netGSO), s.LegacyGuestFeatures())
	require.True(t, s.Legacy())
	// FEATURES_OK does not exist on the legacy interface.
	require.Zero(t, s.WriteLegacyStatus(ack|drv|featOK))
	require.Equal(t, ack|drv, s.Status())
	require.Equal(t, virtio.ActionAckFeatures|virtio.ActionActivate, s.WriteLegacyStatus(ack|drv|drvOK))
	require.Equal(t, uint64(1<<virtio.FeatureEventIdx|netGSO), s.Negotiated())
	s.SetLegacyGuestFeatures(0) // ignored after DRIVER_OK
	require.Equal(t, uint64(1<<virtio.FeatureEventIdx|netGSO), s.Negotiated())
	require.Equal(t, virtio.ActionReset, s.WriteLegacyStatus(0))
	require.False(t, s.Legacy())
	require.Zero(t, s.Negotiated())

	// DRIVER_OK after FAILED, and with NEEDS_RESET pending.
	s.WriteLegacyStatus(ack | failed)
	require.Zero(t, s.WriteLegacyStatus(ack|failed|drvOK))
	s.WriteLegacyStatus(0)
	s.WriteLegacyStatus(ack)
	s.SetNeedsReset()
	require.Equal(t, virtio.ActionNotifyConfig, s.WriteLegacyStatus(ack|drvOK))
}

func TestConfigGeneration(t *testing.T) {
	s := newState()
	require.Zero(t, s.ConfigGeneration())
	s.BumpConfigGeneration()
	s.BumpConfigGeneration()
	require.Equal(t, uint8(2), s.ConfigGeneration())
	s.Reset()
	require.Equal(t, uint8(2), s.ConfigGeneration())
	require.Zero(t, s.DeviceFeatureSelect())
	require.Zero(t, s.DriverFeatureSelect())
}

// FuzzStatus drives a State with arbitrary register writes. Invariants:
// no panic; FEATURES_OK implies the negotiated features are acceptable;
// negotiated features do not change after FEATURES_OK; modern DRIVER_OK
// implies FEATURES_OK; DEVICE_NEEDS_RESET only comes from the device; bits
// only go away on reset.
func FuzzStatus(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 0, 3, 1, 3, 2, 4, 0x0b, 4, 0x0f})
	f.Add([]byte{5, 0x03, 6, 0x20, 7, 0x07, 4, 0x40, 8, 0, 4, 0x0f})
	f.Add([]byte{0, 0, 1, 0xff, 4, 0xff, 8, 0, 4, 0x0b, 4, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := newState()
		var acked uint64
		var setByDevice bool
		for i := 0; i+1 < len(ops); i += 2 {
			op, v := ops[i]%9, ops[i+1]
			before := s.Status()
			switch op {
			case 0:
				s.SetDriverFeatureSelect(uint32(v % 4))
			case 1:
				s.SetDriverFeatures(uint32(v) * 0x01010101)
			case 2:
				s.SetDriverFeatures(uint32(v) << 24)
			case 3:
				s.SetDeviceFeatureSelect(uint32(v))
				_ = s.DeviceFeatures()
			case 4:
				act := s.WriteStatus(v)
				if v == 0 {
					require.Equal(t, virtio.ActionReset, act)
					acked, setByDevice = 0, false
				}
				if act&virtio.ActionAckFeatures != 0 {
					acked = s.Negotiated()
				}
			case 5:
				act := s.WriteLegacyStatus(v)
				if v == 0 {
					acked, setByDevice = 0, false
				}
				if act&virtio.ActionAckFeatures != 0 {
					acked = s.Negotiated()
				}
			case 6:
				s.SetLegacyGuestFeatures(uint32(v) * 0x01010101)
			case 7:
				if s.SetNeedsReset() {
					require.NotZero(t, s.Status()&drvOK)
				}
				if s.Status() != 0 {
					setByDevice = true
				}
			case 8:
				s.Reset()
				acked, setByDevice = 0, false
			}
			st := s.Status()
			reset := op == 8 || (op == 4 || op == 5) && v == 0
			if !reset {
				require.Equal(t, before, st&before, "status bits cleared without reset")
			}
			if st&needsRS != 0 {
				require.True(t, setByDevice)
			}
			if st&featOK != 0 && !s.Legacy() {
				n := s.Negotiated()
				require.Zero(t, n&^s.Offered())
				require.NotZero(t, n&(1<<virtio.FeatureVersion1))
				require.Equal(t, acked, n, "features changed after FEATURES_OK")
			}
			if st&drvOK != 0 && !s.Legacy() {
				require.NotZero(t, st&featOK)
			}
		}
	})
}
