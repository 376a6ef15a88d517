package virtionet_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

func macTable(uni, multi [][6]byte) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(len(uni)))
	for _, m := range uni {
		b = append(b, m[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(multi)))
	for _, m := range multi {
		b = append(b, m[:]...)
	}
	return b
}

// expectOnly injects frames and checks that exactly the wanted ones arrive,
// in order (a final marker frame proves the others were dropped).
func expectOnly(t *testing.T, g *nettest.Guest, be *nettest.Backend, frames [][]byte, want []bool) {
	t.Helper()
	marker := ethFrame(g.Dev.MAC(), hostMAC, 0x88b5, 77, 0xAA)
	for _, f := range frames {
		be.Q(0).Inject(header.VirtioNetHdr{}, f)
	}
	be.Q(0).Inject(header.VirtioNetHdr{}, marker)
	for i, f := range frames {
		if !want[i] {
			continue
		}
		got, err := g.Recv(0, timeout)
		require.NoError(t, err, "frame %d", i)
		g.PostRx(0, got.Buffers)
		require.Equal(t, f, got.Data, "frame %d", i)
	}
	got, err := g.Recv(0, timeout)
	require.NoError(t, err)
	g.PostRx(0, got.Buffers)
	require.Equal(t, marker, got.Data, "a filtered frame was delivered")
}

func TestCtrlReceiveFilter(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := linuxGuest(t, dev, nettest.GuestConfig{Features: virtionet.LinuxDriverFeatures | 1<<virtionet.FeatureCtrlRxExtra}, 64)
	other := [6]byte{0x52, 0x54, 0, 0, 0, 0x99}
	mcast := [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}
	mcast2 := [6]byte{0x33, 0x33, 0, 0, 0, 1}
	frames := [][]byte{
		ethFrame(guestMAC, hostMAC, 0x0800, 100, 1),
		ethFrame(other, hostMAC, 0x0800, 100, 2),
		ethFrame(bcast, hostMAC, 0x0806, 60, 3),
		ethFrame(mcast, hostMAC, 0x0800, 100, 4),
		ethFrame(mcast2, hostMAC, 0x86dd, 100, 5),
	}
	// After reset the device is promiscuous.
	expectOnly(t, g, be, frames, []bool{true, true, true, true, true})

	ack, err := g.Ctrl(0, 0, []byte{0}) // PROMISC off
	require.NoError(t, err)
	require.Zero(t, ack)
	ack, err = g.Ctrl(1, 0, macTable(nil, [][6]byte{mcast})) // MAC TABLE_SET
	require.NoError(t, err)
	require.Zero(t, ack)
	expectOnly(t, g, be, frames, []bool{true, false, true, true, false})

	ack, err = g.Ctrl(0, 1, []byte{1}) // ALLMULTI on
	require.NoError(t, err)
	require.Zero(t, ack)
	ack, err = g.Ctrl(0, 5, []byte{1}) // NOBCAST on
	require.NoError(t, err)
	require.Zero(t, ack)
	expectOnly(t, g, be, frames, []bool{true, false, false, true, true})

	// MAC ADDR_SET: config space and the filter follow.
	ack, err = g.Ctrl(1, 1, other[:])
	require.NoError(t, err)
	require.Zero(t, ack)
	require.Equal(t, other[:], g.ReadConfig(0, 6))
	expectOnly(t, g, be, frames, []bool{false, true, false, true, true})

	// VLAN filtering: tagged frames pass only for ids in the table.
	tagged := func(vid uint16) []byte {
		f := ethFrame(other, hostMAC, 0x8100, 100, byte(vid))
		binary.BigEndian.PutUint16(f[14:16], vid)
		return f
	}
	ack, err = g.Ctrl(2, 0, []byte{5, 0}) // VLAN ADD 5
	require.NoError(t, err)
	require.Zero(t, ack)
	expectOnly(t, g, be, [][]byte{tagged(5), tagged(6)}, []bool{true, false})
	ack, err = g.Ctrl(2, 0, []byte{0x00, 0x10}) // VLAN 4096
	require.NoError(t, err)
	require.EqualValues(t, 1, ack)

	s := dev.Stats()
	require.EqualValues(t, 7, s.Ctrl.Commands)
	require.EqualValues(t, 1, s.Ctrl.Errors)
	stats(t, dev, func(s virtionet.QueueStats) bool { return s.RxDropFiltered == 7 })

	// Reset: promiscuous again, configured MAC.
	g.Reset()
	require.Equal(t, guestMAC, dev.MAC())
}

func TestCtrlMalformedChains(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	q := g.CtrlIndex()
	d := g.Drv[q]
	// §7.3 #24: no header (1 readable byte).
	head, err := d.AddChain(queuetest.R([]byte{0}), queuetest.W(1))
	require.NoError(t, err)
	g.Kick(q)
	e := waitUsedElem(t, g, q)
	require.EqualValues(t, head, e.ID)
	require.EqualValues(t, 1, e.Len)
	require.Equal(t, []byte{1}, d.Written(head, 1), "ERR")
	// Header split over descriptors, payload elsewhere, two ack bytes.
	head, err = d.AddChain(queuetest.R([]byte{0}), queuetest.R([]byte{0}), queuetest.R([]byte{1}), queuetest.W(1), queuetest.W(1))
	require.NoError(t, err)
	g.Kick(q)
	e = waitUsedElem(t, g, q)
	require.EqualValues(t, 1, e.Len)
	require.Equal(t, []byte{0}, d.Written(head, 1))
	// Unknown class, wrong lengths (§7.3 #25, #31).
	for _, c := range [][]byte{{99, 0}, {0, 0}, {0, 0, 1, 1}, {5, 0, 1, 2, 3}, {4, 0, 1}, {8, 0}, {6, 0}} {
		ack, err := g.Ctrl(c[0], c[1], c[2:])
		require.NoError(t, err)
		require.EqualValues(t, 1, ack, "% x", c)
	}
	require.EqualValues(t, 1, dev.Stats().Ctrl.Malformed)
	require.Empty(t, g.IRQ.Resets(), "malformed control commands do not break the device")
	// The device still works.
	ack, err := g.Ctrl(0, 0, []byte{1})
	require.NoError(t, err)
	require.Zero(t, ack)
}

// §7.3 #24: a command chain with no writable ack byte cannot be answered;
// as in QEMU the device needs a reset (no used entry), and a driver reset
// brings the control queue back.
func TestCtrlMissingAckNeedsReset(t *testing.T) {
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	q := g.CtrlIndex()
	_, err := g.Drv[q].AddChain(queuetest.R([]byte{0, 0, 0}))
	require.NoError(t, err)
	g.Kick(q)
	require.Eventually(t, func() bool { return len(g.IRQ.Resets()) > 0 }, 5*time.Second, time.Millisecond,
		"DEVICE_NEEDS_RESET")
	require.EqualValues(t, 1, dev.Stats().Ctrl.Malformed)
	g.Reset()
	g2 := nettest.StartGuest(t, dev, nettest.GuestConfig{})
	ack, err := g2.Ctrl(0, 0, []byte{1})
	require.NoError(t, err)
	require.Zero(t, ack, "the control queue works again after a reset")
}

func waitUsedElem(t *testing.T, g *nettest.Guest, q int) queuetest.UsedElem {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if e, ok := g.Drv[q].PopUsed(); ok {
			g.Drv[q].Reclaim(uint16(e.ID))
			return e
		}
		require.True(t, time.Now().Before(deadline), "no used element on queue %d", q)
		time.Sleep(100 * time.Microsecond)
	}
}

func TestCtrlCommandsNeedFeatures(t *testing.T) {
	// §7.3 #32: commands for unnegotiated features answer ERR.
	be := newBackend(t, 1)
	dev := newDevice(t, be)
	feat := virtionet.LinuxDriverFeatures &^ (1<<virtionet.FeatureCtrlRx | 1<<virtionet.FeatureCtrlVLAN |
		1<<virtionet.FeatureCtrlGuestOffloads | 1<<virtionet.FeatureCtrlMACAddr)
	g := nettest.StartGuest(t, dev, nettest.GuestConfig{Features: feat})
	for _, c := range [][]byte{{0, 0, 0}, {2, 0, 1, 0}, {1, 1, 1, 2, 3, 4, 5, 6}, {5, 0, 2, 0, 0, 0, 0, 0, 0, 0}, {4, 0, 1, 0}} {
		ack, err := g.Ctrl(c[0], c[1], c[2:])
		require.NoError(t, err)
		require.EqualValues(t, 1, ack, "% x", c)
	}
	// §7.3 #30: GUEST_OFFLOADS with bit 61 but without RSC_EXT is accepted
	// (stripped) when the rest is valid.
	dev2 := newDevice(t, newBackend(t, 1))
	g2 := nettest.StartGuest(t, dev2, nettest.GuestConfig{})
	ack, err := g2.SetOffloads(offCSUM | offTSO4 | offRSC)
	require.NoError(t, err)
	require.Zero(t, ack)
}
