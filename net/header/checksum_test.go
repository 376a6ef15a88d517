package header

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// refSum is a straightforward RFC 1071 reference implementation.
func refSum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestSumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70000)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for n := 0; n < 300; n++ {
		for _, off := range []int{0, 1, 3, 7} {
			b := buf[off : off+n]
			init := uint16(r.Uint32())
			require.Equal(t, refSum(b, init), Sum(b, init), "n=%d off=%d", n, off)
		}
	}
	for range 200 {
		n := r.IntN(len(buf) - 8)
		b := buf[:n]
		require.Equal(t, refSum(b, 0), Sum(b, 0), "n=%d", n)
	}
	// All-ones data exercises the carry chain.
	ff := make([]byte, 65536)
	for i := range ff {
		ff[i] = 0xff
	}
	for _, n := range []int{0, 1, 2, 8, 63, 64, 65, 1500, 65535, 65536} {
		require.Equal(t, refSum(ff[:n], 0), Sum(ff[:n], 0), "n=%d", n)
		require.Equal(t, refSum(ff[:n], 0xffff), Sum(ff[:n], 0xffff), "n=%d", n)
	}
}

func TestCombineAndPseudo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 1000)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	// Splitting at even offsets gives the same sum.
	for _, cut := range []int{0, 2, 100, 998, 1000} {
		require.Equal(t, Sum(b, 0), Sum(b[cut:], Sum(b[:cut], 0)))
		require.Equal(t, Sum(b, 0), CombineSums(Sum(b[:cut], 0), Sum(b[cut:], 0)))
	}
	src, dst := [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}
	want := refSum([]byte{10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0x05, 0xdc}, 0)
	require.Equal(t, want, PseudoHeaderSumV4(ProtocolTCP, src, dst, 1500))
	require.Equal(t, want, PseudoHeaderSum(ProtocolTCP, src[:], dst[:], 1500))
	var s6, d6 [16]byte
	s6[0], s6[15], d6[0], d6[15] = 0x20, 1, 0x20, 2
	raw := append(append(append([]byte{}, s6[:]...), d6[:]...), 0, 1, 0x00, 0x10, 0, 0, 0, 6)
	require.Equal(t, refSum(raw, 0), PseudoHeaderSumV6(ProtocolTCP, &s6, &d6, 0x10010))
}

func TestIncrementalUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		b := make([]byte, 40)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		b[10], b[11] = 0, 0
		c := Checksum(b)
		b[10], b[11] = byte(c>>8), byte(c)
		require.Equal(t, uint16(0xffff), Sum(b, 0))
		// Change a 16-bit word.
		i := 2 * r.IntN(20)
		if i == 10 {
			continue
		}
		old := uint16(b[i])<<8 | uint16(b[i+1])
		nw := uint16(r.Uint32())
		b[i], b[i+1] = byte(nw>>8), byte(nw)
		c = UpdateChecksum16(c, old, nw)
		b[10], b[11] = byte(c>>8), byte(c)
		require.Equal(t, uint16(0xffff), Sum(b, 0), "16-bit update")
		// Change a 32-bit word at offset 12.
		o32 := uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15])
		n32 := r.Uint32()
		b[12], b[13], b[14], b[15] = byte(n32>>24), byte(n32>>16), byte(n32>>8), byte(n32)
		c = UpdateChecksum32(c, o32, n32)
		b[10], b[11] = byte(c>>8), byte(c)
		require.Equal(t, uint16(0xffff), Sum(b, 0), "32-bit update")
	}
}

func FuzzSum(f *testing.F) {
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{0xff}, uint16(0xffff))
	f.Add([]byte{0x45, 0, 0, 0x28, 1, 2, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}, uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, init uint16) {
		if got, want := Sum(b, init), refSum(b, init); got != want {
			// 0x0000 and 0xffff are both zero in one's complement; the
			// reference never produces 0 from a non-zero initial value.
			t.Fatalf("Sum=%#x ref=%#x len=%d", got, want, len(b))
		}
	})
}

var sink16 uint16

func benchSum(b *testing.B, n int) {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		sink16 = Sum(buf, 0)
	}
}

func BenchmarkSum40(b *testing.B)    { benchSum(b, 40) }
func BenchmarkSum1448(b *testing.B)  { benchSum(b, 1448) }
func BenchmarkSum1500(b *testing.B)  { benchSum(b, 1500) }
func BenchmarkSum65535(b *testing.B) { benchSum(b, 65535) }

func BenchmarkSumReference1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.SetBytes(1500)
	for b.Loop() {
		sink16 = refSum(buf, 0)
	}
}

// sumAddCarry is the 8-bytes-at-a-time add-with-carry variant, kept to
// benchmark against Sum.
func sumAddCarry(b []byte, initial uint16) uint16 {
	var acc, c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		b = b[8:]
	}
	acc, c = bits.Add64(acc, 0, c)
	acc += c
	s := uint16(0)
	s = CombineSums(bits.ReverseBytes16(fold64(acc)), initial)
	return Sum(b, s) // tail (< 8 bytes)
}

func TestSumAddCarry(t *testing.T) {
	buf := make([]byte, 2000)
	for i := range buf {
		buf[i] = byte(i*131 ^ i>>3)
	}
	for n := range buf {
		require.Equal(t, refSum(buf[:n], 9), sumAddCarry(buf[:n], 9), "n=%d", n)
	}
}

func BenchmarkSumAddCarry1448(b *testing.B) {
	buf := make([]byte, 1448)
	b.SetBytes(1448)
	for b.Loop() {
		sink16 = sumAddCarry(buf, 0)
	}
}

func TestSumIPv4Header(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	b := make([]byte, 20)
	for range 1000 {
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		require.Equal(t, refSum(b, 0), SumIPv4Header(b))
	}
}
