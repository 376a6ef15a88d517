package vmm

import (
	"context"
	"encoding/binary"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
)

// onPVM reports whether /dev/kvm is the software hypervisor kvm_pvm, whose
// instruction emulator fails on int3.
func onPVM() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}

func newTestMachine(t *testing.T, cpus int) *Machine {
	t.Helper()
	testenv.KVM(t)
	m, err := NewMachine(Config{MemBytes: 2 << 20, CPUs: cpus})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

// Test guest layout: GDT at 0x500, code at 0x1000, data from 0x2000.
const (
	testGDT   = 0x500
	testCode  = 0x1000
	donePort  = 0xF4 // a write powers the machine off
	gdtCode32 = 0x00CF9B000000FFFF
	gdtData32 = 0x00CF93000000FFFF
)

// load writes the GDT and prog, sets the boot entry and registers the
// power-off port.
func load(t *testing.T, m *Machine, prog []byte) {
	t.Helper()
	mem := m.Memory()
	for i, d := range []uint64{0, 0, gdtCode32, gdtData32} {
		require.NoError(t, mem.PutU64(testGDT+uint64(i)*8, d))
	}
	require.NoError(t, mem.Write(testCode, prog))
	require.NoError(t, m.PIO().Register(donePort, 1, devFunc{write: func(uint64, []byte) { m.PowerOff() }}))
	require.NoError(t, m.SetBootEntry(BootEntry{RIP: testCode, GDTBase: testGDT, GDTLimit: 4*8 - 1, CodeSel: 0x10, DataSel: 0x18}))
}

func run(t *testing.T, m *Machine) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := m.Run(ctx)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "guest did not finish")
	return err
}

type devFunc struct {
	read  func(off uint64, data []byte)
	write func(off uint64, data []byte)
}

func (d devFunc) Read(off uint64, data []byte) {
	if d.read != nil {
		d.read(off, data)
	}
}

func (d devFunc) Write(off uint64, data []byte) {
	if d.write != nil {
		d.write(off, data)
	}
}

// access is one bus access a recorder saw.
type access struct {
	Addr  uint64
	Write bool
	Data  []byte
}

// recorder is a bus device that logs accesses; reads return readVal.
type recorder struct {
	base    uint64
	mu      sync.Mutex
	log     []access
	readVal func(off uint64, n int) uint64
}

func (r *recorder) Read(off uint64, data []byte) {
	var v uint64
	if r.readVal != nil {
		v = r.readVal(off, len(data))
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	copy(data, b[:])
	r.mu.Lock()
	r.log = append(r.log, access{r.base + off, false, append([]byte(nil), data...)})
	r.mu.Unlock()
}

func (r *recorder) Write(off uint64, data []byte) {
	r.mu.Lock()
	r.log = append(r.log, access{r.base + off, true, append([]byte(nil), data...)})
	r.mu.Unlock()
}

func (r *recorder) accesses() []access {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]access(nil), r.log...)
}

func writes(as []access) []access {
	var out []access
	for _, a := range as {
		if a.Write {
			out = append(out, a)
		}
	}
	return out
}

// Little helpers to assemble 32-bit code.
func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func movDX(port uint16) []byte   { return cat([]byte{0x66, 0xBA}, le16(port)) }
func movEAX(v uint32) []byte     { return cat([]byte{0xB8}, le32(v)) }
func movECX(v uint32) []byte     { return cat([]byte{0xB9}, le32(v)) }
func movESI(v uint32) []byte     { return cat([]byte{0xBE}, le32(v)) }
func movEDI(v uint32) []byte     { return cat([]byte{0xBF}, le32(v)) }
func movAL(v uint8) []byte       { return []byte{0xB0, v} }
func movAX(v uint16) []byte      { return cat([]byte{0x66, 0xB8}, le16(v)) }
func loadEAX(addr uint32) []byte { return cat([]byte{0xA1}, le32(addr)) } // mov eax, [addr]
func storeEAX(addr uint32) []byte {
	return cat([]byte{0xA3}, le32(addr)) // mov [addr], eax
}
func storeImm32(addr, v uint32) []byte { return cat([]byte{0xC7, 0x05}, le32(addr), le32(v)) }

var (
	outAL    = []byte{0xEE}
	outAX    = []byte{0x66, 0xEF}
	outEAX   = []byte{0xEF}
	inAL     = []byte{0xEC}
	inEAX    = []byte{0xED}
	cpuid    = []byte{0x0F, 0xA2}
	movEAXB  = []byte{0x89, 0xD8} // mov eax, ebx
	cld      = []byte{0xFC}
	repOutsb = []byte{0xF3, 0x6E}
	repInsb  = []byte{0xF3, 0x6C}
	jmpSelf  = []byte{0xEB, 0xFE}
	done     = cat(movDX(donePort), outAL, jmpSelf)
)
