package power

import (
	"fmt"
	"sync"

	"github.com/rscvm/rscvm/devices/bus"
)

// i8042 ports.
const (
	I8042DataPort    = 0x60
	I8042CommandPort = 0x64 // status on read, command on write
)

// i8042 status bits.
const (
	kbdStatusOBF     = 1 << 0 // output buffer full (never: the stub has no data)
	kbdStatusIBF     = 1 << 1 // input buffer full (never: commands complete at once)
	kbdStatusSystem  = 1 << 2 // self-test passed
	kbdStatusCommand = 1 << 3 // last write went to the command port
	kbdStatusUnlock  = 1 << 4 // keyboard not inhibited
)

// i8042 commands handled by the stub.
const (
	kbdCmdWriteOutput = 0xD1 // next data byte is the output port; bit 0 low resets
	kbdCmdPulseReset  = 0xFE // pulse output bit 0 (reset) low
)

// I8042 is a keyboard controller stub with no keyboard or mouse behind it:
// the status register always reports an empty output buffer and the system
// flag (0x1C after a command write, 0x14 after a data write), so drivers
// find no data and give up. Pulse-reset (0xFE, or any pulse command
// 0xF0-0xFE with bit 0 clear) and writing the output port (0xD1) with bit 0
// clear reset the machine. Other commands and data are ignored.
type I8042 struct {
	reset func()

	mu         sync.Mutex
	lastCmd    bool  // last write was to the command port
	pendingCmd uint8 // command waiting for its data byte (0: none)
}

// NewI8042 creates the stub; reset is called on a reset request.
func NewI8042(reset func()) *I8042 {
	return &I8042{reset: reset, lastCmd: true}
}

// DataPort is the bus.Device for port 0x60.
func (k *I8042) DataPort() bus.Device { return kbdData{k} }

// CommandPort is the bus.Device for port 0x64.
func (k *I8042) CommandPort() bus.Device { return kbdCommand{k} }

// Attach registers the data and command ports on pio.
func (k *I8042) Attach(pio *bus.Bus) error {
	if err := pio.Register(I8042DataPort, 1, k.DataPort()); err != nil {
		return fmt.Errorf("power: attach i8042 data port: %w", err)
	}
	if err := pio.Register(I8042CommandPort, 1, k.CommandPort()); err != nil {
		_ = pio.Unregister(I8042DataPort)
		return fmt.Errorf("power: attach i8042 command port: %w", err)
	}
	return nil
}

// Status returns the status register value.
func (k *I8042) Status() uint8 {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := uint8(kbdStatusSystem | kbdStatusUnlock)
	if k.lastCmd {
		v |= kbdStatusCommand
	}
	return v
}

func (k *I8042) command(v uint8) {
	k.mu.Lock()
	k.lastCmd = true
	k.pendingCmd = 0
	doReset := false
	switch {
	case v == kbdCmdWriteOutput:
		k.pendingCmd = v
	case v == kbdCmdPulseReset:
		doReset = true
	case v >= 0xF0:
		// Pulse output lines: bit 0 of the low nibble clear pulses reset.
		doReset = v&1 == 0
	}
	k.mu.Unlock()
	if doReset && k.reset != nil {
		k.reset()
	}
}

func (k *I8042) data(v uint8) {
	k.mu.Lock()
	k.lastCmd = false
	cmd := k.pendingCmd
	k.pendingCmd = 0
	k.mu.Unlock()
	if cmd == kbdCmdWriteOutput && v&1 == 0 && k.reset != nil {
		k.reset()
	}
}

type kbdData struct{ k *I8042 }

func (d kbdData) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (d kbdData) Write(offset uint64, data []byte) {
	if offset == 0 && len(data) == 1 {
		d.k.data(data[0])
	}
}

type kbdCommand struct{ k *I8042 }

func (c kbdCommand) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xFF
	}
	if offset == 0 && len(data) == 1 {
		data[0] = c.k.Status()
	}
}

func (c kbdCommand) Write(offset uint64, data []byte) {
	if offset == 0 && len(data) == 1 {
		c.k.command(data[0])
	}
}
