// Package serial emulates a 16550A UART as found at the PC's COM ports.
//
// The register model is what Linux's 8250 driver (autoconfig, console and
// interrupt-driven tty) and early printk expect: DLAB-banked divisor latch,
// IER/IIR with the 16550 interrupt priorities, FIFO control, loopback mode
// with the modem-control to modem-status wiring, and a scratch register.
//
// Transmitted bytes go to a bounded buffer drained by a writer goroutine, so
// a THR write never blocks the vCPU on the host's output. Received bytes come
// from Receive or from Pump, which copies an io.Reader into the RX FIFO and
// waits (without dropping bytes) while the FIFO is full.
//
// The interrupt output follows the pending-interrupt state (IIR) like QEMU's
// UART: MCR.OUT2, which gates the IRQ on real PC boards, is stored but does
// not gate it. Character-timeout interrupts are reported immediately
// instead of after four character times.
package serial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/rscvm/rscvm/devices/bus"
)

// Standard PC COM port locations.
const (
	COM1Base = 0x3F8 // COM1 I/O base
	COM1IRQ  = 4     // COM1 ISA IRQ
	Size     = 8     // number of I/O ports a UART decodes
)

// InterruptLine is the UART's interrupt output. The UART calls SetLevel only
// when the level changes; the line is high while any enabled interrupt is
// pending.
type InterruptLine interface {
	SetLevel(high bool) error
}

// Register offsets.
const (
	regData = 0 // RBR (read) / THR (write); DLL when DLAB=1
	regIER  = 1 // IER; DLM when DLAB=1
	regIIR  = 2 // IIR (read) / FCR (write)
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// IER bits.
const (
	ierRDA  = 0x01 // received data available
	ierTHRE = 0x02 // transmitter holding register empty
	ierRLS  = 0x04 // receiver line status
	ierMS   = 0x08 // modem status
	ierMask = 0x0F
)

// IIR values.
const (
	iirNoInt   = 0x01
	iirMS      = 0x00
	iirTHRE    = 0x02
	iirRDA     = 0x04
	iirRLS     = 0x06
	iirTimeout = 0x0C
	iirFIFO    = 0xC0 // FIFOs enabled
)

// FCR bits.
const (
	fcrEnable  = 0x01
	fcrClearRX = 0x02
	fcrClearTX = 0x04
)

// LCR bits.
const lcrDLAB = 0x80

// MCR bits.
const (
	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1F
)

// LSR bits.
const (
	lsrDR   = 0x01 // data ready
	lsrOE   = 0x02 // overrun error
	lsrPE   = 0x04
	lsrFE   = 0x08
	lsrBI   = 0x10
	lsrTHRE = 0x20 // THR empty
	lsrTEMT = 0x40 // transmitter empty
	lsrErrs = lsrOE | lsrPE | lsrFE | lsrBI
)

// MSR bits.
const (
	msrDCTS  = 0x01
	msrDDSR  = 0x02
	msrTERI  = 0x04
	msrDDCD  = 0x08
	msrCTS   = 0x10
	msrDSR   = 0x20
	msrRI    = 0x40
	msrDCD   = 0x80
	msrDelta = 0x0F
)

// FIFODepth is the receive FIFO size when FIFOs are enabled (as on a 16550A);
// with FIFOs disabled the UART holds a single received byte.
const FIFODepth = 16

// DefaultTxBuffer is the default size of the buffer between THR writes and
// the output writer.
const DefaultTxBuffer = 64 << 10

var rxTrigger = [4]int{1, 4, 8, 14}

// Config configures a UART.
type Config struct {
	// Out receives transmitted bytes. Nil discards them.
	Out io.Writer
	// IRQ is the interrupt output. Nil leaves interrupts unconnected.
	IRQ InterruptLine
	// TxBuffer is the number of transmitted bytes buffered ahead of Out
	// (default DefaultTxBuffer). While it is full the UART reports the
	// transmitter busy (LSR.THRE clear); bytes written anyway are dropped.
	TxBuffer int
	// Logger receives write and interrupt errors (default slog.Default()).
	Logger *slog.Logger
}

// UART is a 16550A. It implements bus.Device over its 8 registers. Create it
// with New and stop it with Close.
type UART struct {
	irq InterruptLine
	log *slog.Logger

	mu      sync.Mutex
	ier     uint8
	lcr     uint8
	mcr     uint8
	lsr     uint8 // error bits only (OE/PE/FE/BI); DR, THRE and TEMT are computed
	msr     uint8 // delta bits and, out of loopback, line states
	scr     uint8
	dll     uint8
	dlm     uint8
	fcr     uint8 // last FCR value (bit 0: FIFOs enabled, bits 6-7: RX trigger)
	thrIntr bool  // THRE interrupt pending (cleared by IIR read / THR write)
	rx      [FIFODepth]byte
	rxHead  int
	rxLen   int
	level   bool
	irqErr  bool
	txFull  bool          // THR write found the TX buffer full; the drainer re-raises THRE
	rxWait  bool          // Pump waits on rxSpace
	rxSpace chan struct{} // closed when RX FIFO space frees up and rxWait is set

	tx *txBuffer

	dropped atomic.Uint64
}

// New creates a UART in its power-on state and starts its output goroutine.
func New(cfg Config) *UART {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	size := cfg.TxBuffer
	if size <= 0 {
		size = DefaultTxBuffer
	}
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	u := &UART{
		irq:     cfg.IRQ,
		log:     log,
		msr:     msrDCD | msrDSR | msrCTS,
		dll:     0x0C, // 9600 baud
		rxSpace: make(chan struct{}),
	}
	u.tx = newTxBuffer(size, out, log, u.txDrained)
	go u.tx.run()
	return u
}

// Attach registers the UART's 8 ports on pio at base (e.g. COM1Base).
func (u *UART) Attach(pio *bus.Bus, base uint64) error {
	if err := pio.Register(base, Size, u); err != nil {
		return fmt.Errorf("serial: attach at %#x: %w", base, err)
	}
	return nil
}

// Close flushes buffered output and stops the output goroutine. Later THR
// writes are dropped. Close is idempotent.
func (u *UART) Close() error {
	return u.tx.close()
}

// Flush waits until every byte transmitted so far has been handed to the
// output writer, or until ctx is done.
func (u *UART) Flush(ctx context.Context) error {
	return u.tx.flush(ctx)
}

// Dropped reports how many transmitted bytes were discarded because the
// output buffer was full or the UART was closed.
func (u *UART) Dropped() uint64 { return u.dropped.Load() }

// Read implements bus.Device.
func (u *UART) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	for i := range data {
		data[i] = 0xFF
	}
	if len(data) != 1 || offset >= Size {
		// The 8250 registers are byte-wide; wider accesses are not decoded.
		return
	}
	u.mu.Lock()
	data[0] = u.readLocked(offset)
	u.updateIRQLocked()
	u.mu.Unlock()
}

// Write implements bus.Device.
func (u *UART) Write(offset uint64, data []byte) {
	if len(data) != 1 || offset >= Size {
		return
	}
	u.mu.Lock()
	u.writeLocked(offset, data[0])
	u.updateIRQLocked()
	u.mu.Unlock()
}

func (u *UART) dlab() bool        { return u.lcr&lcrDLAB != 0 }
func (u *UART) fifoEnabled() bool { return u.fcr&fcrEnable != 0 }
func (u *UART) loopback() bool    { return u.mcr&mcrLoop != 0 }

func (u *UART) rxCap() int {
	if u.fifoEnabled() {
		return FIFODepth
	}
	return 1
}

// thrEmpty reports whether the transmitter can take another byte. In
// loopback the byte goes to the RX FIFO, so the host buffer does not matter.
func (u *UART) thrEmpty() bool {
	return u.loopback() || !u.txFull
}

func (u *UART) lsrLocked() uint8 {
	v := u.lsr
	if u.rxLen > 0 {
		v |= lsrDR
	}
	if u.thrEmpty() {
		v |= lsrTHRE | lsrTEMT
	}
	if u.fifoEnabled() && v&lsrErrs != 0 {
		v |= 0x80 // error in RX FIFO
	}
	return v
}

// msrLocked returns the modem status register. In loopback the inputs are
// wired to the MCR outputs: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
func (u *UART) msrLocked() uint8 {
	if !u.loopback() {
		return u.msr
	}
	v := u.msr & msrDelta
	if u.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if u.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if u.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if u.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// iirLocked computes the highest-priority pending interrupt.
func (u *UART) iirLocked() uint8 {
	fifo := uint8(0)
	if u.fifoEnabled() {
		fifo = iirFIFO
	}
	switch {
	case u.ier&ierRLS != 0 && u.lsr&lsrErrs != 0:
		return fifo | iirRLS
	case u.ier&ierRDA != 0 && u.rxLen > 0:
		if u.fifoEnabled() && u.rxLen < rxTrigger[u.fcr>>6] {
			// Below the trigger level a real 16550A reports a character
			// timeout after four character times; report it at once.
			return fifo | iirTimeout
		}
		return fifo | iirRDA
	case u.ier&ierTHRE != 0 && u.thrIntr:
		return fifo | iirTHRE
	case u.ier&ierMS != 0 && u.msr&msrDelta != 0:
		return fifo | iirMS
	}
	return fifo | iirNoInt
}

func (u *UART) updateIRQLocked() {
	high := u.iirLocked()&iirNoInt == 0
	if high == u.level {
		return
	}
	u.level = high
	if u.irq == nil {
		return
	}
	if err := u.irq.SetLevel(high); err != nil && !u.irqErr {
		u.irqErr = true // log once; the guest may poll instead
		u.log.Warn("serial: setting interrupt level failed", "high", high, "err", err)
	}
}

func (u *UART) readLocked(offset uint64) uint8 {
	switch offset {
	case regData:
		if u.dlab() {
			return u.dll
		}
		return u.popRXLocked()
	case regIER:
		if u.dlab() {
			return u.dlm
		}
		return u.ier
	case regIIR:
		v := u.iirLocked()
		if v&0x0F == iirTHRE {
			// Reading IIR with THRE as the reported source clears it.
			u.thrIntr = false
		}
		return v
	case regLCR:
		return u.lcr
	case regMCR:
		return u.mcr
	case regLSR:
		v := u.lsrLocked()
		u.lsr &^= lsrErrs
		return v
	case regMSR:
		v := u.msrLocked()
		u.msr &^= msrDelta
		return v
	case regSCR:
		return u.scr
	}
	return 0xFF
}

func (u *UART) writeLocked(offset uint64, v uint8) {
	switch offset {
	case regData:
		if u.dlab() {
			u.dll = v
			return
		}
		u.transmitLocked(v)
	case regIER:
		if u.dlab() {
			u.dlm = v
			return
		}
		old := u.ier
		u.ier = v & ierMask
		switch {
		case old&ierTHRE == 0 && u.ier&ierTHRE != 0:
			// Enabling the THRE interrupt while the THR is empty raises it,
			// even if an earlier IIR read had cleared it (Linux's and
			// Windows' THRE tests rely on this).
			u.thrIntr = u.thrEmpty()
		case u.ier&ierTHRE == 0:
			u.thrIntr = false
		}
	case regIIR: // FCR
		if (v^u.fcr)&fcrEnable != 0 {
			// Changing the FIFO enable resets both FIFOs.
			u.clearRXLocked()
		}
		if v&fcrClearRX != 0 {
			u.clearRXLocked()
		}
		// The TX FIFO is drained instantly, so clearing it has no effect.
		u.fcr = v &^ (fcrClearRX | fcrClearTX | 0x38)
		if !u.fifoEnabled() {
			u.fcr = 0
		}
	case regLCR:
		u.lcr = v
	case regMCR:
		old, oldMCR := u.msrLocked(), u.mcr
		u.mcr = v & mcrMask
		u.modemChangedLocked(old, u.msrLocked())
		if (oldMCR^u.mcr)&mcrLoop != 0 {
			// The receiver is (dis)connected from the line: wake Pump.
			u.signalRXSpaceLocked()
		}
	case regLSR, regMSR:
		// Read-only (factory test on real parts).
	case regSCR:
		u.scr = v
	}
}

// modemChangedLocked records MSR delta bits for a line change seen in
// loopback mode.
func (u *UART) modemChangedLocked(old, cur uint8) {
	if !u.loopback() {
		return
	}
	ch := old ^ cur
	if ch&msrCTS != 0 {
		u.msr |= msrDCTS
	}
	if ch&msrDSR != 0 {
		u.msr |= msrDDSR
	}
	if ch&msrDCD != 0 {
		u.msr |= msrDDCD
	}
	if old&msrRI != 0 && cur&msrRI == 0 {
		u.msr |= msrTERI // trailing edge of RI
	}
}

func (u *UART) transmitLocked(v uint8) {
	// The write empties THR; the byte then moves out at once and THR is
	// empty again, which re-raises THRE. The level is updated in between so
	// that an edge-triggered interrupt controller sees a new edge, as with
	// a real UART.
	u.thrIntr = false
	u.updateIRQLocked()
	if u.loopback() {
		if u.rxLen >= u.rxCap() {
			u.lsr |= lsrOE
		} else {
			u.pushRXLocked(v)
		}
	} else if !u.tx.put(v) {
		u.dropped.Add(1)
	} else if u.tx.full() {
		u.txFull = true
	}
	if u.thrEmpty() {
		u.thrIntr = true
	}
}

// txDrained is called by the writer goroutine after it made room in the TX
// buffer.
func (u *UART) txDrained() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.txFull {
		return
	}
	u.txFull = false
	u.thrIntr = true
	u.updateIRQLocked()
}

func (u *UART) pushRXLocked(v uint8) {
	u.rx[(u.rxHead+u.rxLen)%FIFODepth] = v
	u.rxLen++
}

func (u *UART) popRXLocked() uint8 {
	if u.rxLen == 0 {
		return 0
	}
	v := u.rx[u.rxHead]
	u.rxHead = (u.rxHead + 1) % FIFODepth
	u.rxLen--
	u.signalRXSpaceLocked()
	return v
}

func (u *UART) clearRXLocked() {
	u.rxHead, u.rxLen = 0, 0
	u.signalRXSpaceLocked()
}

func (u *UART) signalRXSpaceLocked() {
	if !u.rxWait {
		return
	}
	u.rxWait = false
	close(u.rxSpace)
	u.rxSpace = make(chan struct{})
}

// Receive queues bytes from the outside world into the RX FIFO. It never
// blocks; it returns how many bytes fit. Bytes are not accepted in loopback
// mode, where the receiver is disconnected from the line.
func (u *UART) Receive(p []byte) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.receiveLocked(p)
}

func (u *UART) receiveLocked(p []byte) int {
	n := 0
	if !u.loopback() {
		for n < len(p) && u.rxLen < u.rxCap() {
			u.pushRXLocked(p[n])
			n++
		}
	}
	if n > 0 {
		u.updateIRQLocked()
	}
	return n
}

// Pump copies r into the RX FIFO until r reports EOF (Pump returns nil), a
// read fails (the error is returned) or ctx is done (ctx.Err()). When the
// FIFO is full it waits for the guest to read rather than dropping input.
// A Read blocked inside r is not interrupted by ctx; Pump returns once it
// comes back. Run Pump in its own goroutine.
func (u *UART) Pump(ctx context.Context, r io.Reader) error {
	buf := make([]byte, 256)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		if n > 0 {
			if werr := u.receiveAll(ctx, buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("serial: reading input: %w", err)
		}
	}
}

func (u *UART) receiveAll(ctx context.Context, p []byte) error {
	for len(p) > 0 {
		u.mu.Lock()
		n := u.receiveLocked(p)
		p = p[n:]
		if len(p) == 0 || n > 0 {
			u.mu.Unlock()
			continue
		}
		u.rxWait = true
		wait := u.rxSpace
		u.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
