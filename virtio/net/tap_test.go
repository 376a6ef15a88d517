package virtionet_test

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/net/header"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

// tapRig is a device on a real TAP in a fresh namespace: the host side has
// 10.0.0.1/24 and a permanent neighbour entry for the guest's 10.0.0.2.
type tapRig struct {
	ns      *virtionet.TapNetns
	be      *virtionet.TapBackend
	dev     *virtionet.Device
	hostMAC [6]byte
	ifname  string
}

func newTapRig(t *testing.T, props ...string) *tapRig {
	t.Helper()
	virtionet.RequireTapEnv(t)
	ns := virtionet.NewTapNetns(t)
	const ifname = "vnet0"
	tp := ns.OpenTap(t, ifname, hostIP.String()+"/24")
	mac, err := tp.MAC()
	require.NoError(t, err)
	ns.Run(t, "ip", "neigh", "replace", guestIP.String(), "lladdr", net.HardwareAddr(guestMAC[:]).String(),
		"dev", ifname, "nud", "permanent")
	be, err := virtionet.NewTapBackend(tp)
	require.NoError(t, err)
	return &tapRig{ns: ns, be: be, dev: newDevice(t, be, props...), hostMAC: [6]byte(mac), ifname: ifname}
}

// tcpStats is what the guest's receiver saw.
type tcpStats struct {
	segments, gso, rsc int
	data               []byte
}

// guestTCPReceive plays a minimal TCP receiver on 10.0.0.2:port over the
// device: it answers the host's SYN (MSS 1460, window 65535, no options the
// host could use for timestamps or scaling), ACKs every in-order segment
// cumulatively (out-of-order data is dropped and re-ACKed), and returns the
// stream once the host's FIN arrives.
func guestTCPReceive(t *testing.T, g *nettest.Guest, hostMAC [6]byte, port uint16, deadline time.Time) (tcpStats, error) {
	var st tcpStats
	var rcvNxt, sndNxt uint32
	var sport uint16
	established := false
	send := func(flags uint8, opts []byte) error {
		f := header.TCPFrame{DstMAC: hostMAC, SrcMAC: guestMAC, Src: guestIP, Dst: hostIP, DontFragment: true,
			SrcPort: port, DstPort: sport, Seq: sndNxt, Ack: rcvNxt, Flags: flags, Window: 65535, Options: opts}
		return g.Send(1, header.VirtioNetHdr{}, f.Build(nil))
	}
	for {
		if time.Now().After(deadline) {
			return st, fmt.Errorf("timed out after %d bytes", len(st.data))
		}
		rx, err := g.Recv(0, 100*time.Millisecond)
		if err != nil {
			continue
		}
		g.PostRx(0, rx.Buffers)
		eth := header.Ethernet(rx.Data)
		if !eth.IsValid() || eth.Type() != header.EtherTypeIPv4 {
			continue
		}
		ip := header.IPv4(rx.Data[header.EthernetMinSize:])
		if !ip.IsValid() || ip.Protocol() != header.ProtocolTCP {
			continue
		}
		seg := ip.Payload()
		tcp := header.TCP(seg)
		if !tcp.IsValid() || tcp.DstPort() != port {
			continue
		}
		payload := tcp.Payload()
		switch {
		case tcp.Flags()&header.TCPFlagSYN != 0:
			sport = tcp.SrcPort()
			rcvNxt = tcp.Seq() + 1
			sndNxt = 0x10000000
			if err := send(header.TCPFlagSYN|header.TCPFlagACK, []byte{2, 4, 0x05, 0xb4}); err != nil {
				return st, err
			}
			sndNxt++
			established = true
			continue
		case !established:
			continue
		}
		st.segments++
		if rx.Hdr.GSOType != header.VirtioNetHdrGSONone {
			st.gso++
		}
		if _, _, ok := rx.Hdr.RSCInfo(); ok {
			st.rsc++
		}
		fin := false
		if tcp.Seq() == rcvNxt {
			st.data = append(st.data, payload...)
			rcvNxt += uint32(len(payload))
			if tcp.Flags()&header.TCPFlagFIN != 0 {
				rcvNxt++
				fin = true
			}
		}
		flags := uint8(header.TCPFlagACK)
		if fin {
			flags |= header.TCPFlagFIN
		}
		if len(payload) > 0 || fin {
			if err := send(flags, nil); err != nil {
				return st, err
			}
		}
		if fin {
			return st, nil
		}
	}
}

// hostSend connects from the namespace to the guest and writes data.
func hostSend(r *tapRig, port uint16, data []byte) <-chan error {
	errc := make(chan error, 1)
	go func() {
		errc <- r.ns.Do(func() error {
			conn, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", guestIP, port), 10*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
			_, err = conn.Write(data)
			return err
		})
	}()
	return errc
}

// TestTapTCPToGuest sends a TCP stream from the host side of a real TAP to
// the test driver and compares SHA-256 digests: with the tap's TSO on (the
// guest accepts GSO: 64 KB super-frames arrive), with it off (MSS frames),
// and with RSC coalescing MSS frames for a NetKVM-like guest.
func TestTapTCPToGuest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		props    []string
		feat     uint64
		noTapTSO bool // turn TSO/GSO off on the tap (ethtool -K) after negotiation
		wantGSO  bool
		wantRSC  bool
	}{
		{name: "host TSO", wantGSO: true},
		{name: "no host TSO", props: []string{"guest_tso4", "off", "guest_tso6", "off", "guest_ecn", "off", "guest_ufo", "off"}},
		{name: "RSC", props: []string{"guest_rsc_ext", "on"}, feat: netkvmFeat, noTapTSO: true, wantGSO: true, wantRSC: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTapRig(t, tc.props...)
			g := nettest.StartGuest(t, r.dev, nettest.GuestConfig{Features: tc.feat})
			g.SetupRx(0, 256, 4096)
			g.PostRx(0, 256)
			if tc.noTapTSO {
				r.ns.Run(t, "ethtool", "-K", r.ifname, "tso", "off", "gso", "off")
			}
			data := make([]byte, 8<<20)
			_, _ = rand.Read(data)
			const port = 7777
			errc := hostSend(r, port, data)
			st, err := guestTCPReceive(t, g, r.hostMAC, port, time.Now().Add(60*time.Second))
			require.NoError(t, err)
			require.NoError(t, <-errc)
			require.Equal(t, sha256.Sum256(data), sha256.Sum256(st.data), "stream differs")
			t.Logf("%s: %d segments, %d GSO, %d RSC", tc.name, st.segments, st.gso, st.rsc)
			if tc.wantGSO {
				require.Positive(t, st.gso)
			} else {
				require.Zero(t, st.gso)
			}
			if tc.wantRSC {
				require.Positive(t, st.rsc)
			} else {
				require.Zero(t, st.rsc)
			}
			s := r.dev.Stats().Queues[0]
			require.Zero(t, s.RxDropGSO+s.RxDropTooBig+s.RxDropShort+s.RxDropCsum+s.TxDropGSO+s.TxDropBackend)
		})
	}
}

// TestTapOffloadsFollowGuest checks with ethtool -k that the tap's offloads
// are the negotiated guest offloads after feature negotiation and after
// every GUEST_OFFLOADS_SET, and that reset clears them.
func TestTapOffloadsFollowGuest(t *testing.T) {
	virtionet.RequireTapEnv(t, "ethtool")
	r := newTapRig(t)
	type feat map[string]string
	check := func(want feat) {
		t.Helper()
		got := r.ns.Ethtool(t, r.ifname)
		for k, v := range want {
			require.Equal(t, v, got[k], "ethtool -k %s: %s", r.ifname, k)
		}
	}
	check(feat{"tx-checksumming": "off", "tcp-segmentation-offload": "off"})
	g := nettest.StartGuest(t, r.dev, nettest.GuestConfig{})
	// Linux 6.1: CSUM, TSO4, TSO6, ECN, UFO.
	check(feat{"tx-checksumming": "on", "tx-tcp-segmentation": "on", "tx-tcp6-segmentation": "on",
		"tx-tcp-ecn-segmentation": "on"})
	for _, step := range []struct {
		bits uint64
		want feat
	}{
		{offCSUM, feat{"tx-checksumming": "on", "tcp-segmentation-offload": "off"}},
		{0, feat{"tx-checksumming": "off", "tcp-segmentation-offload": "off"}},
		{offCSUM | offTSO4 | offTSO6, feat{"tx-checksumming": "on", "tx-tcp-segmentation": "on",
			"tx-tcp6-segmentation": "on", "tx-tcp-ecn-segmentation": "off"}},
		{offCSUM | offTSO4 | 1<<virtionet.FeatureGuestECN, feat{"tx-tcp-segmentation": "on",
			"tx-tcp6-segmentation": "off", "tx-tcp-ecn-segmentation": "on"}},
		{offTSO4 | offTSO6, feat{"tx-checksumming": "off", "tcp-segmentation-offload": "off"}}, // TSO needs CSUM
	} {
		ack, err := g.SetOffloads(step.bits)
		require.NoError(t, err)
		require.Zero(t, ack)
		check(step.want)
	}
	g.Reset()
	check(feat{"tx-checksumming": "off", "tcp-segmentation-offload": "off"})
}
