package hck

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/rsc/conformance"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

// TestNetKVMNegotiation checks what the test driver negotiates and that it
// switches RSC on with GUEST_OFFLOADS_SET bit 61, as NetKVM does.
func TestNetKVMNegotiation(t *testing.T) {
	be, err := nettest.New(1)
	require.NoError(t, err)
	defer be.Close()
	sc, _ := conformance.Lookup("S01_BasicV4")
	cfg := conformance.DefaultConfig()
	r := &devRun{ctx: context.Background(), env: &memEnv{be: be}, opts: Options{}.normalized(), kind: conformance.Device,
		cfg: cfg, prog: sc.Build(cfg), linkUp: true}
	r.watch = newWatch(false, false)
	r.be = newWatchedBackend(be, r.watch)
	r.dev, err = r.newDevice(nil)
	require.NoError(t, err)
	require.NoError(t, r.startDriver())
	defer r.drv.close()
	n := r.drv.negotiated
	for _, b := range []uint{virtionet.FeatureRSCExt, virtionet.FeatureGuestTSO4, virtionet.FeatureGuestTSO6,
		virtionet.FeatureGuestCSUM, virtionet.FeatureCtrlGuestOffloads, virtionet.FeatureCtrlVQ, virtionet.FeatureMrgRxBuf} {
		require.NotZero(t, n&(1<<b), "bit %d negotiated", b)
	}
	require.True(t, r.drv.mrg)
	require.Equal(t, 12, r.drv.hdrLen)
	// The backend saw the offloads of negotiation and of OFFLOADS_SET.
	offs := be.Offloads()
	require.GreaterOrEqual(t, len(offs), 2)
	require.Equal(t, uint64(conformance.OffCSUM|conformance.OffTSO4|conformance.OffTSO6), offs[len(offs)-1]&^(1<<virtionet.FeatureGuestECN|1<<virtionet.FeatureGuestUFO))
	require.Equal(t, 0, len(r.drv.free), "every receive chain posted")
}
