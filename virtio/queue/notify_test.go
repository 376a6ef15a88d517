package queue_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
)

func popPush(t *testing.T, d *queuetest.Driver, q *queue.Queue) {
	t.Helper()
	_, err := d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 1))
	d.Completed()
}

func TestNeedsNotifyNoEventIdx(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	require.False(t, q.NeedsNotify(), "nothing published")
	popPush(t, d, q)
	require.True(t, q.NeedsNotify())
	require.False(t, q.NeedsNotify(), "nothing new")

	require.NoError(t, d.SetAvailFlags(queue.AvailFNoInterrupt))
	popPush(t, d, q)
	require.False(t, q.NeedsNotify(), "driver set NO_INTERRUPT")
	require.NoError(t, d.SetAvailFlags(0))
	popPush(t, d, q)
	require.True(t, q.NeedsNotify())

	// Without EVENT_IDX used_event is ignored.
	require.NoError(t, d.SetUsedEvent(0x1234))
	popPush(t, d, q)
	require.True(t, q.NeedsNotify())
}

func TestNeedsNotifyEventIdxIgnoresFlags(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{EventIdx: true})
	popPush(t, d, q)
	require.True(t, q.NeedsNotify(), "first check")
	require.NoError(t, d.SetAvailFlags(queue.AvailFNoInterrupt))
	require.NoError(t, d.SetUsedEvent(1)) // the entry just before idx 2
	popPush(t, d, q)
	require.True(t, q.NeedsNotify(), "the NO_INTERRUPT flag is ignored with EVENT_IDX")
	popPush(t, d, q)
	require.False(t, q.NeedsNotify(), "used_event already passed")
}

func TestNotifyOnEmpty(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{NotifyOnEmpty: true})
	require.NoError(t, d.SetAvailFlags(queue.AvailFNoInterrupt))
	// Two chains posted; after the first is used the ring is not empty.
	_, err := d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	_, err = d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	c, err := q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 0))
	require.False(t, q.NeedsNotify())
	c, err = q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 0))
	require.True(t, q.NeedsNotify(), "ran out of buffers: notify despite NO_INTERRUPT")
}

func TestEnableDisableNotificationFlags(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{})
	q.DisableNotification()
	require.Equal(t, queue.UsedFNoNotify, d.UsedFlags())
	_, err := d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	require.False(t, d.KickNeeded(), "device asked for no kicks")
	more, err := q.EnableNotification()
	require.NoError(t, err)
	require.True(t, more, "a chain arrived while notifications were off")
	require.Zero(t, d.UsedFlags())
	c, err := q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 0))
	more, err = q.EnableNotification()
	require.NoError(t, err)
	require.False(t, more)
	_, err = d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	require.True(t, d.KickNeeded())
}

func TestEnableNotificationEventIdx(t *testing.T) {
	d := newDriver(t, 8)
	q := d.NewQueue(t, queue.Features{EventIdx: true})
	q.DisableNotification()
	require.Zero(t, d.UsedFlags(), "flags stay 0 with EVENT_IDX")

	more, err := q.EnableNotification()
	require.NoError(t, err)
	require.False(t, more)
	require.Equal(t, uint16(0), d.AvailEvent())
	_, err = d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	require.True(t, d.KickNeeded(), "idx passed avail_event 0")

	// While the device is busy (avail_event not advanced), further posts
	// need no kick.
	c, err := q.Pop()
	require.NoError(t, err)
	_, err = d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	require.False(t, d.KickNeeded())
	require.NoError(t, q.Push(c, 0))

	// Re-enabling sets avail_event to the device's position and reports the
	// chain that raced in.
	more, err = q.EnableNotification()
	require.NoError(t, err)
	require.True(t, more)
	require.Equal(t, uint16(1), d.AvailEvent())
	c, err = q.Pop()
	require.NoError(t, err)
	require.NoError(t, q.Push(c, 0))
	more, err = q.EnableNotification()
	require.NoError(t, err)
	require.False(t, more)
	require.Equal(t, uint16(2), d.AvailEvent())
	_, err = d.AddChain(queuetest.W(4))
	require.NoError(t, err)
	require.True(t, d.KickNeeded())
}

func TestNotificationOnDisabledQueue(t *testing.T) {
	q, err := queue.New(8)
	require.NoError(t, err)
	_, err = q.EnableNotification()
	require.ErrorIs(t, err, queue.ErrNotReady)
	q.DisableNotification()
	q.PublishUsed()
	require.False(t, q.NeedsNotify())
}
