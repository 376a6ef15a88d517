package virtionet

import (
	"encoding/binary"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/rsc"
)

// rxResult is the outcome of one receive attempt.
type rxResult uint8

const (
	rxNext    rxResult = iota // a frame was handled (delivered or dropped): go on
	rxEmpty                   // the backend has nothing (or failed): end of batch
	rxBlocked                 // the ring is full, or the queue broke: stop
)

// hdrVerdict is the result of checking a TAP header against the guest's
// current offloads.
type hdrVerdict uint8

const (
	hdrOK       hdrVerdict = iota
	hdrDropGSO             // GSO type the driver did not enable
	hdrDropCsum            // checksum offsets outside the frame
	hdrNeedCsum            // NEEDS_CSUM for a driver without GUEST_CSUM: complete it
)

// gsoOffloads are the guest offloads that let the TAP hand over GSO frames.
const gsoOffloads = 1<<FeatureGuestTSO4 | 1<<FeatureGuestTSO6 | 1<<FeatureGuestUFO |
	1<<FeatureGuestUSO4 | 1<<FeatureGuestUSO6

// nonGSOFrame is the largest frame expected without GSO offloads (1500-byte
// MTU, one VLAN tag); larger ones spill into the overflow buffer.
const nonGSOFrame = 1500 + header.EthernetMinSize + header.VLANTagSize

// checkHdr validates h (as the TAP wrote it) for a frame of n bytes against
// the current offloads and rewrites it as the driver may see it.
func (w *worker) checkHdr(h *header.VirtioNetHdr, n int) hdrVerdict {
	off := w.cfg.offloads
	csum := has(off, FeatureGuestCSUM)
	h.Flags &= header.VirtioNetHdrFNeedsCsum | header.VirtioNetHdrFDataValid
	h.NumBuffers = 0
	if h.GSOType != header.VirtioNetHdrGSONone {
		ok := false
		switch h.GSOType &^ header.VirtioNetHdrGSOECN {
		case header.VirtioNetHdrGSOTCPv4:
			ok = has(off, FeatureGuestTSO4)
		case header.VirtioNetHdrGSOTCPv6:
			ok = has(off, FeatureGuestTSO6)
		case header.VirtioNetHdrGSOUDP:
			ok = has(off, FeatureGuestUFO)
		case header.VirtioNetHdrGSOUDPL4:
			ok = has(off, FeatureGuestUSO4) || has(off, FeatureGuestUSO6)
		}
		if h.GSOType&header.VirtioNetHdrGSOECN != 0 && !has(off, FeatureGuestECN) {
			ok = false
		}
		if !ok || !csum || h.GSOSize == 0 {
			return hdrDropGSO
		}
	}
	if h.Flags&header.VirtioNetHdrFNeedsCsum != 0 {
		if int(h.CsumStart)+int(h.CsumOffset)+2 > n {
			return hdrDropCsum
		}
		if !csum {
			return hdrNeedCsum
		}
	}
	if !csum {
		h.Flags = 0
	}
	return hdrOK
}

// completeCsum finishes a partial checksum in frame (bounds checked by
// checkHdr) and returns the checksum field's offset.
func completeCsum(h *header.VirtioNetHdr, frame []byte) int {
	start := int(h.CsumStart)
	at := start + int(h.CsumOffset)
	c := ^header.Sum(frame[start:], 0)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[at:at+2], c)
	*h = header.VirtioNetHdr{}
	return at
}

// need is the writable bytes to keep popped ahead with mergeable buffers.
func (w *worker) need() int {
	if has(w.cfg.offloads, FeatureGuestCSUM) && w.cfg.offloads&gsoOffloads != 0 {
		return w.hdrLen + MaxFrameSize
	}
	return w.hdrLen + max(nonGSOFrame, int(w.d.cfg.HostMTU)+header.EthernetMinSize+header.VLANTagSize)
}

// prefetch pops chains until the FIFO holds at least bytes writable bytes
// (mergeable) or one chain (otherwise), or the ring is empty. Chains too
// small for the header are returned at once with length 0. It returns
// false if the queue broke.
func (w *worker) prefetch(bytes int) bool {
	for w.pre.n < len(w.pre.buf) {
		if w.mrg {
			if w.pre.bytes >= bytes {
				return true
			}
		} else if w.pre.n >= 1 {
			return true
		}
		c, err := w.rxq.Pop()
		if err != nil {
			w.queueError(w.rxIdx, err)
			return false
		}
		if c == nil {
			return true
		}
		if int(c.WritableLen()) < w.hdrLen {
			if err := w.rxq.AddUsed(c, 0); err != nil {
				w.queueError(w.rxIdx, err)
				return false
			}
			w.rxPublish = true
			w.st.RxBadBuffers++
			continue
		}
		if !w.mrg {
			if n := int(c.WritableLen()) - w.hdrLen; w.minChain == 0 || n < w.minChain {
				w.minChain = n
			}
		}
		w.pre.push(c)
	}
	return true
}

// ringExhausted reports whether the device holds every chain of the ring:
// a frame that does not fit then never will, and waiting would deadlock.
func (w *worker) ringExhausted() bool { return w.pre.n >= int(w.rxq.Size()) }

// starve is called when the FIFO is empty: it arms the rx kick unless the
// driver posted buffers meanwhile (then it returns false: pop again).
func (w *worker) starve() bool {
	more, err := w.rxq.EnableNotification()
	if err != nil {
		w.queueError(w.rxIdx, err)
		return true
	}
	if more {
		return false
	}
	w.starving = true
	w.st.RxRingFull++
	return true
}

// rxPass receives frames until the backend is empty, the budget is spent
// or the ring is full. It reports whether more work is ready right away.
func (w *worker) rxPass() bool {
	if !w.rxOn || w.starving || w.stalled || len(w.pendReq) > 0 {
		return false
	}
	defer w.finishRx()
	if w.held {
		if !w.retryHeld() {
			w.stall()
			return !w.stalled
		}
	}
	if w.engine != nil && w.engine.Pending() > 0 && !w.engine.EndBatch(w.clock()) {
		w.stall()
		return !w.stalled
	}
	for i := 0; i < rxBudget; i++ {
		var r rxResult
		if w.cfg.rscOn() {
			r = w.rxOneRSC()
		} else {
			r = w.rxOneDirect()
		}
		switch r {
		case rxEmpty:
			if w.engine != nil && w.engine.Pending() > 0 && !w.engine.EndBatch(w.clock()) {
				w.stall()
				return !w.stalled
			}
			return false
		case rxBlocked:
			return w.rxOn && !w.starving && !w.stalled
		}
		if !w.rxOn {
			return false
		}
	}
	return true
}

// finishRx publishes used entries and notifies the driver per EVENT_IDX.
func (w *worker) finishRx() {
	if !w.rxPublish || !w.rxOn {
		return
	}
	w.rxPublish = false
	w.rxq.PublishUsed()
	if w.rxq.NeedsNotify() {
		w.st.RxNotifications++
		if err := w.irq.SignalQueue(w.rxIdx); err != nil {
			w.d.guestWarn("virtio-net: rx interrupt", "queue", w.rxIdx, "err", err)
		}
	}
	w.dirty = true
}

// accept runs the link, length and filter checks common to both paths on
// a frame of n bytes whose first bytes are in head. It counts drops.
func (w *worker) accept(n int, head []byte) bool {
	w.dirty = true
	switch {
	case n > MaxFrameSize:
		w.st.RxDropTooBig++
	case !w.cfg.linkUp:
		w.st.RxDropLinkDown++
	case n < header.EthernetMinSize:
		w.st.RxDropShort++
	case !w.filter.Accept(head):
		w.st.RxDropFiltered++
	default:
		return true
	}
	return false
}

// readErr handles a failed backend read.
func (w *worker) readErr(err error) rxResult {
	if isWouldBlock(err) {
		return rxEmpty
	}
	w.st.RxDropBackend++
	w.dirty = true
	w.d.guestWarn("virtio-net: backend read", "pair", w.pair, "err", err)
	return rxEmpty
}

// rxOneDirect reads one frame with readv straight into the popped chains
// (zero copy), the tail of a frame longer than them landing in the host
// overflow buffer.
func (w *worker) rxOneDirect() rxResult {
	if !w.prefetch(w.need()) {
		return rxBlocked
	}
	if w.pre.n == 0 {
		if w.starve() {
			return rxBlocked
		}
		if !w.prefetch(w.need()) {
			return rxBlocked
		}
		if w.pre.n == 0 {
			return rxNext
		}
	}
	// Build the iovecs: header scratch, the chains' writable memory (the
	// first chain after the guest header), then the overflow buffer.
	w.iovs = append(w.iovs[:0], w.hdr[:])
	dataCap, chains := 0, 0
	limit := w.pre.n
	if !w.mrg {
		limit = 1
	}
	for ; chains < limit && dataCap <= MaxFrameSize; chains++ {
		c := w.pre.at(chains)
		bufs := c.Writable()
		if chains > 0 && len(w.iovs)+len(bufs) >= maxIovecs {
			break
		}
		skip := 0
		if chains == 0 {
			skip = w.hdrLen
		}
		for _, b := range bufs {
			if skip >= len(b) {
				skip -= len(b)
				continue
			}
			b = b[skip:]
			skip = 0
			w.iovs = append(w.iovs, b)
			dataCap += len(b)
		}
	}
	if dataCap <= MaxFrameSize {
		w.iovs = append(w.iovs, w.big[BackendHdrSize+dataCap:])
	}
	n, err := w.bq.ReadV(w.iovs)
	clear(w.iovs) // drop references to guest memory
	if err != nil {
		return w.readErr(err)
	}
	if n < BackendHdrSize {
		w.st.RxDropShort++
		w.dirty = true
		return rxNext
	}
	L := n - BackendHdrSize
	head := w.head[:min(L, len(w.head))]
	w.frameRead(head, 0, dataCap)
	if !w.accept(L, head) {
		return rxNext
	}
	h, _ := header.DecodeVirtioNetHdr(w.hdr[:])
	switch w.checkHdr(&h, L) {
	case hdrDropGSO:
		w.st.RxDropGSO++
		return rxNext
	case hdrDropCsum:
		w.st.RxDropCsum++
		return rxNext
	case hdrNeedCsum:
		w.frameRead(w.big[BackendHdrSize:BackendHdrSize+min(L, dataCap)], 0, dataCap)
		at := completeCsum(&h, w.big[BackendHdrSize:BackendHdrSize+L])
		w.frameWrite(w.big[BackendHdrSize+at:BackendHdrSize+at+2], at, dataCap)
		w.st.RxCsumCompleted++
	}
	if spill := L - dataCap; spill > 0 {
		if !w.mrg {
			w.st.RxDropTooBig++
			return rxNext
		}
		if !w.prefetch(w.hdrLen + L) {
			return rxBlocked
		}
		if w.pre.bytes < w.hdrLen+L {
			if w.ringExhausted() {
				w.st.RxDropTooBig++
				return rxNext
			}
			// Not enough buffers for the tail: keep the whole frame in host
			// memory until the driver posts more.
			w.frameRead(w.big[BackendHdrSize:BackendHdrSize+dataCap], 0, dataCap)
			w.held, w.heldFrame, w.heldHdr, w.heldRSC = true, w.big[BackendHdrSize:BackendHdrSize+L], h, false
			w.stall()
			return rxBlocked
		}
		pos := dataCap
		for j := chains; pos < L; j++ {
			c := w.pre.at(j)
			k := min(L-pos, int(c.WritableLen()))
			_ = c.Writer().WriteAt(w.big[BackendHdrSize+pos:BackendHdrSize+pos+k], 0)
			pos += k
		}
	}
	w.commit(h, L)
	return rxNext
}

// frameRead copies frame bytes [off, off+len(p)) from the layout of the
// last readv (guest segments w.iovs[1:] covering dataCap bytes, then the
// overflow buffer).
func (w *worker) frameRead(p []byte, off, dataCap int) {
	w.frameCopy(p, off, dataCap, false)
}

// frameWrite stores p at frame offset off in the same layout.
func (w *worker) frameWrite(p []byte, off, dataCap int) {
	w.frameCopy(p, off, dataCap, true)
}

// frameCopy walks the chains in the FIFO (as laid out by rxOneDirect) and
// the overflow buffer. The iovec array was cleared after the read, so the
// walk recomputes the segments from the chains.
func (w *worker) frameCopy(p []byte, off, dataCap int, write bool) {
	pos := 0 // frame offset of the current segment
	skip := w.hdrLen
	for i := 0; i < w.pre.n && pos < dataCap && len(p) > 0; i++ {
		for _, b := range w.pre.at(i).Writable() {
			if skip >= len(b) {
				skip -= len(b)
				continue
			}
			b = b[skip:]
			skip = 0
			if pos+len(b) > dataCap {
				b = b[:dataCap-pos]
			}
			if off < pos+len(b) && len(p) > 0 {
				s := b[off-pos:]
				var k int
				if write {
					k = copy(s, p)
				} else {
					k = copy(p, s)
				}
				p = p[k:]
				off += k
			}
			pos += len(b)
			if pos >= dataCap || len(p) == 0 {
				break
			}
		}
	}
	if len(p) > 0 && off >= dataCap {
		s := w.big[BackendHdrSize+off:]
		if write {
			copy(s, p)
		} else {
			copy(p, s)
		}
	}
}

// commit writes the guest header (num_buffers filled in) into the first
// chain of the FIFO and completes the chains holding hdrLen+L bytes.
func (w *worker) commit(h header.VirtioNetHdr, L int) {
	total := w.hdrLen + L
	nb, rem := 0, total
	for rem > 0 && nb < w.pre.n {
		rem -= min(rem, int(w.pre.at(nb).WritableLen()))
		nb++
	}
	h.NumBuffers = uint16(nb)
	if w.numBufs {
		_ = h.Encode(w.out[:])
	} else {
		_ = h.EncodeLegacy(w.out[:])
	}
	// The header, num_buffers included, is written before any chain is
	// completed (CVE-2021-3748).
	_ = w.pre.at(0).Writer().WriteAt(w.out[:w.hdrLen], 0)
	rem = total
	for i := 0; i < nb; i++ {
		c := w.pre.pop()
		l := min(rem, int(c.WritableLen()))
		rem -= l
		if err := w.rxq.AddUsed(c, uint32(l)); err != nil {
			w.queueError(w.rxIdx, err)
			return
		}
	}
	w.rxPublish = true
	w.st.RxPackets++
	w.st.RxBytes += uint64(L)
	w.st.RxBuffers += uint64(nb)
	w.dirty = true
}

// rxOneRSC reads one frame into the coalescing engine's receive region
// (where the engine keeps the segments it coalesces until the packet is
// copied into the guest's buffers) and passes it to the engine. A frame
// longer than the region spills into the host buffer and is passed from
// there (the engine copies what it keeps).
func (w *worker) rxOneRSC() rxResult {
	if !w.mrg {
		// Without mergeable buffers a coalesced packet must fit one chain:
		// look at the chains before building packets.
		if !w.prefetch(0) {
			return rxBlocked
		}
		w.fitEngine()
	}
	region := w.engine.RecvBuffer()
	if region == nil {
		// The arena is full and the ring has no room for the oldest packet.
		w.stall()
		return rxBlocked
	}
	region = region[:min(len(region), MaxFrameSize+1)]
	iov := w.rscIov[:2]
	iov[0], iov[1] = w.big[:BackendHdrSize], region
	if len(region) <= MaxFrameSize {
		iov = append(iov, w.big[BackendHdrSize+len(region):])
	}
	n, err := w.bq.ReadV(iov)
	if err != nil {
		return w.readErr(err)
	}
	if n < BackendHdrSize {
		w.st.RxDropShort++
		w.dirty = true
		return rxNext
	}
	L := n - BackendHdrSize
	var frame []byte
	if L <= len(region) {
		frame = region[:L]
	} else {
		copy(w.big[BackendHdrSize:], region)
		frame = w.big[BackendHdrSize:n]
	}
	if !w.accept(L, frame[:min(L, len(w.head))]) {
		return rxNext
	}
	h, _ := header.DecodeVirtioNetHdr(w.big[:BackendHdrSize])
	switch w.checkHdr(&h, L) {
	case hdrDropGSO:
		w.st.RxDropGSO++
		return rxNext
	case hdrDropCsum:
		w.st.RxDropCsum++
		return rxNext
	case hdrNeedCsum:
		completeCsum(&h, frame)
		w.st.RxCsumCompleted++
	}
	if !w.engine.Input(w.clock(), rsc.Frame{Hdr: h, Data: frame}) {
		// The frame stays where it is (the engine does not reuse its receive
		// region before the frame is passed again).
		w.held, w.heldFrame, w.heldHdr, w.heldRSC = true, frame, h, true
		w.stall()
		return rxBlocked
	}
	return rxNext
}

// fitEngine bounds coalesced packets by the smallest non-mergeable chain
// seen (rsc-spec scenario 51: small buffers despite GUEST_TSO).
func (w *worker) fitEngine() {
	if w.minChain == 0 || w.engine == nil {
		return
	}
	if want := min(w.minChain, rsc.BufferSize); w.engine.Config().MaxFrame > want {
		w.engine.SetConfig(w.engineConfig()) // flushes first; on refusal it retries later
	}
}

// retryHeld tries again to deliver the held frame.
func (w *worker) retryHeld() bool {
	frame := w.heldFrame
	var ok bool
	if w.heldRSC && w.engine != nil {
		ok = w.engine.Input(w.clock(), rsc.Frame{Hdr: w.heldHdr, Data: frame})
	} else {
		ok = w.deliverCopy(w.heldHdr, frame)
	}
	if ok {
		w.held, w.heldFrame = false, nil
	}
	return ok
}

// rscSink is the rsc engine's sink: it copies packets, whole or as scatter
// lists, into the ring.
type rscSink struct{ w *worker }

func (s rscSink) Deliver(h header.VirtioNetHdr, frame []byte) bool {
	return s.w.deliverCopy(h, frame)
}

func (s rscSink) DeliverVec(h header.VirtioNetHdr, frame [][]byte) bool {
	return s.w.deliverVec(h, frame)
}

// deliverCopy copies a frame from host memory into the ring. It returns
// false when the ring lacks buffers (the caller keeps the frame); a frame
// that can never fit a non-mergeable chain is dropped (true).
func (w *worker) deliverCopy(h header.VirtioNetHdr, frame []byte) bool {
	w.one[0] = frame
	ok := w.deliverVec(h, w.one[:])
	w.one[0] = nil
	return ok
}

// deliverVec copies a frame given as the concatenation of pieces from host
// memory into the ring, with deliverCopy's contract.
func (w *worker) deliverVec(h header.VirtioNetHdr, pieces [][]byte) bool {
	if !w.rxOn {
		w.st.RxDropReset++
		w.dirty = true
		return true
	}
	L := 0
	for _, p := range pieces {
		L += len(p)
	}
	total := w.hdrLen + L
	if !w.mrg {
		if !w.prefetch(0) || !w.rxOn {
			w.st.RxDropReset++
			return true
		}
		if w.pre.n == 0 {
			return false
		}
		c := w.pre.at(0)
		if int(c.WritableLen()) < total {
			w.st.RxDropTooBig++
			w.dirty = true
			return true
		}
		w.copyToChains(pieces)
		w.commit(h, L)
		return true
	}
	if !w.prefetch(total) || !w.rxOn {
		w.st.RxDropReset++
		return true
	}
	if w.pre.bytes < total {
		if w.ringExhausted() {
			w.st.RxDropTooBig++
			w.dirty = true
			return true
		}
		return false
	}
	w.copyToChains(pieces)
	w.commit(h, L)
	return true
}

// copyToChains copies the concatenation of pieces into the writable memory
// of the chains in the FIFO, from byte hdrLen of the first chain on (the
// caller checked that they hold it; what does not fit is not written).
func (w *worker) copyToChains(pieces [][]byte) {
	ci := 0
	bufs := w.pre.at(0).Writable()
	var d []byte // the current guest buffer
	off := w.hdrLen
	for _, p := range pieces {
		for {
			for off >= len(d) {
				for len(bufs) == 0 {
					if ci++; ci >= w.pre.n {
						return
					}
					bufs = w.pre.at(ci).Writable()
				}
				off -= len(d)
				d, bufs = bufs[0], bufs[1:]
			}
			k := copy(d[off:], p)
			off += k
			if k == len(p) {
				break
			}
			p = p[k:]
		}
	}
}
