package virtio

import (
	"errors"
	"fmt"
	"sync"
)

// Action tells the transport what a status write requires of it. Several
// may be set; handle them in the order Reset, AckFeatures, Activate,
// NotifyConfig.
type Action uint8

// Actions.
const (
	// ActionReset: the driver wrote 0. Reset the device (Device.Reset), then
	// every queue, then the transport's own registers (MSI-X config vector,
	// ISR). The State has already reset itself.
	ActionReset Action = 1 << iota
	// ActionAckFeatures: feature negotiation completed (FEATURES_OK was
	// accepted, or a legacy driver set DRIVER_OK). Call
	// Device.AckFeatures(Negotiated()) and give every queue
	// QueueFeatures(Negotiated()).
	ActionAckFeatures
	// ActionActivate: DRIVER_OK was accepted. Call Device.Activate; on
	// error call SetNeedsReset (and notify if it says so).
	ActionActivate
	// ActionNotifyConfig: send a configuration-change notification
	// (DRIVER_OK was set while DEVICE_NEEDS_RESET was already pending).
	ActionNotifyConfig
)

// driverBits are the status bits a driver may set; reserved bits (0x10,
// 0x20) and DEVICE_NEEDS_RESET are dropped from its writes.
const driverBits = StatusAcknowledge | StatusDriver | StatusDriverOK | StatusFeaturesOK | StatusFailed

// Reasons FEATURES_OK is refused (see State.FeaturesError).
var (
	ErrFeaturesNotOffered = errors.New("virtio: driver accepted features the device did not offer")
	ErrVersion1Required   = errors.New("virtio: driver did not accept VIRTIO_F_VERSION_1")
	ErrStatusOrder        = errors.New("virtio: status bits set out of order")
)

// State is the transport-independent part of a virtio device's
// driver-facing registers: the device_status state machine, the 64-bit
// feature select windows of the modern interface, the 32-bit feature
// registers of the legacy interface, and config_generation. Transports
// (PCI, MMIO) share it. It is safe for concurrent use: devices call
// SetNeedsReset from their own goroutines.
//
// Status rules:
//   - Writing 0 resets (ActionReset).
//   - The driver cannot clear bits (writes that try are ignored for those
//     bits) and cannot set DEVICE_NEEDS_RESET, which belongs to the device,
//     or the reserved bits 0x10 and 0x20.
//   - FEATURES_OK (modern only) is accepted only after or together with
//     ACKNOWLEDGE and DRIVER, and only if the driver's features are a
//     subset of the modern offer, include VERSION_1 when it is offered, and
//     pass the device's validator. Otherwise the bit stays clear, so the
//     driver reads it back clear and gives up, as the spec prescribes.
//   - DRIVER_OK is accepted only with ACKNOWLEDGE, DRIVER and (modern)
//     FEATURES_OK, and not after FAILED. If DEVICE_NEEDS_RESET is already
//     set the bit is recorded but the device is not activated.
//   - Driver feature writes (modern or legacy) are ignored once
//     FEATURES_OK or DRIVER_OK is set.
type State struct {
	mu         sync.Mutex
	offered    uint64 // everything the device offers
	legacyOnly uint64 // hidden from the modern interface
	validate   func(uint64) error

	status     uint8
	devSel     uint32
	drvSel     uint32
	driver     [2]uint32 // driver feature windows 0 and 1
	legacy     bool      // the driver used the legacy feature register
	featErr    error
	generation uint8
}

// NewState returns a reset State for a device offering the given features.
// legacyOnly bits are visible only through the legacy interface. validate,
// if not nil, may refuse a feature set at FEATURES_OK.
func NewState(offered, legacyOnly uint64, validate func(uint64) error) *State {
	return &State{offered: offered, legacyOnly: legacyOnly, validate: validate}
}

// Offered is the modern interface's view of the offered features.
func (s *State) Offered() uint64 { return s.offered &^ s.legacyOnly }

// Status returns device_status.
func (s *State) Status() uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// DriverOK reports whether DRIVER_OK is set (the device may process
// queues and notifications).
func (s *State) DriverOK() bool { return s.Status()&StatusDriverOK != 0 }

// FeaturesOK reports whether feature negotiation has completed.
func (s *State) FeaturesOK() bool { return s.Status()&StatusFeaturesOK != 0 }

// Legacy reports whether the driver has used the legacy interface (its
// feature or status register) since the last reset.
func (s *State) Legacy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.legacy
}

// Negotiated returns the driver's accepted features: meaningful after
// ActionAckFeatures.
func (s *State) Negotiated() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.driverFeatures()
}

func (s *State) driverFeatures() uint64 { return uint64(s.driver[1])<<32 | uint64(s.driver[0]) }

// FeaturesError is why the last FEATURES_OK or DRIVER_OK request was
// refused (nil if it was not), for the transport to log (rate-limited: the
// guest controls it).
func (s *State) FeaturesError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.featErr
}

// Reset returns the state to power-on: status 0, selects 0, no driver
// features. config_generation keeps counting.
func (s *State) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *State) resetLocked() {
	s.status = 0
	s.devSel, s.drvSel = 0, 0
	s.driver = [2]uint32{}
	s.legacy = false
	s.featErr = nil
}

// DeviceFeatureSelect returns device_feature_select.
func (s *State) DeviceFeatureSelect() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.devSel
}

// SetDeviceFeatureSelect writes device_feature_select. Any value is
// stored; windows past the 64 implemented bits read as 0.
func (s *State) SetDeviceFeatureSelect(v uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devSel = v
}

// DeviceFeatures reads device_feature: 32 bits of the modern offer
// selected by device_feature_select (0: bits 0-31, 1: bits 32-63, more: 0).
func (s *State) DeviceFeatures() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return window(s.offered&^s.legacyOnly, s.devSel)
}

func window(f uint64, sel uint32) uint32 {
	switch sel {
	case 0:
		return uint32(f)
	case 1:
		return uint32(f >> 32)
	}
	return 0
}

// DriverFeatureSelect returns driver_feature_select.
func (s *State) DriverFeatureSelect() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drvSel
}

// SetDriverFeatureSelect writes driver_feature_select.
func (s *State) SetDriverFeatureSelect(v uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drvSel = v
}

// DriverFeatures reads back driver_feature for the selected window.
func (s *State) DriverFeatures() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drvSel > 1 {
		return 0
	}
	return s.driver[s.drvSel]
}

// SetDriverFeatures writes driver_feature for the selected window. The
// value is stored as written (checked at FEATURES_OK). Writes to windows
// past bit 63, and all writes once FEATURES_OK or DRIVER_OK is set, are
// ignored.
func (s *State) SetDriverFeatures(v uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status&(StatusFeaturesOK|StatusDriverOK) != 0 || s.drvSel > 1 {
		return
	}
	s.driver[s.drvSel] = v
}

// LegacyHostFeatures reads the legacy HOST_FEATURES register: the low 32
// bits of the offer, legacy-only bits included.
func (s *State) LegacyHostFeatures() uint32 { return uint32(s.offered) }

// LegacyGuestFeatures reads the legacy GUEST_FEATURES register.
func (s *State) LegacyGuestFeatures() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.driver[0]
}

// SetLegacyGuestFeatures writes the legacy GUEST_FEATURES register. Bits
// not offered are dropped (as QEMU does); bits 32-63 cannot be negotiated
// on the legacy interface and are cleared. Ignored once DRIVER_OK (or a
// modern FEATURES_OK) is set.
func (s *State) SetLegacyGuestFeatures(v uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status&(StatusDriverOK|StatusFeaturesOK) != 0 {
		return
	}
	s.driver = [2]uint32{v & uint32(s.offered), 0}
	s.legacy = true
}

// checkFeatures validates the modern driver features for FEATURES_OK.
func (s *State) checkFeatures() error {
	f := s.driverFeatures()
	if extra := f &^ (s.offered &^ s.legacyOnly); extra != 0 {
		return fmt.Errorf("features %#x, extra %#x: %w", f, extra, ErrFeaturesNotOffered)
	}
	if s.offered&Bit(FeatureVersion1) != 0 && f&Bit(FeatureVersion1) == 0 {
		return ErrVersion1Required
	}
	if s.validate != nil {
		if err := s.validate(f); err != nil {
			return fmt.Errorf("features %#x refused by the device: %w", f, err)
		}
	}
	return nil
}

// WriteStatus handles a driver write of device_status on the modern
// interface and returns what the transport must do.
func (s *State) WriteStatus(v uint8) Action {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == 0 {
		s.resetLocked()
		return ActionReset
	}
	old := s.status
	add := v &^ old & driverBits
	ready := (old|add)&(StatusAcknowledge|StatusDriver) == StatusAcknowledge|StatusDriver
	var act Action
	if add&StatusFeaturesOK != 0 {
		var err error
		if !ready {
			err = fmt.Errorf("FEATURES_OK without ACKNOWLEDGE|DRIVER: %w", ErrStatusOrder)
		} else {
			err = s.checkFeatures()
		}
		if err != nil {
			s.featErr = err
			add &^= StatusFeaturesOK
		} else {
			act |= ActionAckFeatures
		}
	}
	if add&StatusDriverOK != 0 {
		switch {
		case !ready || (old|add)&StatusFeaturesOK == 0 || (old|add)&StatusFailed != 0:
			s.featErr = fmt.Errorf("DRIVER_OK with status %#x: %w", old|add, ErrStatusOrder)
			add &^= StatusDriverOK
		case old&StatusDeviceNeedsReset != 0:
			act |= ActionNotifyConfig
		default:
			act |= ActionActivate
		}
	}
	s.status = old | add
	return act
}

// WriteLegacyStatus handles a driver write of the legacy STATUS register.
// There is no FEATURES_OK on the legacy interface: the bit is ignored, and
// DRIVER_OK completes negotiation (ActionAckFeatures) and activates.
func (s *State) WriteLegacyStatus(v uint8) Action {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == 0 {
		s.resetLocked()
		return ActionReset
	}
	s.legacy = true
	old := s.status
	add := v &^ old & driverBits &^ StatusFeaturesOK
	var act Action
	if add&StatusDriverOK != 0 {
		switch {
		case (old|add)&StatusFailed != 0:
			s.featErr = fmt.Errorf("DRIVER_OK with status %#x: %w", old|add, ErrStatusOrder)
			add &^= StatusDriverOK
		case old&StatusDeviceNeedsReset != 0:
			act |= ActionNotifyConfig
		default:
			act |= ActionAckFeatures | ActionActivate
		}
	}
	s.status = old | add
	return act
}

// SetNeedsReset sets DEVICE_NEEDS_RESET. It reports whether the transport
// must now send a configuration-change notification: true the first time
// it is set while DRIVER_OK is set. It does nothing on a reset device
// (status 0) or when the bit is already set.
func (s *State) SetNeedsReset() (notify bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == 0 || s.status&StatusDeviceNeedsReset != 0 {
		return false
	}
	s.status |= StatusDeviceNeedsReset
	return s.status&StatusDriverOK != 0
}

// ConfigGeneration returns config_generation.
func (s *State) ConfigGeneration() uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.generation
}

// BumpConfigGeneration increments config_generation (on every
// configuration change the driver is notified of).
func (s *State) BumpConfigGeneration() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generation++
}
