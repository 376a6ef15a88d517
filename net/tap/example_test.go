package tap_test

import (
	"context"
	"errors"
	"log"

	"github.com/rscvm/rscvm/net/tap"
)

// An rx worker for one queue pair: one goroutine, one Poller, no goroutine per packet. The kick fd stands for
// the virtqueue's ioeventfd (the guest posted rx buffers).
func Example_rxWorker() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t, err := tap.Open(tap.Config{Name: "tap%d", Queues: 1})
	if err != nil {
		log.Print(err) // e.g. "tap tap%d: TUNSETIFF: operation not permitted (creating or attaching a TAP needs root ...)"
		return
	}
	defer t.Close()
	// After feature negotiation: the guest's GUEST_* offload bits decide what the tap may hand us.
	var negotiated uint64 = 1<<1 | 1<<7 | 1<<8 // GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6
	if _, err := t.SetOffload(tap.OffloadFromBits(negotiated)); err != nil {
		log.Print(err)
	}
	_ = t.SetUp(true)

	q := t.Queue(0)
	p, err := tap.NewPoller(ctx)
	if err != nil {
		log.Print(err)
		return
	}
	defer p.Close()
	const tokTap, tokKick = 0, 1
	_ = p.Add(q.Fd(), tap.Readable, tokTap)
	// _ = p.Add(kickFd, tap.Readable, tokKick)

	hdr := make([]byte, q.VnetHdrSize())
	frame := make([]byte, 65550)
	iovs := [][]byte{hdr, frame} // in a device: slices of guest memory from the descriptor chain
	ready := make([]tap.Ready, 4)
	for {
		n, err := q.ReadV(iovs)
		switch {
		case err == nil:
			_ = n // publish the used buffer (hdr+frame, n bytes) to the guest
			continue
		case !errors.Is(err, tap.ErrWouldBlock):
			log.Print(err)
			return
		}
		if _, err := p.Wait(ready, -1); err != nil {
			return // context cancelled
		}
	}
}
