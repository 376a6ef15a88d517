package vhostuser

import (
	"log/slog"
	"testing"

	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/net/nettest"
)

// FuzzRequests feeds arbitrary request sequences (no descriptors) to a
// backend serving a virtio-net device: nothing may panic, and the backend
// must still answer GET_FEATURES afterwards.
func FuzzRequests(f *testing.F) {
	msg := func(req Request, payload []byte) []byte {
		b := make([]byte, HeaderSize+len(payload))
		le.PutUint32(b[0:4], uint32(req))
		le.PutUint32(b[4:8], version)
		le.PutUint32(b[8:12], uint32(len(payload)))
		copy(b[HeaderSize:], payload)
		return b
	}
	cat := func(ms ...[]byte) []byte {
		var out []byte
		for _, m := range ms {
			out = append(out, m...)
		}
		return out
	}
	addr := make([]byte, vringAddrSize)
	le.PutUint64(addr[8:], 0x1000)
	f.Add(cat(msg(ReqSetFeatures, u64(1<<32)), msg(ReqSetVringNum, state(0, 256)), msg(ReqSetVringAddr, addr),
		msg(ReqSetVringEnable, state(0, 1)), msg(ReqGetVringBase, state(0, 0))))
	f.Add(cat(msg(ReqSetMemTable, append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, regionBytes(0, 4096, 0, 0)...)),
		msg(ReqAddMemReg, append(make([]byte, 8), regionBytes(0, 4096, 0, 0)...)), msg(ReqRemMemReg, make([]byte, 40))))
	cfg := make([]byte, configHdrSize+6)
	le.PutUint32(cfg[4:8], 6)
	f.Add(cat(msg(ReqGetConfig, cfg), msg(ReqSetConfig, cfg), msg(ReqSetStatus, u64(15)), msg(ReqResetDevice, nil)))
	f.Add(cat(msg(ReqSetProtocolFeatures, u64(baseProtocol|1<<ProtocolConfig)), msg(ReqSetVringKick, u64(vringNoFD)),
		msg(ReqSetVringCall, u64(1|vringNoFD)), msg(ReqSetVringBase, state(1, 70000))))

	be, err := nettest.New(1)
	if err != nil {
		f.Fatal(err)
	}
	defer be.Close()
	dev, err := virtionet.New(virtionet.DefaultConfig(), be, virtionet.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := New(Config{Device: dev, Rings: 2, FeatureMask: virtionet.VhostUserFeatureMask(), AckHook: dev.VhostUserAck,
			ConfigSpace: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.disconnect()
		for len(data) >= HeaderSize {
			h := Header(data[:HeaderSize])
			data = data[HeaderSize:]
			n := min(int(h.Size()), len(data))
			m := &message{hdr: h, payload: data[:n]}
			data = data[n:]
			_, _ = b.dispatch(h.Request(), m)
			m.closeFiles()
		}
		if p, err := b.dispatch(ReqGetFeatures, &message{}); err != nil || len(p) != 8 {
			t.Fatalf("GET_FEATURES after the sequence: %x, %v", p, err)
		}
	})
}
