package virtionet_test

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

func TestSetParsesQEMUSpellings(t *testing.T) {
	c := virtionet.DefaultConfig()
	for _, v := range []string{"off", "no", "false", "n"} {
		require.NoError(t, c.Set("csum", v))
		require.False(t, c.CSUM, v)
		require.NoError(t, c.Set("csum", "on"))
		require.True(t, c.CSUM)
	}
	for _, v := range []string{"on", "yes", "true", "y"} {
		require.NoError(t, c.Set("guest_rsc_ext", v))
		require.True(t, c.GuestRSCExt, v)
		require.NoError(t, c.Set("guest_rsc_ext", "off"))
	}
	require.NoError(t, c.Set("rsc_interval", "1000000"))
	require.EqualValues(t, 1000000, c.RSCInterval)
	require.NoError(t, c.Set("rsc_interval", "0x10"))
	require.EqualValues(t, 16, c.RSCInterval)
	require.NoError(t, c.Set("rsc_interval", "0"))
	require.NoError(t, c.Set("rsc_interval", "4294967295"))
	require.NoError(t, c.Set("mac", "52:54:00:ab:cd:ef"))
	require.Equal(t, net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}, c.MAC)
	require.NoError(t, c.Set("mac", "02-00-00-00-00-01"))
	require.Equal(t, net.HardwareAddr{2, 0, 0, 0, 0, 1}, c.MAC)
	require.NoError(t, c.Set("rx_queue_size", "1024"))
	require.NoError(t, c.Set("tx_queue_size", "0x400"))
	require.EqualValues(t, 1024, c.RxQueueSize)
	require.EqualValues(t, 1024, c.TxQueueSize)
	require.EqualValues(t, 256, c.TxSize(), "QEMU clamps tx_queue_size to 256 for a tap peer")
	require.NoError(t, c.Set("host_mtu", "9000"))
	require.NoError(t, c.Set("speed", "10000"))
	require.NoError(t, c.Set("duplex", "full"))
	require.NoError(t, c.Set("x-rsc-gso", "on"))
	require.True(t, c.RSCGSO)
	for _, k := range []string{"gso", "guest_tso4", "guest_tso6", "guest_ecn", "guest_ufo", "guest_announce",
		"host_tso4", "host_tso6", "host_ecn", "host_ufo", "mrg_rxbuf", "status", "ctrl_vq", "ctrl_rx",
		"ctrl_vlan", "ctrl_rx_extra", "ctrl_mac_addr", "ctrl_guest_offloads", "mq", "indirect_desc",
		"event_idx", "any_layout", "notify_on_empty", "queue_reset", "guest_csum"} {
		require.NoError(t, c.Set(k, "off"), k)
		require.NoError(t, c.Set(k, "on"), k)
	}
	for _, k := range []string{"rss", "hash", "failover"} {
		require.NoError(t, c.Set(k, "off"), k)
		err := c.Set(k, "on")
		require.Error(t, err)
		require.Contains(t, err.Error(), k)
	}
	require.NoError(t, c.Validate())
}

func TestSetErrorsNameKeyAndValues(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{"csum", "maybe", "on/off, yes/no, true/false, y/n"},
		{"rsc_interval", "4294967296", "0..4294967295"},
		{"rsc_interval", "-1", "0..4294967295"},
		{"rsc_interval", "1ms", "0..4294967295"},
		{"rx_queue_size", "128", "power of 2 between 256 and 1024"},
		{"rx_queue_size", "300", "power of 2 between 256 and 1024"},
		{"rx_queue_size", "2048", "power of 2 between 256 and 1024"},
		{"tx_queue_size", "0", "power of 2 between 256 and 1024"},
		{"mac", "52:54:00:12:34", "xx:xx:xx:xx:xx:xx"},
		{"mac", "52:54:00:12:34:zz", "xx:xx:xx:xx:xx:xx"},
		{"duplex", "both", "'half' or 'full'"},
		{"speed", "-2", "-1.."},
		{"host_mtu", "65536", "0..65535"},
	} {
		c := virtionet.DefaultConfig()
		err := c.Set(tc.key, tc.value)
		require.Error(t, err, "%s=%s", tc.key, tc.value)
		require.Contains(t, err.Error(), tc.key)
		require.Contains(t, err.Error(), tc.want)
	}
	c := virtionet.DefaultConfig()
	err := c.Set("no_such_property", "on")
	require.ErrorContains(t, err, "unknown property")
	require.ErrorContains(t, err, "no_such_property")
}

func TestIgnoredKeys(t *testing.T) {
	for _, k := range []string{"vhost", "vhostforce", "poll-us", "ioeventfd", "tx", "x-txtimer", "x-txburst",
		"romfile", "rombar", "bootindex", "page-per-vq", "ats", "x-mtu-bypass-backend", "x-anything"} {
		require.True(t, virtionet.IsIgnored(k), k)
		c := virtionet.DefaultConfig()
		require.NoError(t, c.Set(k, "whatever"), k)
		require.Equal(t, virtionet.DefaultConfig(), c, "ignored key %s changed the config", k)
	}
	for _, k := range []string{"x-rsc-gso", "csum", "netdev", "vectors", ""} {
		require.False(t, virtionet.IsIgnored(k), k)
	}
}

func TestValidate(t *testing.T) {
	c := virtionet.DefaultConfig()
	require.NoError(t, c.Validate())
	c.RxQueueSize = 100
	require.ErrorContains(t, c.Validate(), "rx_queue_size")
	c = virtionet.DefaultConfig()
	c.Speed = -7
	require.ErrorContains(t, c.Validate(), "speed")
	c = virtionet.DefaultConfig()
	c.Duplex = "x"
	require.ErrorContains(t, c.Validate(), "duplex")
}

var fullCaps = virtionet.BackendCaps{VnetHdr: true, UFO: true, Queues: 1}

// QEMU 7.2's default offer with a tap (vnet_hdr, UFO), modern view and
// legacy view; and what Linux 6.1 acks of it.
const (
	qemu72Modern = 0x0000010130bfffa7
	qemu72Legacy = 0x79bfffe7
	linux61Acked = 0x0000010130afffa7
)

func TestDefaultFeaturesAreQEMU72(t *testing.T) {
	c := virtionet.DefaultConfig()
	f := c.Features(fullCaps)
	st := virtio.NewState(f, virtio.LegacyOnlyFeatures|1<<virtionet.FeatureGSO, nil)
	require.Equal(t, uint64(qemu72Modern), st.Offered(), "modern offer %#x", st.Offered())
	require.Equal(t, uint32(qemu72Legacy), st.LegacyHostFeatures())
	for _, b := range []uint{virtionet.FeatureGuestUSO4, virtionet.FeatureGuestUSO6, virtionet.FeatureHostUSO,
		virtionet.FeatureRSS, virtionet.FeatureHashReport, virtionet.FeatureRSCExt, virtionet.FeatureStandby,
		virtionet.FeatureSpeedDuplex, virtionet.FeatureMTU, virtionet.FeatureMQ, 41, 42} {
		require.Zero(t, f&(1<<b), "bit %d offered", b)
	}
	require.Equal(t, uint64(linux61Acked), st.Offered()&virtionet.LinuxDriverFeatures)
}

func TestLinuxNegotiationThroughDevice(t *testing.T) {
	be := newBackend(t, 1)
	dev, err := virtionet.New(virtionet.DefaultConfig(), be, virtionet.Options{})
	require.NoError(t, err)
	st := virtio.NewDeviceState(dev)
	require.Equal(t, uint64(qemu72Modern), st.Offered())
	f := st.Offered() & virtionet.LinuxDriverFeatures
	st.WriteStatus(virtio.StatusAcknowledge | virtio.StatusDriver)
	st.SetDriverFeatureSelect(0)
	st.SetDriverFeatures(uint32(f))
	st.SetDriverFeatureSelect(1)
	st.SetDriverFeatures(uint32(f >> 32))
	act := st.WriteStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	require.NotZero(t, act&virtio.ActionAckFeatures)
	require.Equal(t, uint64(linux61Acked), st.Negotiated())
	dev.AckFeatures(st.Negotiated())
	require.Equal(t, uint64(linux61Acked), dev.Negotiated())
	// Offloads applied at feature ack: CSUM, TSO4, TSO6, ECN, UFO.
	require.Equal(t, []uint64{1<<1 | 1<<7 | 1<<8 | 1<<9 | 1<<10}, be.Offloads())
	require.Equal(t, "csum|tso4|tso6|tso_ecn|ufo", be.Offload().String())
}

func TestFeaturePruning(t *testing.T) {
	c := virtionet.DefaultConfig()
	offloadBits := []uint{virtionet.FeatureCSUM, virtionet.FeatureGuestCSUM, virtionet.FeatureGuestTSO4,
		virtionet.FeatureGuestTSO6, virtionet.FeatureGuestECN, virtionet.FeatureHostTSO4,
		virtionet.FeatureHostTSO6, virtionet.FeatureHostECN}
	ufoBits := []uint{virtionet.FeatureGuestUFO, virtionet.FeatureHostUFO}

	f := c.Features(virtionet.BackendCaps{VnetHdr: false, UFO: true})
	for _, b := range append(offloadBits, ufoBits...) {
		require.Zero(t, f&(1<<b), "no vnet_hdr: bit %d must be dropped", b)
	}
	require.NotZero(t, f&(1<<virtionet.FeatureMrgRxBuf))
	require.NotZero(t, f&(1<<virtionet.FeatureCtrlGuestOffloads), "QEMU keeps CTRL_GUEST_OFFLOADS")

	f = c.Features(virtionet.BackendCaps{VnetHdr: true, UFO: false})
	for _, b := range ufoBits {
		require.Zero(t, f&(1<<b), "no tap UFO: bit %d must be dropped", b)
	}
	for _, b := range offloadBits {
		require.NotZero(t, f&(1<<b), "bit %d", b)
	}

	// Property switches map to their bits.
	for _, tc := range []struct {
		key string
		bit uint
	}{{"csum", 0}, {"guest_csum", 1}, {"ctrl_guest_offloads", 2}, {"gso", 6}, {"guest_tso4", 7},
		{"guest_tso6", 8}, {"guest_ecn", 9}, {"guest_ufo", 10}, {"host_tso4", 11}, {"host_tso6", 12},
		{"host_ecn", 13}, {"host_ufo", 14}, {"mrg_rxbuf", 15}, {"status", 16}, {"ctrl_vq", 17},
		{"ctrl_rx", 18}, {"ctrl_vlan", 19}, {"ctrl_rx_extra", 20}, {"guest_announce", 21},
		{"ctrl_mac_addr", 23}, {"notify_on_empty", 24}, {"any_layout", 27}, {"indirect_desc", 28},
		{"event_idx", 29}, {"queue_reset", 40}} {
		c := virtionet.DefaultConfig()
		require.NotZero(t, c.Features(fullCaps)&(1<<tc.bit), tc.key)
		require.NoError(t, c.Set(tc.key, "off"))
		require.Zero(t, c.Features(fullCaps)&(1<<tc.bit), tc.key)
	}
	c = virtionet.DefaultConfig()
	require.NoError(t, c.Set("mq", "on"))
	require.NotZero(t, c.Features(fullCaps)&(1<<virtionet.FeatureMQ))
	c = virtionet.DefaultConfig()
	c.HostMTU = 1400
	require.NotZero(t, c.Features(fullCaps)&(1<<virtionet.FeatureMTU))
	c = virtionet.DefaultConfig()
	require.NoError(t, c.Set("speed", "-1"))
	require.Zero(t, c.Features(fullCaps)&(1<<virtionet.FeatureSpeedDuplex), "speed=-1 alone does not offer SPEED_DUPLEX")
	require.NoError(t, c.Set("speed", "1000"))
	require.NotZero(t, c.Features(fullCaps)&(1<<virtionet.FeatureSpeedDuplex))
	c = virtionet.DefaultConfig()
	require.NoError(t, c.Set("duplex", "half"))
	require.NotZero(t, c.Features(fullCaps)&(1<<virtionet.FeatureSpeedDuplex))
	c = virtionet.DefaultConfig()
	c.Modern = false
	require.Zero(t, c.Features(fullCaps)&(1<<virtio.FeatureVersion1))
}

func TestRSCExtOffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		props  map[string]string
		caps   virtionet.BackendCaps
		offers bool
	}{
		{"default off", nil, fullCaps, false},
		{"on", map[string]string{"guest_rsc_ext": "on"}, fullCaps, true},
		{"on, tso4 only", map[string]string{"guest_rsc_ext": "on", "guest_tso6": "off"}, fullCaps, true},
		{"on, no guest tso", map[string]string{"guest_rsc_ext": "on", "guest_tso4": "off", "guest_tso6": "off"}, fullCaps, false},
		{"on, no vnet_hdr", map[string]string{"guest_rsc_ext": "on"}, virtionet.BackendCaps{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := virtionet.DefaultConfig()
			for k, v := range tc.props {
				require.NoError(t, c.Set(k, v))
			}
			f := c.Features(tc.caps)
			require.Equal(t, tc.offers, f&(1<<virtionet.FeatureRSCExt) != 0)
			require.Zero(t, f&(1<<41|1<<42), "legacy GUEST_RSC4/6 must never be offered")
		})
	}
}

func TestParseMAC(t *testing.T) {
	m, err := virtionet.ParseMAC("0A:0b:0C:0d:0E:0f")
	require.NoError(t, err)
	require.Equal(t, "0a:0b:0c:0d:0e:0f", m.String())
	for _, s := range []string{"", "1:2:3:4:5", "1:2:3:4:5:6:7", "123:2:3:4:5:6", "1::3:4:5:6", strings.Repeat("a", 17)} {
		_, err := virtionet.ParseMAC(s)
		require.Error(t, err, s)
	}
}

// TestNegotiationMatrix drives several driver profiles through the
// negotiation and checks what the device makes of them: the header size,
// mergeable buffers, the offloads applied to the backend and the queue
// layout.
func TestNegotiationMatrix(t *testing.T) {
	low := virtionet.LinuxDriverFeatures & 0xFFFFFFFF
	for _, tc := range []struct {
		name     string
		props    []string
		cfg      nettest.GuestConfig
		hdrLen   int
		mrg      bool
		offloads uint64
		queues   int
	}{
		{"linux 6.1", nil, nettest.GuestConfig{}, 12, true, offCSUM | offTSO4 | offTSO6 | 1<<9 | 1<<10, 3},
		{"netkvm rsc", []string{"guest_rsc_ext", "on"}, nettest.GuestConfig{Features: netkvmFeat}, 12, true,
			offCSUM | offTSO4 | offTSO6 | 1<<9 | 1<<10, 3},
		{"legacy linux", nil, nettest.GuestConfig{Legacy: true, Features: low}, 12, true,
			offCSUM | offTSO4 | offTSO6 | 1<<9 | 1<<10, 3},
		{"legacy minimal", nil, nettest.GuestConfig{Legacy: true, Features: 1 << virtionet.FeatureMAC}, 10, false, 0, 3},
		{"modern minimal", nil, nettest.GuestConfig{Features: 1 << virtio.FeatureVersion1}, 12, false, 0, 3},
		{"guest_csum only", nil, nettest.GuestConfig{Features: 1<<virtio.FeatureVersion1 | offCSUM}, 12, false, offCSUM, 3},
		{"tso without csum", nil, nettest.GuestConfig{Features: 1<<virtio.FeatureVersion1 | offTSO4}, 12, false, offTSO4, 3},
		{"mq", []string{"mq", "on"}, nettest.GuestConfig{}, 12, true, offCSUM | offTSO4 | offTSO6 | 1<<9 | 1<<10, 9},
		{"ufo pruned", []string{"guest_ufo", "off", "host_ufo", "off"}, nettest.GuestConfig{}, 12, true,
			offCSUM | offTSO4 | offTSO6 | 1<<9, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t, 4)
			dev := newDevice(t, be, tc.props...)
			g := nettest.StartGuest(t, dev, tc.cfg)
			require.Equal(t, tc.hdrLen, g.HdrLen)
			require.Equal(t, tc.mrg, g.Mrg)
			require.Equal(t, tc.offloads, be.Offloads()[len(be.Offloads())-1])
			require.Len(t, g.Queues, tc.queues)
			require.Zero(t, dev.Negotiated()&^dev.Features(), "negotiated a bit that was not offered")
			// Traffic works in every profile.
			g.SetupRx(0, 16, 2048)
			if !tc.mrg {
				g.SetupRx(0, 8, uint32(tc.hdrLen), 65600)
			}
			g.PostRx(0, 8)
			f := ethFrame(guestMAC, hostMAC, 0x0800, 333, 1)
			be.Q(0).Inject(header.VirtioNetHdr{}, f)
			got, err := g.Recv(0, timeout)
			require.NoError(t, err)
			require.Equal(t, f, got.Data)
		})
	}
}
