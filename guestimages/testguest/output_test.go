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
	netSample, err := os.ReadFile(filepath.Join("testdata", "qemu-net.txt"))
	require.NoError(f, err)
	f.Add(netSample)
	f.Add([]byte("rxdata n=0 off=0 0001\nrxdata n=0 off=2 02\nrx n=0 len=3 bufs=1 flags=04 gso_type=01 hdr_len=0 gso_size=0 csum_start=2 csum_offset=0 num_buffers=1 sum=0\nrsc n=0 segs=2 dupacks=0\n"))
	smpSample, err := os.ReadFile(filepath.Join("testdata", "qemu-smp.txt"))
	require.NoError(f, err)
	f.Add(smpSample)
	f.Add([]byte("smp error madt entry at 44 type=0 bad length=4\nsmp madt cpus=2 apic_ids=0,1 addr=0xe0920 lapic=0xfee00000\nsmp bsp apic_id=0 apic_base=0xfee00900\nsmp cpu apic_id=1 timeout\nsmp done cpus=2 up=1\nsmp cpu apic_id=1 up\n"))
	f.Add([]byte("ctrl n=0 class=0 cmd=0 len=1 ack=timeout\nvirtio rings rx=0:256 tx=1:256 ctrl=2:64 hdr_len=12 event_idx=0\nvirtio error x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ParseOutput(data)
		require.NotNil(t, out)
		if err != nil {
			return
		}
		if n := out.Net; n != nil {
			for _, p := range n.Rx {
				require.LessOrEqual(t, len(p.Data), maxRxData)
			}
			if n.Queues != nil {
				require.LessOrEqual(t, len(n.Queues.Sizes), maxLine)
			}
		}
		if s := out.SMP; s != nil {
			require.Equal(t, s.MADTCPUs, len(s.APICIDs))
			require.LessOrEqual(t, len(s.APICIDs), maxSMPEntries)
			require.LessOrEqual(t, len(s.Up), maxSMPEntries)
			require.LessOrEqual(t, len(s.Timeouts), maxSMPEntries)
			require.LessOrEqual(t, len(s.Errors), maxSMPEntries)
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

func TestParseOutputNetSample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "qemu-net.txt"))
	require.NoError(t, err)
	out, err := ParseOutput(data)
	require.NoError(t, err)
	require.True(t, out.Done)
	n := out.Net
	require.NotNil(t, n)
	require.Empty(t, n.Errors)
	require.Equal(t, &VirtioDevice{Bus: 0, Dev: 2, Fn: 0, Vendor: 0x1af4, Device: 0x1000, Mode: "modern", Attrs: n.Device.Attrs}, n.Device)
	require.Equal(t, "bar4+0x3000", n.Device.Attrs["notify"])
	require.Equal(t, &Features{Offered: 0x2000010130bfffa7, Wanted: 0x20000001008799a7, Negotiated: 0x20000001008799a7, Status: 0x0b}, n.Features)
	require.True(t, n.Features.Has(61))
	require.False(t, n.Features.Has(22))
	require.False(t, n.Features.Has(64))
	require.Equal(t, &NetConfig{MAC: "52:54:00:12:34:56", Status: 1, MaxPairs: 65535, MTU: 65535}, n.Config)
	require.Equal(t, &Queues{Num: 3, Sizes: []uint16{256, 256, 64}}, n.Queues)
	require.Equal(t, &MSIX{TableSize: 4, Config: 0xffff, RX: 0xffff, TX: 0xffff, Ctrl: 0xffff}, n.MSIX)
	require.Equal(t, &Rings{RXSize: 256, TXSize: 256, CtrlIndex: 2, CtrlSize: 64, HdrLen: 12}, n.Rings)
	require.Equal(t, &Ready{Status: 0x0f, RxBufs: 256, BufSize: 4096, Descs: 1, Mode: "mrg", Heap: 1085440}, n.Ready)
	require.Len(t, n.Ctrl, 13)
	require.Equal(t, CtrlResult{N: 9, Class: 5, Cmd: 0, Len: 8, Ack: 1, UsedLen: 1}, n.Ctrl[9])
	require.Equal(t, []string{`ctrl unknown command "nosuch"`}, n.UnknownCtrl)
	require.Equal(t, []TxFrame{{N: 0, Len: 60, Sum: 0xad4b1f60}, {N: 1, Len: 60, Sum: 0x8c141a40}}, n.Tx)
	require.Equal(t, &TxEnd{Sent: 2, Done: 2, Reason: "count"}, n.TxEnd)
	require.Len(t, n.Rx, 5)
	for i, p := range n.Rx {
		require.Equal(t, uint32(i), p.N)
		require.Len(t, p.Data, int(p.Len), "rxdata of packet %d", i)
		require.Equal(t, p.Sum, FrameSum(p.Data), "sum of packet %d", i)
		require.Equal(t, uint16(1), p.NumBuffers)
	}
	require.Equal(t, &RxEnd{Packets: 5, Reason: "count"}, n.RxEnd)
	require.Equal(t, &VirtioDone{Status: 0x0f, Kicks: [3]uint32{1, 1, 13}}, n.Done)
	require.Equal(t, int64(73285), out.ElapsedMicros)
}

func TestParseOutputNetLines(t *testing.T) {
	out, err := ParseOutput([]byte(
		"virtio dev 00:04.0 id=1af4:1000 rev=00 mode=legacy io=0xc000 cmd=0107\n" +
			"virtio error rx n=3 used len=5000 outside [12,4096]\n" +
			"rx n=0 len=10054 bufs=3 flags=04 gso_type=01 hdr_len=0 gso_size=0 csum_start=10 csum_offset=0 num_buffers=3 sum=ddf90d6a\n" +
			"rsc n=0 segs=10 dupacks=0\n" +
			"ctrl n=0 class=0 cmd=0 len=1 ack=timeout\n" +
			"ctrl n=1 class=0 cmd=0 len=1 ack=none\n" +
			"ctrl n=2 class=0 cmd=0 len=1 ack=error\n" +
			"ctrl n=3 class=0 cmd=0 len=1 ack=255 used_len=0\n" +
			"virtio queues num=0 sizes=\n" +
			"txend sent=1 done=0 reason=timeout\n" +
			"rxend packets=1 reason=idle\n" +
			"virtio done status=4f reset=00 kicks=1,2,3\n"))
	require.NoError(t, err)
	n := out.Net
	require.Equal(t, "legacy", n.Device.Mode)
	require.Equal(t, uint8(4), n.Device.Dev)
	require.Equal(t, []string{"rx n=3 used len=5000 outside [12,4096]"}, n.Errors)
	require.Equal(t, &RSCInfo{Segments: 10}, n.Rx[0].RSC)
	require.Equal(t, uint8(4), n.Rx[0].Flags)
	require.Equal(t, []int{CtrlAckTimeout, CtrlAckNone, CtrlAckError, 255}, []int{n.Ctrl[0].Ack, n.Ctrl[1].Ack, n.Ctrl[2].Ack, n.Ctrl[3].Ack})
	require.Equal(t, &Queues{}, n.Queues)
	require.Equal(t, &TxEnd{Sent: 1, Reason: "timeout"}, n.TxEnd)
	require.Equal(t, &RxEnd{Packets: 1, Reason: "idle"}, n.RxEnd)
	require.Equal(t, &VirtioDone{Status: 0x4f, Kicks: [3]uint32{1, 2, 3}}, n.Done)
}

func TestParseOutputRejectsMalformedNet(t *testing.T) {
	for _, line := range []string{
		"virtio",
		"virtio nosuch x=1",
		"virtio dev 00:02.0 id=1af4 rev=00 mode=modern",
		"virtio dev 00:02.0 id=1af4:1000 rev=00 mode=weird",
		"virtio dev",
		"virtio features offered=0x1 offered_hi=0x0 wanted=0x1 negotiated=0x1",
		"virtio features offered=0xz offered_hi=0x0 wanted=0x1 negotiated=0x1 status=0b",
		"virtio config mac=52:54 status=0001 max_pairs=1 mtu=1 generation=0",
		"virtio queues num=3",
		"virtio queues num=3 sizes=256,x",
		"virtio msix table_size=4 enabled=2 config=ffff rx=ffff tx=ffff ctrl=ffff",
		"virtio rings rx=0 tx=1:256 ctrl=2:64 hdr_len=12 event_idx=0",
		"virtio done status=0f reset=00 kicks=1,2",
		"ready status=0f",
		"ctrl n=0 class=0 cmd=0 len=1 ack=maybe",
		"ctrl n=0 class=300 cmd=0 len=1 ack=0 used_len=1",
		"ctrl n=0 class=0 cmd=0 len=1 ack=0",
		"tx n=0 len=60 sum=1234",
		"tx n=0 len=60 ok",
		"txend sent=1 done=1",
		"rx n=0 len=60",
		"rsc n=0 segs=2 dupacks=0",
		"rxdata n=0 off=0 zz",
		"rxdata n=0 off=4 00",
		"rxdata n=0 00",
		"rxend packets=1",
	} {
		_, err := ParseOutput([]byte(line + "\n"))
		require.ErrorIs(t, err, ErrMalformed, line)
	}
	// An rsc line must follow the rx line of the same packet.
	_, err := ParseOutput([]byte("rx n=0 len=60 bufs=1 flags=04 gso_type=01 hdr_len=0 gso_size=0 csum_start=2 csum_offset=0 num_buffers=1 sum=0\nrsc n=1 segs=2 dupacks=0\n"))
	require.ErrorIs(t, err, ErrMalformed)
}

func TestFrameSum(t *testing.T) {
	require.Equal(t, uint32(0x811c9dc5), FrameSum(nil), "FNV-1a 32 offset basis")
	require.Equal(t, uint32(0xe40c292c), FrameSum([]byte("a")))
}
