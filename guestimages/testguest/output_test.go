package testguest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseOutputQEMUSample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "qemu-virtio-net.txt"))
	require.NoError(t, err)
	out, err := ParseOutput(data)
	require.NoError(t, err)

	require.True(t, out.Started)
	require.True(t, out.Done)
	require.False(t, out.Halted)
	require.Equal(t, &StartInfo{
		Addr: 0x21e0, Magic: 0x336ec578, Version: 1, CmdlinePaddr: 0x11c0,
		RSDPPaddr: 0xf59d0, MemmapPaddr: 0x5a8, MemmapEntries: 7,
	}, out.StartInfo)
	require.Equal(t, "x=1 foo=bar flag", out.Cmdline)
	require.Equal(t, []Option{{"x", "1"}, {"foo", "bar"}, {"flag", ""}}, out.Options)
	v, ok := out.Option("foo")
	require.True(t, ok)
	require.Equal(t, "bar", v)
	_, ok = out.Option("nope")
	require.False(t, ok)

	require.Len(t, out.Memmap, 7)
	require.Equal(t, MemmapEntry{Index: 3, Addr: 0x100000, Size: 0x7ee0000, Type: 1}, out.Memmap[3])

	require.Len(t, out.PCI, 6)
	require.Equal(t, 6, out.ScannedFunctions)
	require.Equal(t, int64(2310), out.ElapsedMicros)
	isa := out.Function(0, 1, 0)
	require.NotNil(t, isa)
	require.True(t, isa.Multifunction)
	require.Equal(t, "00:01.0", isa.BDF())

	vga := out.Device(0x1234, 0x1111)
	require.NotNil(t, vga)
	require.Equal(t, BAR{Kind: BARMem32, Prefetchable: true, Addr: 0xfd000000, Size: 16 << 20}, vga.BARs[0])
	require.Equal(t, BAR{Kind: BARMem32, Addr: 0xfebe0000, Size: 65536}, vga.ROM)
	require.Empty(t, vga.Caps)

	nic := out.Device(0x1af4, 0x1000)
	require.NotNil(t, nic)
	require.Equal(t, PCIFunction{
		Bus: 0, Dev: 3, Fn: 0, Vendor: 0x1af4, Device: 0x1000, Class: 0x020000,
		SubsysVendor: 0x1af4, SubsysID: 1, Command: 0x0103, IRQPin: 1, IRQLine: 11,
		BARs: [6]BAR{
			{Kind: BARIO, Addr: 0xc000, Size: 32},
			{Kind: BARMem32, Addr: 0xfebf1000, Size: 4096},
			{}, {},
			{Kind: BARMem64, Prefetchable: true, Addr: 0xfe000000, Size: 16384},
			{},
		},
		Caps: nic.Caps,
	}, *nic)
	require.Len(t, nic.Caps, 6)
	require.Equal(t, Capability{ID: 0x11, Offset: 0x98, Kind: "msix", Attrs: map[string]string{
		"size": "4", "enabled": "0", "masked": "0", "table": "bar1+0x0", "pba": "bar1+0x800",
	}}, nic.Caps[0])
	notify := nic.Caps[2]
	require.Equal(t, uint8(0x70), notify.Offset)
	for name, want := range map[string]uint64{"len": 0x14, "cfg_type": 2, "bar": 4, "offset": 0x3000, "length": 0x1000, "mult": 4} {
		got, ok := notify.Attr(name)
		require.True(t, ok, name)
		require.Equal(t, want, got, name)
	}
	_, ok = notify.Attr("missing")
	require.False(t, ok)
	require.Equal(t, nic.Cap(0x09), &nic.Caps[1])
	require.Nil(t, nic.Cap(0x05))
}

func TestParseOutputTrapAndFailures(t *testing.T) {
	out, err := ParseOutput([]byte("\nrscvm-testguest: start\n" +
		"start_info addr=0x0 unusable\n" +
		"cmdline \"\"\n" +
		"memprobe addr=0x100000000 result=ok\n" +
		"memprobe addr=0x800000000000 result=unmapped\n" +
		"trap vector=14 error=0x2 rip=0x100123 cs=0x8 rflags=0x10046 rsp=0x10ff00 cr2=0xdead000\n" +
		"rscvm-testguest: halted\n"))
	require.NoError(t, err)
	require.True(t, out.Started)
	require.False(t, out.Done)
	require.True(t, out.Halted)
	require.Nil(t, out.StartInfo)
	require.Equal(t, []string{"start_info addr=0x0 unusable"}, out.Failures)
	require.Equal(t, []Trap{{Vector: 14, Error: 2, RIP: 0x100123, CR2: 0xdead000}}, out.Traps)
	require.Equal(t, -1, out.ScannedFunctions)
	require.Empty(t, out.Cmdline)
	require.Equal(t, []MemProbe{{0x100000000, "ok"}, {0x800000000000, "unmapped"}}, out.MemProbes)
}

func TestParseOutputIgnoresForeignLines(t *testing.T) {
	out, err := ParseOutput([]byte("SeaBIOS (version 1.16)\nBooting from ROM...\nrscvm-testguest: done\npoweroff failed\n"))
	require.NoError(t, err)
	require.True(t, out.Done)
	require.Equal(t, []string{"poweroff failed"}, out.Failures)
}

func TestParseOutputRejectsMalformed(t *testing.T) {
	for _, line := range []string{
		"pci 00:03.0 vendor=zzzz device=1000 rev=00 class=020000 hdr=00 mf=0 subsys=1af4:0001 cmd=0 pin=1 line=11",
		"pci 00:03 vendor=1af4",
		"pci 00:20.0 vendor=1af4 device=1000 rev=00 class=020000 hdr=00 mf=0 subsys=1af4:0001 cmd=0 pin=1 line=11",
		"pci 00:03.0 vendor=1af4 device=1000 rev=00 class=020000 hdr=00 mf=0 subsys=1af40001 cmd=0 pin=1 line=11",
		"pci 00:03.0 vendor=1af4 device=1000 rev=00 class=020000 hdr=00 mf=0 subsys=1af4:0001 cmd=0 pin=1 line=11 bar0=rom:0/1",
		"pci 00:03.0 vendor=1af4 device=1000 rev=00 class=020000 hdr=00 mf=0 subsys=1af4:0001 cmd=0 pin=1 line=11 bar0=io:c000",
		"caps 00:05.0 09@40",
		"memmap x addr=0x0 size=0x0 type=1",
		"memmap 0 addr=0x0 size=0x0",
		"start_info addr=0x6000 magic=336ec578",
		"cmdline x=1",
		"opt =1",
		"pciscan bus=00",
		"trap vector=14",
		"elapsed us=-1",
		"memprobe addr=0x1000 result=maybe",
		"memprobe result=ok",
	} {
		_, err := ParseOutput([]byte(line + "\n"))
		require.ErrorIs(t, err, ErrMalformed, line)
	}

	base := "pci 00:03.0 vendor=1af4 device=1000 rev=00 class=020000 hdr=00 mf=0 subsys=1af4:0001 cmd=0 pin=1 line=11\n"
	for _, caps := range []string{
		"caps 00:03.0 0940",
		"caps 00:03.0 09@40(len=0x10",
		"caps 00:03.0 09@400",
		"caps 00:03.0 09@40(a b)",
	} {
		_, err := ParseOutput([]byte(base + caps + "\n"))
		require.ErrorIs(t, err, ErrMalformed, caps)
	}
}

func TestParseOutputLongLine(t *testing.T) {
	_, err := ParseOutput([]byte("opt x=" + strings.Repeat("a", maxLine+1) + "\n"))
	require.ErrorIs(t, err, ErrMalformed)
}

func FuzzParseOutput(f *testing.F) {
	sample, err := os.ReadFile(filepath.Join("testdata", "qemu-virtio-net.txt"))
	require.NoError(f, err)
	f.Add(sample)
	f.Add([]byte("rscvm-testguest: start\ntrap vector=13 error=0x0 rip=0x1 cs=0x8 rflags=0x2 rsp=0x0 cr2=0x0\n"))
	f.Add([]byte("pci 00:00.0 vendor=8086 device=1237 rev=02 class=060000 hdr=00 mf=0 subsys=0:0 cmd=0 pin=0 line=0\ncaps 00:00.0 05@40(msi ctrl=0x0080) 10@50\n"))
	f.Add([]byte("cmdline \"a=\"b\" c\" truncated\r\nopt a=\"b\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ParseOutput(data)
		require.NotNil(t, out)
		if err != nil {
			return
		}
		for i := range out.PCI {
			fn := &out.PCI[i]
			require.LessOrEqual(t, fn.Dev, uint8(31))
			require.LessOrEqual(t, fn.Fn, uint8(7))
			got := out.Function(fn.Bus, fn.Dev, fn.Fn)
			require.NotNil(t, got)
			require.Equal(t, fn.BDF(), got.BDF())
		}
	})
}
