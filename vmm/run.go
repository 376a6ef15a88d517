package vmm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/vmm/kvm"
)

// StopReason says why a machine stopped.
type StopReason int

// Stop reasons.
const (
	NotStopped    StopReason = iota // still running (or never run)
	StopPowerOff                    // the guest powered off (ACPI S5, KVM system event)
	StopReset                       // the guest asked for a reset; rscvm exits, as Firecracker does
	StopRequested                   // Stop(nil) from the host
	StopCanceled                    // Run's context was canceled
	StopError                       // a vCPU failed or Stop(err) was called
)

func (r StopReason) String() string {
	switch r {
	case NotStopped:
		return "running"
	case StopPowerOff:
		return "power-off"
	case StopReset:
		return "reset"
	case StopRequested:
		return "stopped by the host"
	case StopCanceled:
		return "canceled"
	case StopError:
		return "error"
	}
	return fmt.Sprintf("StopReason(%d)", int(r))
}

// ErrAlreadyRun is returned by a second Run.
var ErrAlreadyRun = errors.New("vmm: machine already ran")

// ErrNoBootEntry is returned by Run before SetBootEntry.
var ErrNoBootEntry = errors.New("vmm: no boot entry set")

// Run runs every vCPU, each on its own locked OS thread, until the guest
// powers off or resets (Run returns nil), a vCPU fails (the error; a guest
// crash is a *GuestError), Stop is called (its error) or ctx is canceled
// (ctx.Err()). All vCPU threads have left KVM_RUN when it returns. Run can
// be called once.
func (m *Machine) Run(ctx context.Context) error {
	if !m.bootSet.Load() {
		return ErrNoBootEntry
	}
	if !m.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	defer close(m.runDone)
	var wg sync.WaitGroup
	for _, v := range m.vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.runVCPU(v); err != nil {
				m.stop(StopError, err)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		m.stop(StopCanceled, ctx.Err())
		<-done
	}
	_, err := m.Stopped()
	return err
}

// Stopped reports why the machine stopped and the error Run returns.
func (m *Machine) Stopped() (StopReason, error) {
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	return m.reason, m.err
}

// Stop ends Run: with err == nil Run returns nil (StopRequested), otherwise
// err (StopError). Safe from any goroutine, including device code running
// on a vCPU thread, and before Run (Run then returns at once). Only the
// first stop counts.
func (m *Machine) Stop(err error) {
	if err == nil {
		m.stop(StopRequested, nil)
	} else {
		m.stop(StopError, err)
	}
}

// PowerOff ends Run with nil, as a guest power-off (devices call it for
// ACPI S5).
func (m *Machine) PowerOff() { m.stop(StopPowerOff, nil) }

// Reset ends Run with nil and StopReset (devices call it for a guest reset
// request; rscvm does not reboot the guest).
func (m *Machine) Reset() { m.stop(StopReset, nil) }

// stop records the first reason, then makes every vCPU leave KVM_RUN:
// immediate_exit keeps KVM_RUN from entering the guest again, and a
// SIGURG (which the Go runtime already handles) interrupts a vCPU thread
// that is inside it, so KVM_RUN returns EINTR and the loop sees stopped.
func (m *Machine) stop(reason StopReason, err error) {
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	if m.closed {
		return
	}
	if m.reason == NotStopped {
		m.reason, m.err = reason, err
		m.stopped.Store(true)
		if reason == StopError {
			m.log.Error("vmm: stopping", "err", err)
		} else {
			m.log.Debug("vmm: stopping", "reason", reason.String())
		}
	}
	pid := os.Getpid()
	for _, v := range m.vcpus {
		v.kv.SetImmediateExit(true)
		if tid := v.tid.Load(); tid != 0 {
			// ESRCH: the thread already left; nothing to interrupt.
			_ = unix.Tgkill(pid, int(tid), unix.SIGURG)
		}
	}
}

// runVCPU is one vCPU's loop on its own OS thread.
func (m *Machine) runVCPU(v *vcpu) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	for {
		if m.stopped.Load() {
			return nil
		}
		if err := v.kv.Run(); err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue // a signal or immediate_exit: re-check stopped
			}
			return fmt.Errorf("vmm: vCPU %d: %w", v.id, err)
		}
		if err := m.handleExit(v); err != nil {
			return err
		}
	}
}

func (m *Machine) handleExit(v *vcpu) error {
	switch reason := v.kv.ExitReason(); reason {
	case kvm.ExitIO:
		return m.handleIO(v)
	case kvm.ExitMMIO:
		m.handleMMIO(v)
		return nil
	case kvm.ExitIntr:
		return nil
	case kvm.ExitSystemEvent:
		ev := v.kv.SystemEvent()
		switch ev.Type {
		case kvm.SystemEventShutdown:
			m.PowerOff()
			return nil
		case kvm.SystemEventReset:
			m.Reset()
			return nil
		}
		return m.guestError(v, fmt.Sprintf("KVM system event %d (data %#x)", ev.Type, ev.Data), nil, nil)
	case kvm.ExitShutdown:
		return m.guestError(v, "triple fault (KVM_EXIT_SHUTDOWN)", nil, nil)
	case kvm.ExitInternalError:
		ie := v.kv.InternalError()
		desc := fmt.Sprintf("KVM internal error (suberror %d: %s)", ie.Suberror, kvm.InternalErrorName(ie.Suberror))
		return m.guestError(v, desc, ie.Insn, ie.Data)
	case kvm.ExitFailEntry:
		hw, cpu := v.kv.FailEntry()
		return m.guestError(v, fmt.Sprintf("KVM_EXIT_FAIL_ENTRY (hardware entry failure reason %#x, host CPU %d)", hw, cpu), nil, nil)
	case kvm.ExitUnknown:
		return m.guestError(v, fmt.Sprintf("KVM_EXIT_UNKNOWN (hardware exit reason %#x)", v.kv.HardwareExitReason()), nil, nil)
	case kvm.ExitException:
		vec, code := v.kv.Exception()
		return m.guestError(v, fmt.Sprintf("KVM_EXIT_EXCEPTION (vector %d, error code %#x)", vec, code), nil, nil)
	default:
		return m.guestError(v, "unexpected exit "+kvm.ExitName(reason), nil, nil)
	}
}

// handleIO dispatches a port I/O exit, item by item for string I/O.
// Unhandled reads return all-ones; unhandled writes are dropped.
func (m *Machine) handleIO(v *vcpu) error {
	x, err := v.kv.IO()
	if err != nil {
		return fmt.Errorf("vmm: vCPU %d: %w", v.id, err)
	}
	port := uint64(x.Port)
	size := int(x.Size)
	for i := 0; i+size <= len(x.Data); i += size {
		d := x.Data[i : i+size : i+size]
		if x.Out {
			if !m.pio.Write(port, d) {
				m.noteUnhandled(m.unhandledPIO, "pio", port, size, true)
			}
		} else if !m.pio.Read(port, d) {
			fillOnes(d)
			m.noteUnhandled(m.unhandledPIO, "pio", port, size, false)
		}
	}
	return nil
}

func (m *Machine) handleMMIO(v *vcpu) {
	x := v.kv.MMIO()
	if x.IsWrite {
		if !m.mmio.Write(x.Addr, x.Data) {
			m.noteUnhandled(m.unhandledMMIO, "mmio", x.Addr, len(x.Data), true)
		}
	} else if !m.mmio.Read(x.Addr, x.Data) {
		fillOnes(x.Data)
		m.noteUnhandled(m.unhandledMMIO, "mmio", x.Addr, len(x.Data), false)
	}
}

func fillOnes(b []byte) {
	for i := range b {
		b[i] = 0xFF
	}
}

// maxUnhandledLogged bounds the set of addresses already logged, so a guest
// probing many addresses cannot grow it without limit.
const maxUnhandledLogged = 4096

// noteUnhandled logs an access no device claimed, at debug level, once per
// address.
func (m *Machine) noteUnhandled(seen map[uint64]struct{}, space string, addr uint64, size int, write bool) {
	if !m.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	m.unhandledMu.Lock()
	_, dup := seen[addr]
	full := len(seen) >= maxUnhandledLogged
	if !dup && !full {
		seen[addr] = struct{}{}
	}
	m.unhandledMu.Unlock()
	if dup || full {
		return
	}
	op := "read"
	if write {
		op = "write"
	}
	m.log.Debug("vmm: unhandled guest access", "space", space, "op", op, "addr", fmt.Sprintf("%#x", addr), "size", size)
}
