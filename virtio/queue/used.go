package queue

import (
	"github.com/rscvm/rscvm/vmm/memory"
)

// AddUsed writes a used element for c (id = head, len = written) into the
// used ring without publishing it: call PublishUsed once after a batch.
// written must not exceed c.WritableLen() (ErrUsedLen). After AddUsed the
// chain and its slices must not be used again.
//
// If the batch would overwrite used entries the driver has not been shown
// yet (more than queue-size unpublished elements), the earlier ones are
// published first.
func (q *Queue) AddUsed(c *Chain, written uint32) error {
	if err := q.checkChain(c); err != nil {
		return err
	}
	if written > c.writeLen {
		return ErrUsedLen
	}
	if q.nextUsed-q.pubUsed >= q.size {
		q.PublishUsed()
	}
	off := 4 + UsedElemSize*int(q.nextUsed&q.mask)
	e := q.used[off : off+UsedElemSize]
	le.PutUint32(e[0:4], uint32(c.head))
	le.PutUint32(e[4:8], written)
	q.nextUsed++
	c.inflight = false
	c.release()
	q.inflight--
	return nil
}

// PublishUsed makes the used elements added since the last call visible to
// the driver: a fence orders the element stores before the store of the new
// used idx. It does nothing if nothing was added.
func (q *Queue) PublishUsed() {
	if !q.enabled || q.nextUsed == q.pubUsed {
		return
	}
	memory.Fence()
	le.PutUint16(q.used[2:4], q.nextUsed)
	q.pubUsed = q.nextUsed
}

// Push is AddUsed followed by PublishUsed.
func (q *Queue) Push(c *Chain, written uint32) error {
	if err := q.AddUsed(c, written); err != nil {
		return err
	}
	q.PublishUsed()
	return nil
}

// NeedsNotify reports whether the driver should get a used-buffer
// notification for the elements published since the previous call. Call it
// after PublishUsed; it returns false when nothing new was published.
//
// With VIRTIO_F_EVENT_IDX it applies the vring_need_event rule: notify when
// the driver's used_event lies in [old, new) of the used indexes published
// since the last check (16-bit wrapping arithmetic). Without it, the driver's
// VIRTQ_AVAIL_F_NO_INTERRUPT flag suppresses the notification, unless
// VIRTIO_F_NOTIFY_ON_EMPTY was negotiated and the device has run out of
// available buffers with nothing in flight.
func (q *Queue) NeedsNotify() bool {
	if !q.enabled || q.broken != nil || q.pubUsed == q.signalled {
		return false
	}
	// Order the used idx store before the load of used_event / flags.
	memory.Fence()
	old, valid := q.signalled, q.sigValid
	q.signalled, q.sigValid = q.pubUsed, true
	if q.feat.EventIdx {
		if !valid {
			return true
		}
		off := 4 + 2*int(q.size)
		event := le.Uint16(q.avail[off : off+2])
		return NeedEvent(event, q.pubUsed, old)
	}
	if q.feat.NotifyOnEmpty && q.inflight == 0 && le.Uint16(q.avail[2:4]) == q.lastAvail {
		return true
	}
	return le.Uint16(q.avail[0:2])&AvailFNoInterrupt == 0
}

// NeedEvent is the EVENT_IDX rule (vring_need_event): after moving an index
// from oldIdx to newIdx, the other side asked to be told once the index
// passes event, that is when event lies in [oldIdx, newIdx) modulo 2^16.
func NeedEvent(event, newIdx, oldIdx uint16) bool {
	return newIdx-event-1 < newIdx-oldIdx
}

// EnableNotification asks the driver to notify the device of new available
// buffers: with EVENT_IDX it writes avail_event = LastAvailIdx(), otherwise
// it clears VIRTQ_USED_F_NO_NOTIFY. It then re-reads the avail index and
// reports whether chains are already available, closing the race with a
// driver that added buffers while notifications were off: when it returns
// true the device must keep popping instead of waiting for a kick.
func (q *Queue) EnableNotification() (bool, error) {
	if q.broken != nil {
		return false, q.broken
	}
	if !q.enabled {
		return false, ErrNotReady
	}
	if q.feat.EventIdx {
		off := 4 + UsedElemSize*int(q.size)
		le.PutUint16(q.used[off:off+2], q.lastAvail)
	} else {
		le.PutUint16(q.used[0:2], 0)
	}
	// Order the store above before the load of avail idx.
	memory.Fence()
	if err := q.readAvailIdx(); err != nil {
		return false, err
	}
	return q.availIdx != q.lastAvail, nil
}

// DisableNotification tells the driver that notifications are not needed
// while the device is busy: without EVENT_IDX it sets
// VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX (where the flags must stay 0) it
// does nothing, since avail_event is only advanced by EnableNotification.
func (q *Queue) DisableNotification() {
	if !q.enabled || q.broken != nil || q.feat.EventIdx {
		return
	}
	le.PutUint16(q.used[0:2], UsedFNoNotify)
}
