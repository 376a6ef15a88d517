package virtio_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/rscvm/rscvm/vmm/memory"
)

// echoDevice copies each chain's readable bytes, reversed, into its
// writable part. It processes a queue synchronously when kicked.
type echoDevice struct {
	acked   uint64
	queues  []*queue.Queue
	irq     virtio.Interrupt
	resets  int
	refuse  bool
	stopped bool
}

var errRefused = errors.New("refused")

func (d *echoDevice) Type() virtio.DeviceType    { return virtio.DeviceTypeEntropy }
func (d *echoDevice) Features() uint64           { return offered }
func (d *echoDevice) LegacyOnlyFeatures() uint64 { return netGSO }
func (d *echoDevice) AckFeatures(f uint64)       { d.acked = f }
func (d *echoDevice) ReadConfig(_ uint64, p []byte) {
	for i := range p {
		p[i] = 0xFF
	}
}
func (d *echoDevice) WriteConfig(uint64, []byte) {}
func (d *echoDevice) QueueMaxSizes() []uint16    { return []uint16{16} }
func (d *echoDevice) ValidateFeatures(f uint64) error {
	if d.refuse {
		return errRefused
	}
	return nil
}

func (d *echoDevice) Activate(_ *memory.Memory, qs []*queue.Queue, _ []*virtio.Kick, irq virtio.Interrupt) error {
	if !qs[0].Ready() {
		return errors.New("queue 0 not enabled")
	}
	d.queues, d.irq, d.stopped = qs, irq, false
	return nil
}

func (d *echoDevice) Reset() { d.resets++; d.queues, d.irq = nil, nil }

func (d *echoDevice) kick(index int) {
	if d.stopped || d.queues == nil {
		return
	}
	q := d.queues[index]
	var buf [256]byte
	for {
		c, err := q.Pop()
		if err != nil {
			d.stopped = true
			d.irq.NeedsReset(err)
			return
		}
		if c == nil {
			break
		}
		n, _ := c.Reader().Read(buf[:])
		slices.Reverse(buf[:n])
		w := c.Writer()
		_, _ = w.Write(buf[:min(n, w.Available())])
		if err := q.AddUsed(c, uint32(w.BytesWritten())); err != nil {
			d.stopped = true
			d.irq.NeedsReset(err)
			return
		}
	}
	q.PublishUsed()
	if q.NeedsNotify() {
		_ = d.irq.SignalQueue(index)
	}
}

// fakeTransport is the smallest transport: it owns the State and queues,
// follows the Actions, and implements Interrupt.
type fakeTransport struct {
	dev       *echoDevice
	state     *virtio.State
	queues    []*queue.Queue
	mem       *memory.Memory
	signalled []int
	configIRQ int
	causes    []error
}

func newTransport(t *testing.T, dev *echoDevice, mem *memory.Memory) *fakeTransport {
	tr := &fakeTransport{dev: dev, state: virtio.NewDeviceState(dev), mem: mem}
	for _, n := range dev.QueueMaxSizes() {
		q, err := queue.New(n)
		require.NoError(t, err)
		tr.queues = append(tr.queues, q)
	}
	return tr
}

func (tr *fakeTransport) SignalQueue(i int) error { tr.signalled = append(tr.signalled, i); return nil }
func (tr *fakeTransport) SignalConfig() error {
	tr.configIRQ++
	tr.state.BumpConfigGeneration()
	return nil
}
func (tr *fakeTransport) NeedsReset(cause error) {
	tr.causes = append(tr.causes, cause)
	if tr.state.SetNeedsReset() {
		_ = tr.SignalConfig()
	}
}

func (tr *fakeTransport) writeStatus(v uint8) {
	act := tr.state.WriteStatus(v)
	if act&virtio.ActionReset != 0 {
		tr.dev.Reset()
		for _, q := range tr.queues {
			q.Reset()
		}
	}
	if act&virtio.ActionAckFeatures != 0 {
		f := tr.state.Negotiated()
		tr.dev.AckFeatures(f)
		for _, q := range tr.queues {
			q.SetFeatures(virtio.QueueFeatures(f))
		}
	}
	if act&virtio.ActionActivate != 0 {
		if err := tr.dev.Activate(tr.mem, tr.queues, nil, tr); err != nil {
			tr.NeedsReset(err)
		}
	}
	if act&virtio.ActionNotifyConfig != 0 {
		_ = tr.SignalConfig()
	}
}

func (tr *fakeTransport) negotiate(f uint64) {
	tr.writeStatus(ack)
	tr.writeStatus(ack | drv)
	writeFeatures(tr.state, f)
	tr.writeStatus(ack | drv | featOK)
}

func TestNewDeviceState(t *testing.T) {
	dev := &echoDevice{}
	s := virtio.NewDeviceState(dev)
	require.Equal(t, uint64(offered)&^legacyOnly, s.Offered())
	dev.refuse = true
	s.WriteStatus(ack | drv)
	writeFeatures(s, 1<<virtio.FeatureVersion1)
	s.WriteStatus(ack | drv | featOK)
	require.ErrorIs(t, s.FeaturesError(), errRefused)
}

// A guest protocol violation found by a queue ends in DEVICE_NEEDS_RESET
// with a configuration-change interrupt; a reset brings the device back.
func TestDeviceLifecycleNeedsReset(t *testing.T) {
	d := queuetest.New(t, 16, 1<<20)
	dev := &echoDevice{}
	tr := newTransport(t, dev, d.Mem)

	tr.negotiate(1<<virtio.FeatureVersion1 | 1<<virtio.FeatureEventIdx)
	require.Equal(t, uint64(1<<virtio.FeatureVersion1|1<<virtio.FeatureEventIdx), dev.acked)
	require.True(t, tr.queues[0].Features().EventIdx)
	require.NoError(t, d.Configure(tr.queues[0]))
	d.EventIdx = true
	tr.writeStatus(ack | drv | featOK | drvOK)
	require.NotNil(t, dev.queues)

	head, err := d.AddChain(queuetest.R([]byte("hello")), queuetest.W(16))
	require.NoError(t, err)
	dev.kick(0)
	require.Equal(t, []queuetest.UsedElem{{ID: uint32(head), Len: 5}}, d.Completed())
	require.Equal(t, "olleh", string(d.Written(head, 5)))
	require.Equal(t, []int{0}, tr.signalled)

	// The guest posts a looping chain.
	require.NoError(t, d.WriteDesc(9, queuetest.Desc{Addr: d.Data, Len: 1, Flags: queue.DescFNext, Next: 9}))
	require.NoError(t, d.PostHead(9))
	dev.kick(0)
	require.Len(t, tr.causes, 1)
	require.ErrorIs(t, tr.causes[0], queue.ErrChainTooLong)
	require.Equal(t, ack|drv|featOK|drvOK|needsRS, tr.state.Status())
	require.Equal(t, 1, tr.configIRQ)
	require.Equal(t, uint8(1), tr.state.ConfigGeneration())
	dev.kick(0) // stopped: nothing happens
	require.Len(t, tr.causes, 1)

	// Driver resets and starts over.
	tr.writeStatus(0)
	require.Equal(t, 1, dev.resets)
	require.Zero(t, tr.state.Status())
	require.False(t, tr.queues[0].Ready())
	d2, err := queuetest.NewDriver(d.Mem, queuetest.DefaultLayout(16, 1<<20))
	require.NoError(t, err)
	tr.negotiate(1 << virtio.FeatureVersion1)
	require.False(t, tr.queues[0].Features().EventIdx)
	require.NoError(t, d2.Configure(tr.queues[0]))
	tr.writeStatus(ack | drv | featOK | drvOK)
	head, err = d2.AddChain(queuetest.R([]byte("ab")), queuetest.W(2))
	require.NoError(t, err)
	dev.kick(0)
	require.Equal(t, "ba", string(d2.Written(head, 2)))
}

// Activation failure (the driver never enabled the queue) also ends in
// DEVICE_NEEDS_RESET.
func TestActivateFailure(t *testing.T) {
	d := queuetest.New(t, 16, 1<<20)
	dev := &echoDevice{}
	tr := newTransport(t, dev, d.Mem)
	tr.negotiate(1 << virtio.FeatureVersion1)
	tr.writeStatus(ack | drv | featOK | drvOK)
	require.Equal(t, ack|drv|featOK|drvOK|needsRS, tr.state.Status())
	require.Equal(t, 1, tr.configIRQ)
}
