package virtiopci

import (
	"errors"
	"fmt"

	"github.com/rscvm/rscvm/vmm/kvm"
)

// BARMoved implements pci.BARMover: the queue ioeventfds follow BAR 0 and
// BAR 4 when the guest relocates them or toggles decoding.
func (t *Transport) BARMoved(bar int, _, new uint64) {
	if bar < 0 || bar >= len(t.barBase) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.barBase[bar] = new
	t.syncIOEventFDsLocked()
}

// IOEventFDs returns the notification ioeventfds currently registered with
// the platform.
func (t *Transport) IOEventFDs() []kvm.IOEventFD {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]kvm.IOEventFD(nil), t.ioevents...)
}

// wantedIOEventFDsLocked lists the registrations the current state calls
// for: while the device is active, for every enabled queue, the modern
// notify address (no datamatch, any length if KVM allows it) if BAR 4 is
// mapped and the legacy QUEUE_NOTIFY port (2-byte datamatch of the queue
// index) if BAR 0 is mapped.
func (t *Transport) wantedIOEventFDsLocked() []kvm.IOEventFD {
	if t.plat == nil || !t.activated || t.closed {
		return nil
	}
	var want []kvm.IOEventFD
	for i, q := range t.queues {
		if !q.Ready() {
			continue
		}
		fd := t.kicks[i].File()
		if base := t.barBase[BARModern]; t.modern && base != 0 {
			want = append(want, kvm.IOEventFD{
				FD:   fd,
				Addr: base + NotifyOffset + NotifyOffMultiplier*uint64(i),
				Len:  t.notifyLen,
			})
		}
		if base := t.barBase[BARLegacy]; t.legacy && base != 0 {
			want = append(want, kvm.IOEventFD{
				FD:           fd,
				Addr:         base + LegacyQueueNotify,
				Len:          2,
				PIO:          true,
				HasDataMatch: true,
				DataMatch:    uint64(i),
			})
		}
	}
	return want
}

// syncIOEventFDsLocked brings the platform's registrations in line with
// wantedIOEventFDsLocked. Failures are logged; the notifications concerned
// keep reaching the BAR handlers, which signal the kicks themselves.
func (t *Transport) syncIOEventFDsLocked() []error {
	want := t.wantedIOEventFDsLocked()
	var errs []error
	kept := t.ioevents[:0]
	for _, r := range t.ioevents {
		if containsIOEventFD(want, r) {
			kept = append(kept, r)
			continue
		}
		if err := t.plat.UnregisterIOEventFD(r); err != nil {
			errs = append(errs, fmt.Errorf("virtio-pci: unregister ioeventfd %v: %w", r, err))
		}
	}
	t.ioevents = kept
	for _, w := range want {
		if !w.PIO {
			w.Len = t.notifyLen // may have changed to 2 in this loop
		}
		if containsIOEventFD(t.ioevents, w) {
			continue
		}
		err := t.plat.RegisterIOEventFD(w)
		if err != nil && !w.PIO && w.Len == 0 && !t.notifyFixed {
			// No KVM_CAP_IOEVENTFD_ANY_LENGTH: QEMU then matches the
			// 2-byte writes drivers use. Other widths exit and reach
			// the BAR handler.
			w.Len = 2
			if err2 := t.plat.RegisterIOEventFD(w); err2 == nil {
				t.notifyLen, err = 2, nil
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("virtio-pci: register ioeventfd %v: %w", w, err))
			continue
		}
		if !w.PIO {
			t.notifyFixed = true
		}
		t.ioevents = append(t.ioevents, w)
	}
	if err := errors.Join(errs...); err != nil {
		t.log.Error("virtio-pci: ioeventfds", "err", err)
	}
	return errs
}

func containsIOEventFD(list []kvm.IOEventFD, e kvm.IOEventFD) bool {
	for _, x := range list {
		if x == e {
			return true
		}
	}
	return false
}
