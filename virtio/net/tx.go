package virtionet

import (
	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/virtio/queue"
)

// txVerdict says what to do with a transmitted frame.
type txVerdict uint8

const (
	txOK txVerdict = iota
	txDropShort
	txDropTooBig
	txDropGSO
	txDropCsum
)

// checkTxHdr validates the guest's header for a frame of n bytes against
// the negotiated features and rewrites it for the backend: only NEEDS_CSUM
// is kept of the flags (the driver must not set the others), num_buffers
// is cleared, hdr_len beyond the frame is cleared (the kernel recomputes
// it), gso_size is cleared without GSO.
func checkTxHdr(h *header.VirtioNetHdr, n int, negotiated uint64) txVerdict {
	if n < header.EthernetMinSize {
		return txDropShort
	}
	if n > MaxFrameSize {
		return txDropTooBig
	}
	h.Flags &= header.VirtioNetHdrFNeedsCsum
	h.NumBuffers = 0
	legacyGSO := has(negotiated, FeatureGSO)
	if h.GSOType == header.VirtioNetHdrGSONone {
		h.GSOSize, h.HdrLen = 0, 0
	} else {
		ok := false
		switch h.GSOType &^ header.VirtioNetHdrGSOECN {
		case header.VirtioNetHdrGSOTCPv4:
			ok = legacyGSO || has(negotiated, FeatureHostTSO4)
		case header.VirtioNetHdrGSOTCPv6:
			ok = legacyGSO || has(negotiated, FeatureHostTSO6)
		case header.VirtioNetHdrGSOUDP:
			ok = legacyGSO || has(negotiated, FeatureHostUFO)
		case header.VirtioNetHdrGSOUDPL4:
			ok = has(negotiated, FeatureHostUSO)
		}
		if h.GSOType&header.VirtioNetHdrGSOECN != 0 && !legacyGSO && !has(negotiated, FeatureHostECN) {
			ok = false
		}
		if !ok || h.GSOSize == 0 {
			return txDropGSO
		}
		if int(h.HdrLen) > n {
			h.HdrLen = 0
		}
	}
	if h.Flags&header.VirtioNetHdrFNeedsCsum != 0 {
		if int(h.CsumStart)+int(h.CsumOffset)+2 > n {
			return txDropCsum
		}
	} else {
		h.CsumStart, h.CsumOffset = 0, 0
	}
	return txOK
}

// txPass transmits up to txBudget chains. It reports whether more are
// ready right away.
func (w *worker) txPass() bool {
	if !w.txOn || w.txBlocked {
		return false
	}
	defer w.finishTx()
	done := 0
	for {
		w.txq.DisableNotification()
		for done < txBudget {
			c, err := w.txq.Pop()
			if err != nil {
				w.queueError(w.txIdx, err)
				return false
			}
			if c == nil {
				break
			}
			if !w.txOne(c) {
				return false // backend full, or queue broke
			}
			done++
		}
		if done >= txBudget {
			return true
		}
		more, err := w.txq.EnableNotification()
		if err != nil {
			w.queueError(w.txIdx, err)
			return false
		}
		if !more {
			return false
		}
	}
}

// txOne sends one chain to the backend and completes it. It returns false
// if the backend would block (the chain was given back) or the queue broke.
func (w *worker) txOne(c *queue.Chain) bool {
	w.dirty = true
	r := c.Reader()
	total := int(c.ReadableLen())
	verdict := txDropShort
	var h header.VirtioNetHdr
	if total > w.hdrLen {
		// Copy the header out of guest memory once; everything below uses
		// the copy (CVE-2023-6693: a header is never larger than hdrLen).
		var raw [BackendHdrSize]byte
		_ = r.ReadFull(raw[:w.hdrLen])
		h, _ = header.DecodeVirtioNetHdrLegacy(raw[:])
		verdict = checkTxHdr(&h, total-w.hdrLen, w.negotiated)
	}
	switch {
	case verdict == txDropShort:
		w.st.TxDropShort++
	case verdict == txDropTooBig:
		w.st.TxDropTooBig++
	case verdict == txDropGSO:
		w.st.TxDropGSO++
	case verdict == txDropCsum:
		w.st.TxDropCsum++
	case !w.cfg.linkUp:
		w.st.TxDropLinkDown++
	default:
		_ = h.Encode(w.txHdr[:])
		w.txIovs = r.Slices(append(w.txIovs[:0], w.txHdr[:]))
		_, err := w.bq.WriteV(w.txIovs)
		clear(w.txIovs)
		if err != nil {
			if isWouldBlock(err) {
				if uerr := w.txq.Unpop(c); uerr != nil {
					w.queueError(w.txIdx, uerr)
					return false
				}
				w.txBlocked = true
				w.st.TxBackPressure++
				return false
			}
			w.st.TxDropBackend++
			w.d.guestWarn("virtio-net: backend write", "pair", w.pair, "err", err)
		} else {
			w.st.TxPackets++
			w.st.TxBytes += uint64(total - w.hdrLen)
		}
	}
	if err := w.txq.AddUsed(c, 0); err != nil {
		w.queueError(w.txIdx, err)
		return false
	}
	w.txPublish = true
	return true
}

// finishTx publishes used entries and notifies the driver per EVENT_IDX.
func (w *worker) finishTx() {
	if !w.txPublish || !w.txOn {
		return
	}
	w.txPublish = false
	w.txq.PublishUsed()
	if w.txq.NeedsNotify() {
		w.st.TxNotifications++
		if err := w.irq.SignalQueue(w.txIdx); err != nil {
			w.d.guestWarn("virtio-net: tx interrupt", "queue", w.txIdx, "err", err)
		}
	}
}
