package virtiopci

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
	"github.com/rscvm/rscvm/vmm/kvm"
)

// maxINTxGSI bounds the GSIs the Interrupt Line register may name: the
// IOAPIC inputs. Other values (0xFF: "unknown") leave INTx unconnected.
const maxINTxGSI = 24

type msiMessage struct {
	addr uint64
	data uint32
}

// irqState is the interrupt side of the transport: ISR, virtio vector
// assignments, the MSI-X table and PBA, and the INTx line. Its lock is
// taken by the vCPU paths (with Transport.mu held) and by the device's
// workers through virtio.Interrupt (without it).
type irqState struct {
	t      *Transport
	plat   Platform
	onMSI  func(vector int, addr uint64, data uint32)
	onINTx func(gsi uint32, high bool)
	log    *slog.Logger

	mu           sync.Mutex
	nvec         int
	isr          uint8
	configVector uint16
	queueVectors []uint16
	use          []uint32 // per MSI-X vector: config/queue assignments (msix_vector_use)
	table        []uint32 // 4 dwords per vector: address lo, hi, data, control
	pba          []uint64
	pbaOff       uint64
	pbaSize      uint64
	enabled      bool // MSI-X enable
	maskAll      bool // MSI-X function mask
	busMaster    bool
	intxDisabled bool
	intxLevel    bool   // the function's INTx output
	lineHigh     bool   // INTx is driven high on lineGSI
	lineGSI      uint32 // valid while lineHigh

	// With a Platform, per vector: an irqfd eventfd, its GSI and the
	// message its MSI route carries.
	evs     []*kvm.EventFD
	gsis    []uint32
	routed  []msiMessage
	routeOK []bool
}

func (s *irqState) init(t *Transport, opts Options) error {
	s.t, s.plat, s.onMSI, s.onINTx, s.log = t, opts.Platform, opts.OnMSI, opts.OnINTx, t.log
	s.nvec = opts.Vectors
	s.configVector = NoVector
	s.queueVectors = make([]uint16, len(t.queues))
	for i := range s.queueVectors {
		s.queueVectors[i] = NoVector
	}
	if s.nvec == 0 {
		return nil
	}
	_, s.pbaOff, s.pbaSize = msixLayout(s.nvec)
	s.use = make([]uint32, s.nvec)
	s.table = make([]uint32, 4*s.nvec)
	for v := 0; v < s.nvec; v++ {
		s.table[4*v+3] = 1 // every vector starts masked (msix_mask_all)
	}
	s.pba = make([]uint64, (s.nvec+63)/64)
	if s.plat == nil {
		return nil
	}
	s.routed = make([]msiMessage, s.nvec)
	s.routeOK = make([]bool, s.nvec)
	for v := 0; v < s.nvec; v++ {
		ev, err := kvm.NewEventFD(unix.EFD_NONBLOCK)
		if err != nil {
			s.close()
			return fmt.Errorf("virtio-pci: MSI-X vector %d: %w", v, err)
		}
		gsi, err := s.plat.AddMSIRoute(0, 0)
		if err != nil {
			_ = ev.Close()
			s.close()
			return fmt.Errorf("virtio-pci: MSI-X vector %d route: %w", v, err)
		}
		if err := s.plat.RegisterIRQFD(ev.File(), gsi, nil); err != nil {
			_ = s.plat.RemoveMSIRoute(gsi)
			_ = ev.Close()
			s.close()
			return fmt.Errorf("virtio-pci: MSI-X vector %d irqfd: %w", v, err)
		}
		s.evs = append(s.evs, ev)
		s.gsis = append(s.gsis, gsi)
		s.routeOK[v] = true
	}
	return nil
}

// close releases the platform resources and deasserts INTx.
func (s *irqState) close() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for v, ev := range s.evs {
		errs = append(errs, s.plat.UnregisterIRQFD(ev.File(), s.gsis[v]))
		errs = append(errs, s.plat.RemoveMSIRoute(s.gsis[v]))
		errs = append(errs, ev.Close())
	}
	s.evs, s.gsis = nil, nil
	s.intxLevel = false
	if err := s.updateLineLocked(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// reset is the interrupt part of a device reset: ISR cleared (INTx
// deasserted), no vectors assigned, no MSI-X interrupt pending. The table
// and the MSI-X control bits are kept.
func (s *irqState) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isr = 0
	s.configVector = NoVector
	for i := range s.queueVectors {
		s.queueVectors[i] = NoVector
	}
	clear(s.use)
	clear(s.pba)
	s.intxLevel = false
	s.logErr("INTx", s.updateLineLocked())
}

func (s *irqState) logErr(what string, err error) {
	if err != nil {
		s.log.Error("virtio-pci: interrupt delivery", "what", what, "err", err)
	}
}

func (s *irqState) msixEnabled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enabled
}

// readISR returns and clears the ISR and deasserts INTx.
func (s *irqState) readISR() uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.isr
	s.isr = 0
	s.intxLevel = false
	s.logErr("INTx", s.updateLineLocked())
	return v
}

func (s *irqState) configVectorValue() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configVector
}

func (s *irqState) queueVector(i int) uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueVectors[i]
}

// assignLocked moves one use from vector old to v (NoVector when v is not
// a table entry) and returns what is stored.
func (s *irqState) assignLocked(old, v uint16) uint16 {
	if int(old) < s.nvec && s.use[old] > 0 {
		s.use[old]--
		if s.use[old] == 0 {
			s.setPendingLocked(int(old), false)
		}
	}
	if int(v) >= s.nvec {
		return NoVector
	}
	s.use[v]++
	return v
}

func (s *irqState) setConfigVector(v uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configVector = s.assignLocked(s.configVector, v)
}

// setQueueVector assigns queue i's vector; called with Transport.mu held.
func (s *irqState) setQueueVector(i int, v uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queueVectors[i] = s.assignLocked(s.queueVectors[i], v)
	s.t.queues[i].SetVector(s.queueVectors[i])
}

// setCommand records the command register bits the interrupt paths obey.
func (s *irqState) setCommand(busMaster, intxDisabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busMaster, s.intxDisabled = busMaster, intxDisabled
	s.logErr("INTx", s.updateLineLocked())
}

// refreshLine re-evaluates INTx after the Interrupt Line register changed.
func (s *irqState) refreshLine() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logErr("INTx", s.updateLineLocked())
}

// updateLineLocked drives the INTx input named by the Interrupt Line
// register to the function's INTx output (low while INTx is disabled) and
// mirrors the output in the status register's Interrupt Status bit.
func (s *irqState) updateLineLocked() error {
	var b [1]byte
	_ = s.t.cfg.Load(pci.RegInterruptLine, b[:])
	gsi := uint32(b[0])
	s.t.cfg.SetINTxStatus(s.intxLevel)
	want := s.intxLevel && !s.intxDisabled && gsi < maxINTxGSI
	var err error
	if s.lineHigh && (!want || gsi != s.lineGSI) {
		err = s.setLevel(s.lineGSI, false)
		s.lineHigh = false
	}
	if want && !s.lineHigh {
		if e := s.setLevel(gsi, true); e != nil && err == nil {
			err = e
		}
		s.lineHigh, s.lineGSI = true, gsi
	}
	return err
}

func (s *irqState) setLevel(gsi uint32, high bool) error {
	if s.plat != nil {
		return s.plat.SetIRQLevel(gsi, high)
	}
	if s.onINTx != nil {
		s.onINTx(gsi, high)
	}
	return nil
}

// functionMaskedLocked is MSI-X's function mask: disabled or mask-all.
func (s *irqState) functionMaskedLocked() bool { return !s.enabled || s.maskAll }

func (s *irqState) entryMaskedLocked(v int) bool { return s.table[4*v+3]&1 != 0 }

func (s *irqState) maskedLocked(v int) bool {
	return s.functionMaskedLocked() || s.entryMaskedLocked(v)
}

func (s *irqState) pendingLocked(v int) bool { return s.pba[v/64]&(1<<(v%64)) != 0 }

func (s *irqState) setPendingLocked(v int, on bool) {
	if on {
		s.pba[v/64] |= 1 << (v % 64)
	} else {
		s.pba[v/64] &^= 1 << (v % 64)
	}
}

func (s *irqState) messageLocked(v int) msiMessage {
	return msiMessage{addr: uint64(s.table[4*v+1])<<32 | uint64(s.table[4*v]), data: s.table[4*v+2]}
}

// controlWritten follows a write to the MSI-X message control's high byte
// (QEMU's msix_write_config).
func (s *irqState) controlWritten(enable, maskAll bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.functionMaskedLocked()
	s.enabled, s.maskAll = enable, maskAll
	if !s.enabled {
		return
	}
	s.intxLevel = false
	s.logErr("INTx", s.updateLineLocked())
	if s.functionMaskedLocked() == was {
		return
	}
	for v := 0; v < s.nvec; v++ {
		s.maskUpdateLocked(v, was || s.entryMaskedLocked(v))
	}
}

// maskUpdateLocked delivers vector v's pending interrupt when it became
// unmasked.
func (s *irqState) maskUpdateLocked(v int, wasMasked bool) {
	if s.maskedLocked(v) || !wasMasked {
		return
	}
	s.syncRouteLocked(v)
	if s.pendingLocked(v) {
		s.setPendingLocked(v, false)
		s.logErr("MSI-X", s.msixNotifyLocked(v))
	}
}

// syncRouteLocked points vector v's MSI route at its table entry.
func (s *irqState) syncRouteLocked(v int) {
	if s.plat == nil || s.evs == nil {
		return
	}
	m := s.messageLocked(v)
	if s.routeOK[v] && s.routed[v] == m {
		return
	}
	if err := s.plat.SetMSIRoute(s.gsis[v], m.addr, m.data); err != nil {
		s.routeOK[v] = false
		s.logErr("MSI route", err)
		return
	}
	s.routed[v], s.routeOK[v] = m, true
}

// tableRead reads dword off/4 of the MSI-X table.
func (s *irqState) tableRead(off uint64) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.table[off/4]
}

// tableWrite writes a table dword (QEMU's msix_table_mmio_write): the MSI
// route follows address and data at once; an unmask delivers a pending
// interrupt.
func (s *irqState) tableWrite(off uint64, val uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := int(off / MSIXEntrySize)
	was := s.maskedLocked(v)
	s.table[off/4] = val
	if off%MSIXEntrySize < 12 {
		s.syncRouteLocked(v)
	}
	s.maskUpdateLocked(v, was)
}

// pbaRead reads dword off/4 of the pending bit array.
func (s *irqState) pbaRead(off uint64) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := off / 4
	return uint32(s.pba[i/2] >> (32 * (i % 2)))
}

// notifyLocked delivers a virtio notification on vector (QEMU's
// virtio_notify_vector and virtio_pci_notify): nothing while bus mastering
// is off; MSI-X when enabled; otherwise INTx follows ISR bit 0.
func (s *irqState) notifyLocked(vector uint16) error {
	if !s.busMaster {
		return nil
	}
	if s.enabled {
		if int(vector) >= s.nvec {
			return nil
		}
		return s.msixNotifyLocked(int(vector))
	}
	s.intxLevel = s.isr&ISRQueue != 0
	return s.updateLineLocked()
}

// msixNotifyLocked is QEMU's msix_notify: vectors nobody uses stay
// silent, masked ones become pending.
func (s *irqState) msixNotifyLocked(v int) error {
	if s.use[v] == 0 {
		return nil
	}
	if s.maskedLocked(v) {
		s.setPendingLocked(v, true)
		return nil
	}
	if !s.busMaster {
		return nil // MSI writes are bus-master transactions
	}
	if s.plat != nil {
		if s.evs == nil {
			return errors.New("transport closed")
		}
		s.syncRouteLocked(v)
		return s.evs[v].Signal()
	}
	if s.onMSI != nil {
		m := s.messageLocked(v)
		s.onMSI(v, m.addr, m.data)
	}
	return nil
}

// SignalQueue implements virtio.Interrupt: ISR bit 0, then the queue's
// MSI-X vector or INTx.
func (t *Transport) SignalQueue(index int) error {
	if index < 0 || index >= len(t.queues) {
		return fmt.Errorf("virtio-pci: signal of queue %d of %d", index, len(t.queues))
	}
	s := &t.irq
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isr |= ISRQueue
	return s.notifyLocked(s.queueVectors[index])
}

// SignalConfig implements virtio.Interrupt: a configuration change
// notification (ISR bits 0 and 1, config_generation incremented), sent
// only while DRIVER_OK is set (QEMU's virtio_notify_config).
func (t *Transport) SignalConfig() error {
	if t.state.Status()&virtio.StatusDriverOK == 0 {
		return nil
	}
	s := &t.irq
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isr |= ISRQueue | ISRConfig
	t.state.BumpConfigGeneration()
	return s.notifyLocked(s.configVector)
}

// NeedsReset implements virtio.Interrupt: DEVICE_NEEDS_RESET, and a
// configuration change notification if DRIVER_OK is set.
func (t *Transport) NeedsReset(cause error) {
	t.logGuest("device needs reset", cause)
	if t.state.SetNeedsReset() {
		_ = t.SignalConfig()
	}
}

// msixBAR serves BAR 1: the MSI-X table and PBA. Only aligned 4-byte
// pieces are valid (QEMU's msix ops); others read 0 and are dropped.
type msixBAR struct{ t *Transport }

func (b msixBAR) Read(off uint64, data []byte) {
	s := &b.t.irq
	for i := 0; i < len(data); {
		a := off + uint64(i)
		n := pieceSize(a, len(data)-i)
		var v uint32
		if n == 4 {
			switch {
			case a < uint64(s.nvec)*MSIXEntrySize:
				v = s.tableRead(a)
			case a >= s.pbaOff && a < s.pbaOff+s.pbaSize:
				v = s.pbaRead(a - s.pbaOff)
			}
		}
		putLE(data[i:i+n], v)
		i += n
	}
}

func (b msixBAR) Write(off uint64, data []byte) {
	s := &b.t.irq
	for i := 0; i < len(data); {
		a := off + uint64(i)
		n := pieceSize(a, len(data)-i)
		if n == 4 && a < uint64(s.nvec)*MSIXEntrySize {
			s.tableWrite(a, getLE(data[i:i+n]))
		}
		i += n
	}
}
