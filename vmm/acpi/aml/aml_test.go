package aml

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func enc(t *testing.T, terms ...Term) []byte {
	t.Helper()
	b, err := Encode(terms...)
	require.NoError(t, err)
	return b
}

func TestPkgLength(t *testing.T) {
	cases := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{0x3E, []byte{0x3F}},
		{0x3F, []byte{0x41, 0x04}},        // 0x41 total: 2 bytes
		{0x100, []byte{0x42, 0x10}},       // 0x102
		{0xFFD, []byte{0x4F, 0xFF}},       // 0xFFF
		{0xFFE, []byte{0x81, 0x00, 0x01}}, // 0x1001
		{0xFFFFC, []byte{0x8F, 0xFF, 0xFF}},
		{0xFFFFD, []byte{0xC1, 0x00, 0x00, 0x01}},
		{1<<28 - 5, []byte{0xCF, 0xFF, 0xFF, 0xFF}},
	}
	for _, c := range cases {
		got, err := PkgLength(c.n)
		require.NoError(t, err, "%#x", c.n)
		require.Equal(t, c.want, got, "%#x", c.n)
	}
	_, err := PkgLength(1<<28 - 4)
	require.Error(t, err)
}

func TestNameString(t *testing.T) {
	cases := map[string][]byte{
		"_SB":          []byte("_SB_"),
		`\_SB`:         []byte(`\_SB_`),
		`\`:            {'\\', 0},
		"^^FOO":        []byte("^^FOO_"),
		"_SB.PCI0":     append([]byte{0x2E}, "_SB_PCI0"...),
		`\_SB.PCI0.S1`: append([]byte{'\\', 0x2F, 3}, "_SB_PCI0S1__"...),
		"A1":           []byte("A1__"),
	}
	for in, want := range cases {
		got, err := NameString(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"TOOLONG", "a", "1ABC", "_SB..X", "_S-B", "^"} {
		_, err := NameString(bad)
		if bad == "^" {
			require.NoError(t, err) // parent prefix + NullName
			continue
		}
		require.Error(t, err, bad)
	}
}

func TestIntegers(t *testing.T) {
	cases := []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x01}},
		{2, []byte{0x0A, 0x02}},
		{0xFF, []byte{0x0A, 0xFF}},
		{0x100, []byte{0x0B, 0x00, 0x01}},
		{0x1FFFF, []byte{0x0C, 0xFF, 0xFF, 0x01, 0x00}},
		{0x1_0000_0000, []byte{0x0E, 0, 0, 0, 0, 1, 0, 0, 0}},
	}
	for _, c := range cases {
		require.Equal(t, c.want, enc(t, Integer(c.v)), "%#x", c.v)
	}
	require.Equal(t, []byte{0xFF}, enc(t, Ones))
	require.Equal(t, []byte{0x0D, 'h', 'i', 0}, enc(t, String("hi")))
	_, err := Encode(String("a\x00"))
	require.Error(t, err)
}

func TestEISAID(t *testing.T) {
	v, err := EISAIDValue("PNP0A03")
	require.NoError(t, err)
	require.Equal(t, uint32(0x030AD041), v)
	v, err = EISAIDValue("PNP0501")
	require.NoError(t, err)
	require.Equal(t, uint32(0x0105D041), v)
	require.Equal(t, []byte{0x0C, 0x41, 0xD0, 0x0A, 0x03}, enc(t, EISAID("PNP0A03")))
	for _, bad := range []string{"PNP0A0", "pnp0A03", "PNP0G03"} {
		_, err := EISAIDValue(bad)
		require.Error(t, err, bad)
		_, err = Encode(EISAID(bad))
		require.Error(t, err, bad)
	}
}

func TestNamedObjects(t *testing.T) {
	// Name(_S5_, Package(){0, 0, 0, 0}) at the root.
	require.Equal(t,
		[]byte{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0, 0, 0, 0},
		enc(t, Name(`\_S5_`, Package(Integer(0), Integer(0), Integer(0), Integer(0)))))
	// Device(COM1) { Name(_UID, One) }
	require.Equal(t,
		[]byte{0x5B, 0x82, 0x0B, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x01},
		enc(t, Device("COM1", Name("_UID", Integer(1)))))
	// Scope(\_SB) {}
	require.Equal(t, []byte{0x10, 0x06, '\\', '_', 'S', 'B', '_'}, enc(t, Scope(`\_SB`)))
	// Buffer with a byte count.
	require.Equal(t, []byte{0x11, 0x05, 0x0A, 0x02, 0xAA, 0xBB}, enc(t, Buffer([]byte{0xAA, 0xBB})))
	// A large device takes a multi-byte PkgLength.
	var names []Term
	for i := 0; i < 20; i++ {
		names = append(names, Name("_UID", Integer(0x12345678)))
	}
	b := enc(t, Device("BIG0", names...))
	require.Equal(t, []byte{0x5B, 0x82}, b[:2])
	body := 4 + 20*10
	pl, err := PkgLength(body)
	require.NoError(t, err)
	require.Equal(t, pl, b[2:4])
	require.Len(t, b, 2+2+body)
	// Errors propagate out of nested terms.
	_, err = Encode(Scope(`\_SB`, Device("dev", Name("_HID", Integer(0)))))
	require.ErrorContains(t, err, "invalid character")
	_, err = Encode(Package(make([]Term, 256)...))
	require.ErrorContains(t, err, "255")
}

func TestResources(t *testing.T) {
	require.Equal(t, []byte{0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08}, IO(0x3F8, 0x3F8, 1, 8).Bytes())
	require.Equal(t, []byte{0x22, 0x10, 0x00}, IRQNoFlags(4).Bytes())
	require.Equal(t, []byte{0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00,
		0x00, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x01}, WordBusNumber(0, 0xFF).Bytes())
	require.Equal(t, []byte{0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03,
		0x00, 0x00, 0x00, 0x0D, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0xF3}, WordIO(0x0D00, 0xFFFF).Bytes())
	d := DWordMemory(0xC0000000, 0xFEBFFFFF, false).Bytes()
	require.Len(t, d, 26)
	require.Equal(t, []byte{0x87, 0x17, 0x00, 0x00, 0x0C, 0x01}, d[:6])
	require.Equal(t, []byte{0, 0, 0, 0xC0}, d[10:14])
	require.Equal(t, []byte{0xFF, 0xFF, 0xBF, 0xFE}, d[14:18])
	require.Equal(t, []byte{0, 0, 0xC0, 0x3E}, d[22:26])
	q := QWordMemory(0x10_0000_0000, 0x1F_FFFF_FFFF, true).Bytes()
	require.Len(t, q, 46)
	require.Equal(t, []byte{0x8A, 0x2B, 0x00, 0x00, 0x0C, 0x03}, q[:6])

	b := enc(t, ResourceTemplate(IO(0x3F8, 0x3F8, 1, 8), IRQNoFlags(4)))
	// Buffer(0x0D) { IO..., IRQ..., EndTag, checksum }
	require.Equal(t, []byte{0x11, 0x10, 0x0A, 0x0D}, b[:4])
	tmpl := b[4:]
	require.Equal(t, byte(0x79), tmpl[len(tmpl)-2])
	var sum byte
	for _, c := range tmpl {
		sum += c
	}
	require.Zero(t, sum, "template checksum")

	for _, r := range []Resource{IO(2, 1, 1, 1), IRQNoFlags(16), WordIO(5, 4), QWordMemory(0, ^uint64(0), false)} {
		_, err := Encode(ResourceTemplate(r))
		require.Error(t, err)
	}
	_, err := Encode(ResourceTemplate())
	require.ErrorIs(t, err, ErrEmptyTemplate)
}
