package virtiopci

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/devices/pci"
	"github.com/rscvm/rscvm/virtio"
)

func hexBytes(s string) []byte {
	var out []byte
	for _, f := range strings.Fields(s) {
		var b byte
		_, err := fmt.Sscanf(f, "%02x", &b)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return out
}

// The whole 256-byte configuration space of a transitional virtio-net-pci
// with vectors=4 at 00:03.0, after the bus assigned its BARs.
func TestConfigSpaceImage(t *testing.T) {
	e := newEnv(t)
	img := e.image()
	io, m32, m64 := e.barBase(BARLegacy), e.barBase(BARMSIX), e.barBase(BARModern)
	want := make([]byte, 256)
	copy(want[0x00:], hexBytes("f4 1a 00 10  03 00 10 00  00 00 00 02  00 00 00 00"))
	binary.LittleEndian.PutUint32(want[0x10:], uint32(io)|1)
	binary.LittleEndian.PutUint32(want[0x14:], uint32(m32))
	binary.LittleEndian.PutUint64(want[0x20:], m64|0xC)
	copy(want[0x2C:], hexBytes("f4 1a 01 00"))
	want[0x34] = 0x98
	want[0x3C], want[0x3D] = testGSI, 1
	copy(want[0x40:], hexBytes("09 00 10 01 04 00 00 00  00 00 00 00 00 10 00 00"))
	copy(want[0x50:], hexBytes("09 40 10 03 04 00 00 00  00 10 00 00 00 10 00 00"))
	copy(want[0x60:], hexBytes("09 50 10 04 04 00 00 00  00 20 00 00 00 10 00 00"))
	copy(want[0x70:], hexBytes("09 60 14 02 04 00 00 00  00 30 00 00 00 10 00 00  04 00 00 00"))
	copy(want[0x84:], hexBytes("09 70 14 05 00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00"))
	copy(want[0x98:], hexBytes("11 84 03 00  01 00 00 00  01 08 00 00"))
	require.Equal(t, want, img)
	require.Equal(t, uint64(0xC000), io&^0xFFF, "I/O BAR from the I/O window")
}

// Linux's __pci_read_base: decode off, write all-ones, read the size mask,
// restore.
func TestBARSizingAsLinux(t *testing.T) {
	e := newEnv(t)
	cmd := e.cfgRead(pci.RegCommand, 2)
	e.command(uint16(cmd &^ (pci.CommandIO | pci.CommandMemory)))
	var masks []uint64
	for i := 0; i < pci.NumBARs; i++ {
		reg := pci.RegBAR0 + 4*i
		old := e.cfgRead(reg, 4)
		e.cfgWrite(reg, 4, 0xFFFFFFFF)
		masks = append(masks, e.cfgRead(reg, 4))
		e.cfgWrite(reg, 4, old)
	}
	e.cfgWrite(pci.RegROMAddress, 4, 0xFFFFF800)
	require.Equal(t, uint64(0), e.cfgRead(pci.RegROMAddress, 4), "no expansion ROM")
	e.command(uint16(cmd))
	require.Equal(t, []uint64{0xFFFFFFE1, 0xFFFFF000, 0, 0, 0xFFFFC00C, 0xFFFFFFFF}, masks)
	e.barBase(BARLegacy) // mapped again
	e.barBase(BARModern)
}

// parseCapture returns the key=value fields of the "pci 00:03.0" line and
// the "caps 00:03.0" line of the QEMU capture.
func parseCapture(t *testing.T) (map[string]string, string) {
	f, err := os.Open("../../guestimages/testguest/testdata/qemu-virtio-net.txt")
	require.NoError(t, err)
	defer f.Close()
	fields := map[string]string{}
	var caps string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		switch {
		case strings.HasPrefix(line, "pci 00:03.0 "):
			for _, kv := range strings.Fields(line)[2:] {
				k, v, _ := strings.Cut(kv, "=")
				fields[k] = v
			}
		case strings.HasPrefix(line, "caps 00:03.0 "):
			caps = strings.TrimPrefix(line, "caps 00:03.0 ")
		}
	}
	require.NoError(t, s.Err())
	require.NotEmpty(t, fields)
	require.NotEmpty(t, caps)
	return fields, caps
}

// describeCaps walks the capability list like the test guest does and
// formats it the same way.
func describeCaps(e *env) string {
	var parts []string
	for p := int(e.cfgRead(pci.RegCapPtr, 1)); p != 0; p = int(e.cfgRead(p+1, 1)) {
		id := e.cfgRead(p, 1)
		switch id {
		case pci.CapMSIX:
			ctrl := e.cfgRead(p+2, 2)
			tbl, pba := e.cfgRead(p+4, 4), e.cfgRead(p+8, 4)
			parts = append(parts, fmt.Sprintf("11@%02x(msix size=%d enabled=%d masked=%d table=bar%d+%#x pba=bar%d+%#x)",
				p, ctrl&0x7FF+1, ctrl>>15&1, ctrl>>14&1, tbl&7, tbl&^7, pba&7, pba&^7))
		case pci.CapVendor:
			l, typ := e.cfgRead(p+2, 1), e.cfgRead(p+3, 1)
			s := fmt.Sprintf("09@%02x(len=%#x cfg_type=%d bar=%d offset=%#x length=%#x", p, l, typ,
				e.cfgRead(p+4, 1), e.cfgRead(p+8, 4), e.cfgRead(p+12, 4))
			if typ == CapNotifyCfg {
				s += fmt.Sprintf(" mult=%d", e.cfgRead(p+16, 4))
			}
			parts = append(parts, s+")")
		default:
			parts = append(parts, fmt.Sprintf("%02x@%02x", id, p))
		}
	}
	return strings.Join(parts, " ")
}

// The identity, BAR kinds and sizes, and the capability chain match what
// the test guest read from QEMU 7.2's `-device virtio-net-pci` (vectors=4
// for one queue pair). The command register and Interrupt Line differ by
// design: SeaBIOS programs QEMU's, pci.Bus ours.
func TestMatchesQEMUCapture(t *testing.T) {
	fields, caps := parseCapture(t)
	e := newEnv(t)
	require.Equal(t, fields["vendor"], fmt.Sprintf("%04x", e.cfgRead(pci.RegVendorID, 2)))
	require.Equal(t, fields["device"], fmt.Sprintf("%04x", e.cfgRead(pci.RegDeviceID, 2)))
	require.Equal(t, fields["rev"], fmt.Sprintf("%02x", e.cfgRead(pci.RegRevision, 1)))
	require.Equal(t, fields["class"], fmt.Sprintf("%06x", e.cfgRead(pci.RegClass, 4)&0xFFFFFF))
	require.Equal(t, fields["hdr"], fmt.Sprintf("%02x", e.cfgRead(pci.RegHeaderType, 1)))
	require.Equal(t, fields["subsys"], fmt.Sprintf("%04x:%04x", e.cfgRead(pci.RegSubsystemVendorID, 2), e.cfgRead(pci.RegSubsystemID, 2)))
	require.Equal(t, fields["pin"], fmt.Sprint(e.cfgRead(pci.RegInterruptPin, 1)))
	for bar, kind := range map[int]string{BARLegacy: "io", BARMSIX: "mem32", BARModern: "mem64p"} {
		want := fields[fmt.Sprintf("bar%d", bar)]
		require.NotEmpty(t, want)
		k, rest, _ := strings.Cut(want, ":")
		_, size, _ := strings.Cut(rest, "/")
		require.Equal(t, k, kind, "BAR %d kind", bar)
		require.Equal(t, size, fmt.Sprint(e.tr.BARs()[bar].Size), "BAR %d size", bar)
	}
	require.Empty(t, fields["bar2"]+fields["bar3"]+fields["bar5"]+fields["rom"])
	require.Equal(t, caps, describeCaps(e))
}

func TestModernOnlyIdentity(t *testing.T) {
	e := newEnv(t, modernOnly)
	require.Equal(t, uint64(0x10411AF4), e.cfgRead(0, 4))
	require.Equal(t, uint64(0x02000001), e.cfgRead(pci.RegRevision, 4), "revision 1, class 0x020000")
	require.Equal(t, uint64(0x11001AF4), e.cfgRead(pci.RegSubsystemVendorID, 4))
	require.Equal(t, uint64(0), e.cfgRead(pci.RegBAR0, 4), "no legacy BAR")
	_, ok := e.pci.BARMapping(testSlot, BARLegacy)
	require.False(t, ok)
	require.Equal(t, "11@98(msix size=4 enabled=0 masked=0 table=bar1+0x0 pba=bar1+0x800) "+
		"09@84(len=0x14 cfg_type=5 bar=0 offset=0x0 length=0x0) "+
		"09@70(len=0x14 cfg_type=2 bar=4 offset=0x3000 length=0x1000 mult=4) "+
		"09@60(len=0x10 cfg_type=4 bar=4 offset=0x2000 length=0x1000) "+
		"09@50(len=0x10 cfg_type=3 bar=4 offset=0x1000 length=0x1000) "+
		"09@40(len=0x10 cfg_type=1 bar=4 offset=0x0 length=0x1000)", describeCaps(e))
	require.Equal(t, uint64(pci.CommandMemory), e.cfgRead(pci.RegCommand, 2), "no I/O BAR: only memory decode")
}

func TestLegacyOnlyIdentity(t *testing.T) {
	e := newEnv(t, legacyOnly)
	require.Equal(t, uint64(0x10001AF4), e.cfgRead(0, 4))
	require.Equal(t, uint64(0x00011AF4), e.cfgRead(pci.RegSubsystemVendorID, 4))
	require.Equal(t, "11@40(msix size=4 enabled=0 masked=0 table=bar1+0x0 pba=bar1+0x800)", describeCaps(e))
	require.Equal(t, uint64(0), e.cfgRead(pci.RegBAR0+16, 4), "no modern BAR")
	require.Equal(t, uint64(32), e.tr.BARs()[BARLegacy].Size)
	// No VERSION_1 on a legacy-only function; BAD_FEATURE offered.
	require.Equal(t, uint64(0), e.tr.State().Offered()&virtio.Bit(virtio.FeatureVersion1))
	require.NotZero(t, e.legacyReg(LegacyHostFeatures, 4)&(1<<virtio.FeatureBadFeature))
}

func TestNoMSIX(t *testing.T) {
	e := newEnv(t, vectors(0))
	require.Equal(t, uint64(0x84), e.cfgRead(pci.RegCapPtr, 1), "PCI_CFG heads the list")
	require.NotContains(t, describeCaps(e), "msix")
	require.Equal(t, uint64(0), e.cfgRead(pci.RegBAR0+4, 4), "no MSI-X BAR")
	require.Equal(t, uint64(32), e.tr.BARs()[BARLegacy].Size, "pow2ceil(20+8)")
	// Vectors cannot be assigned.
	e.setCommon(CommonMSIXConfig, 2, 0)
	require.Equal(t, uint64(NoVector), e.common(CommonMSIXConfig, 2))

	e2 := newEnv(t, legacyOnly, vectors(0))
	require.Equal(t, uint64(0), e2.cfgRead(pci.RegCapPtr, 1))
	require.Equal(t, uint64(0), e2.cfgRead(pci.RegStatus, 2)&pci.StatusCapList, "no capabilities at all")
}

func TestLegacyBARSize(t *testing.T) {
	mem, err := newMem()
	require.NoError(t, err)
	for _, c := range []struct {
		cfg, vectors int
		size         uint64
	}{{8, 4, 32}, {8, 0, 32}, {10, 4, 64}, {10, 0, 32}, {24, 4, 64}, {0, 0, 32}, {232, 3, 256}} {
		d := newFakeDev()
		tr, err := New(noSizer{d}, mem, Options{Vectors: c.vectors, ConfigSize: c.cfg})
		require.NoError(t, err)
		require.Equal(t, c.size, tr.BARs()[BARLegacy].Size, "config %d vectors %d", c.cfg, c.vectors)
		require.NoError(t, tr.Close())
	}
	_, err = New(noSizer{newFakeDev()}, mem, Options{ConfigSize: 233})
	require.ErrorIs(t, err, ErrOptions)
	tr, err := New(noSizer{newFakeDev()}, mem, Options{ConfigSize: 233, DisableLegacy: true})
	require.NoError(t, err)
	require.NoError(t, tr.Close())
}

func TestMSIXBARLayout(t *testing.T) {
	for _, c := range []struct {
		n               int
		bar, pba, pbaSz uint64
	}{{1, 4096, 0x800, 8}, {4, 4096, 0x800, 8}, {128, 4096, 0x800, 16}, {129, 4096, 129 * 16, 24}, {255, 8192, 255 * 16, 32}, {2048, 65536, 32768, 256}} {
		bar, pba, sz := msixLayout(c.n)
		require.Equal(t, []uint64{c.bar, c.pba, c.pbaSz}, []uint64{bar, pba, sz}, "%d vectors", c.n)
	}
}

func TestOptionErrors(t *testing.T) {
	mem, err := newMem()
	require.NoError(t, err)
	for name, o := range map[string]Options{
		"neither interface": {DisableLegacy: true, DisableModern: true},
		"too many vectors":  {Vectors: MaxVectors + 1},
		"negative vectors":  {Vectors: -1},
	} {
		_, err := New(newFakeDev(), mem, o)
		require.ErrorIs(t, err, ErrOptions, name)
	}
	_, err = New(nil, mem, Options{})
	require.ErrorIs(t, err, ErrOptions)
	_, err = New(newFakeDev(), nil, Options{})
	require.ErrorIs(t, err, ErrOptions)

	// A vsock device has no transitional ID: QEMU makes it modern-only.
	d := newFakeDev()
	d.typ = virtio.DeviceTypeVsock
	_, err = New(d, mem, Options{})
	require.ErrorIs(t, err, ErrOptions)
	tr, err := New(d, mem, Options{DisableLegacy: true})
	require.NoError(t, err)
	var id [4]byte
	tr.ConfigRead(0, id[:])
	require.Equal(t, uint32(0x10531AF4), binary.LittleEndian.Uint32(id[:]))
	tr.ConfigRead(pci.RegRevision, id[:])
	require.Equal(t, uint32(ClassCommOther<<8|1), binary.LittleEndian.Uint32(id[:]))
	require.NoError(t, tr.Close())
	require.NoError(t, tr.Close(), "Close twice")
}

func TestClassOverrideAndTypes(t *testing.T) {
	mem, err := newMem()
	require.NoError(t, err)
	for typ, class := range map[virtio.DeviceType]uint32{
		virtio.DeviceTypeBlock: 0x010000, virtio.DeviceTypeEntropy: 0x00FF00, virtio.DeviceTypeConsole: 0x078000,
		virtio.DeviceType9P: 0x000200, virtio.DeviceTypeBalloon: 0x00FF00,
	} {
		d := newFakeDev()
		d.typ = typ
		tr, err := New(d, mem, Options{})
		require.NoError(t, err)
		var b [4]byte
		tr.ConfigRead(pci.RegRevision, b[:])
		require.Equal(t, class<<8, binary.LittleEndian.Uint32(b[:]), "%v", typ)
		tr.ConfigRead(pci.RegSubsystemID, b[:2])
		require.Equal(t, uint16(typ), binary.LittleEndian.Uint16(b[:]))
		require.NoError(t, tr.Close())
	}
	tr, err := New(newFakeDev(), mem, Options{Class: 0x028000})
	require.NoError(t, err)
	var b [4]byte
	tr.ConfigRead(pci.RegRevision, b[:])
	require.Equal(t, uint32(0x02800000), binary.LittleEndian.Uint32(b[:]))
	require.NoError(t, tr.Close())
}
