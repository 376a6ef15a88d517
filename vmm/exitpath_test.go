package vmm

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
)

// outLoop is a guest that writes AL to port 0x10 n times, then powers off.
func outLoop(n uint32) []byte {
	return cat(movECX(n), movDX(0x10), outAL, []byte{0xE2, 0xFD}, done) // loop: out dx,al; loop .-3
}

type sink struct{ n int }

func (s *sink) Read(uint64, []byte)  {}
func (s *sink) Write(uint64, []byte) { s.n++ }

// mallocsFor runs a guest that makes n PIO exits and returns the number of
// heap allocations the whole Run made.
func mallocsFor(t *testing.T, n uint32) uint64 {
	m := newTestMachine(t, 1)
	s := &sink{}
	require.NoError(t, m.PIO().Register(0x10, 1, s))
	load(t, m, outLoop(n))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	require.NoError(t, run(t, m))
	runtime.ReadMemStats(&after)
	require.Equal(t, int(n), s.n)
	return after.Mallocs - before.Mallocs
}

// The PIO exit path allocates nothing per exit: Run's allocations do not
// grow with the number of exits.
func TestExitPathAllocatesNothing(t *testing.T) {
	few := mallocsFor(t, 10)
	many := mallocsFor(t, 2000)
	t.Logf("mallocs: 10 exits %d, 2000 exits %d", few, many)
	require.Less(t, many, few+100, "allocations grow with the number of exits")
}

// BenchmarkPIOExit measures one guest out -> bus dispatch -> re-entry
// round trip (dominated by KVM; on kvm_pvm ~5 µs).
func BenchmarkPIOExit(b *testing.B) {
	testenv.KVM(b)
	m, err := NewMachine(Config{MemBytes: 2 << 20})
	require.NoError(b, err)
	defer m.Close()
	s := &sink{}
	require.NoError(b, m.PIO().Register(0x10, 1, s))
	mem := m.Memory()
	for i, d := range []uint64{0, 0, gdtCode32, gdtData32} {
		require.NoError(b, mem.PutU64(testGDT+uint64(i)*8, d))
	}
	require.NoError(b, mem.Write(testCode, outLoop(uint32(max(b.N, 1)))))
	require.NoError(b, m.PIO().Register(donePort, 1, devFunc{write: func(uint64, []byte) { m.PowerOff() }}))
	require.NoError(b, m.SetBootEntry(BootEntry{RIP: testCode, GDTBase: testGDT, GDTLimit: 31, CodeSel: 0x10, DataSel: 0x18}))
	b.ReportAllocs()
	b.ResetTimer()
	require.NoError(b, m.Run(b.Context()))
}
