package ctrl

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewResetState(t *testing.T) {
	s := New(fullConfig(), testMAC)
	require.Equal(t, RxMode{Promisc: true}, s.RxMode())
	require.Equal(t, testMAC, s.MAC())
	require.Equal(t, testMAC, s.DefaultMAC())
	require.Equal(t, MACTable{Unicast: []MAC{}, Multicast: []MAC{}}, s.MACTable())
	require.Empty(t, s.VLANs())
	require.True(t, s.VLANFiltering())
	require.False(t, s.VLANAllowed(0))
	require.Equal(t, fullConfig().GuestOffloads, s.Offloads())
	v4, v6 := s.RSC()
	require.True(t, v4)
	require.True(t, v6)
	require.Equal(t, uint16(1), s.QueuePairs())
	require.False(t, s.AnnouncePending())
	checkInvariants(t, s)

	busy := busyState(t, fullConfig())
	require.NotEqual(t, *s, *busy)
	busy.Reset()
	require.Equal(t, *s, *busy, "Reset must restore the post-New state")
}

func TestConfigNormalized(t *testing.T) {
	s := New(Config{MaxQueuePairs: 0, GuestOffloads: ^uint64(0)}, testMAC)
	require.Equal(t, uint16(1), s.Config().MaxQueuePairs)
	require.Equal(t, GuestOffloadMask, s.Config().GuestOffloads)
	require.Equal(t, GuestOffloadMask, s.Offloads())

	s.Configure(Config{MQ: true, MaxQueuePairs: 0xFFFF})
	require.Equal(t, uint16(MaxQueuePairs), s.Config().MaxQueuePairs)
	require.Zero(t, s.Offloads())
	mustOK(t, s, ClassMQ, MQVQPairsSet, le16(MaxQueuePairs))
	_, err := s.Apply(ClassMQ, MQVQPairsSet, le16(MaxQueuePairs+1))
	require.ErrorIs(t, err, ErrInvalid)
}

func TestConfigFromFeatures(t *testing.T) {
	// QEMU's default modern feature set with a vnet_hdr tap (§1.9 of
	// virtio-pci-qemu.md), plus MQ and RSC_EXT.
	const qemuDefault = 0x01C00101_30BFFFA7
	neg := uint64(qemuDefault) | 1<<FeatureMQ | 1<<FeatureRSCExt
	cfg := ConfigFromFeatures(neg, 4, true)
	require.Equal(t, Config{
		CtrlRX: true, CtrlRXExtra: true, CtrlVLAN: true, CtrlMACAddr: true,
		CtrlGuestOffloads: true, GuestAnnounce: true, MQ: true, MaxQueuePairs: 4,
		GuestOffloads: offCSUM | offTSO4 | offTSO6 | offECN | offUFO | offUSO4 | offUSO6,
		RSCExt:        true,
	}, cfg)

	// No vnet header: GUEST_OFFLOADS_SET is refused, as QEMU does.
	require.False(t, ConfigFromFeatures(neg, 1, false).CtrlGuestOffloads)
	// GUEST_ANNOUNCE without CTRL_VQ is not honoured.
	require.False(t, ConfigFromFeatures(1<<FeatureGuestAnnounce, 1, true).GuestAnnounce)
	require.True(t, ConfigFromFeatures(1<<FeatureGuestAnnounce|1<<FeatureCtrlVQ, 1, true).GuestAnnounce)
	require.Equal(t, Config{MaxQueuePairs: 1}, ConfigFromFeatures(0, 1, true))
}

func TestSetMAC(t *testing.T) {
	s := New(Config{}, testMAC)
	s.SetMAC(otherUC)
	require.Equal(t, otherUC, s.MAC())
	require.Equal(t, testMAC, s.DefaultMAC())
	s.Reset()
	require.Equal(t, testMAC, s.MAC())
}

func TestAnnounce(t *testing.T) {
	s := New(fullConfig(), testMAC)
	_, err := s.Apply(ClassAnnounce, AnnounceAck, nil)
	require.ErrorIs(t, err, ErrInvalid, "ACK without a pending announcement")

	require.True(t, s.RequestAnnounce())
	require.True(t, s.AnnouncePending())
	ack, ev := s.Handle(ClassAnnounce, AnnounceAck, nil)
	require.Equal(t, AckOK, ack)
	require.Equal(t, Event{Changes: ChangeAnnounceAck}, ev)
	require.False(t, s.AnnouncePending())

	ack, _ = s.Handle(ClassAnnounce, AnnounceAck, nil)
	require.Equal(t, AckErr, ack, "second ACK")

	require.True(t, s.RequestAnnounce())
	s.Reset()
	require.False(t, s.AnnouncePending(), "reset clears the announce bit")

	noAnn := New(Config{}, testMAC)
	require.False(t, noAnn.RequestAnnounce())
	require.False(t, noAnn.AnnouncePending())
}

func TestChangeString(t *testing.T) {
	require.Equal(t, "none", Change(0).String())
	require.Equal(t, "rx-mode|offloads", (ChangeRxMode | ChangeOffloads).String())
	require.Equal(t, "mac|0x8000", (ChangeMAC | 0x8000).String())
	require.True(t, Event{Changes: ChangeVLAN}.Has(ChangeRxFilter))
	require.False(t, Event{Changes: ChangeOffloads}.Has(ChangeRxFilter))
}
