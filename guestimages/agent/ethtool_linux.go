package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Layouts from include/uapi/linux/ethtool.h.
const (
	ethSSFeatures = 4  // ETH_SS_FEATURES
	ethGStringLen = 32 // ETH_GSTRING_LEN
	// ETHTOOL_GFLAGS bit for large receive offload
	ethFlagLRO = 1 << 15
	// ETHTOOL_SFEATURES result bits
	ethtoolFWish   = 1 << 1
	ethtoolFCompat = 1 << 2
	// maxFeatureStrings bounds the string count the kernel may report.
	maxFeatureStrings = 4096
)

// ifreqData is struct ifreq with ifr_data: a 16-byte name and a pointer,
// padded to the kernel's 40 bytes.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool issues SIOCETHTOOL on iface with the command buffer buf (which
// starts with the u32 command) and returns the ioctl's non-negative result.
func ethtool(fd int, iface string, buf []byte) (int, error) {
	if len(iface) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", iface)
	}
	if len(buf) < 4 {
		return 0, errors.New("ethtool buffer too short")
	}
	var ifr ifreqData
	copy(ifr.name[:], iface)
	ifr.data = unsafe.Pointer(&buf[0])
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(buf)
	runtime.KeepAlive(&ifr)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// ethtoolSocket opens the datagram socket that network ioctls go through.
func ethtoolSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}

// featureNames returns the ETH_SS_FEATURES strings of iface, indexed by
// feature bit.
func featureNames(fd int, iface string) ([]string, error) {
	// struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[]; }
	info := make([]byte, 16+4)
	binary.NativeEndian.PutUint32(info[0:], unix.ETHTOOL_GSSET_INFO)
	binary.NativeEndian.PutUint64(info[8:], 1<<ethSSFeatures)
	if _, err := ethtool(fd, iface, info); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %w", err)
	}
	if binary.NativeEndian.Uint64(info[8:])&(1<<ethSSFeatures) == 0 {
		return nil, errors.New("ETHTOOL_GSSET_INFO: no feature strings")
	}
	count := binary.NativeEndian.Uint32(info[16:])
	if count == 0 || count > maxFeatureStrings {
		return nil, fmt.Errorf("ETHTOOL_GSSET_INFO: %d feature strings", count)
	}
	// struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[]; }
	gs := make([]byte, 12+int(count)*ethGStringLen)
	binary.NativeEndian.PutUint32(gs[0:], unix.ETHTOOL_GSTRINGS)
	binary.NativeEndian.PutUint32(gs[4:], ethSSFeatures)
	binary.NativeEndian.PutUint32(gs[8:], count)
	if _, err := ethtool(fd, iface, gs); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GSTRINGS: %w", err)
	}
	return parseGStrings(gs[12:], binary.NativeEndian.Uint32(gs[8:]), count), nil
}

// parseGStrings splits n (at most max) NUL-padded 32-byte strings.
func parseGStrings(data []byte, n, max uint32) []string {
	if n > max {
		n = max
	}
	if int(n) > len(data)/ethGStringLen {
		n = uint32(len(data) / ethGStringLen)
	}
	names := make([]string, n)
	for i := range names {
		s := data[i*ethGStringLen : (i+1)*ethGStringLen]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		names[i] = string(s)
	}
	return names
}

// featureBlock is struct ethtool_get_features_block.
type featureBlock struct {
	available, requested, active, neverChanged uint32
}

// getFeatures returns the ETHTOOL_GFEATURES blocks for n feature bits.
func getFeatures(fd int, iface string, n int) ([]featureBlock, error) {
	blocks := (n + 31) / 32
	// struct ethtool_gfeatures { u32 cmd, size; struct ethtool_get_features_block features[]; }
	buf := make([]byte, 8+16*blocks)
	binary.NativeEndian.PutUint32(buf[0:], unix.ETHTOOL_GFEATURES)
	binary.NativeEndian.PutUint32(buf[4:], uint32(blocks))
	if _, err := ethtool(fd, iface, buf); err != nil {
		return nil, fmt.Errorf("ETHTOOL_GFEATURES: %w", err)
	}
	return parseFeatureBlocks(buf[8:], blocks), nil
}

func parseFeatureBlocks(b []byte, blocks int) []featureBlock {
	if blocks > len(b)/16 {
		blocks = len(b) / 16
	}
	out := make([]featureBlock, blocks)
	for i := range out {
		p := b[i*16:]
		out[i] = featureBlock{
			available:    binary.NativeEndian.Uint32(p[0:]),
			requested:    binary.NativeEndian.Uint32(p[4:]),
			active:       binary.NativeEndian.Uint32(p[8:]),
			neverChanged: binary.NativeEndian.Uint32(p[12:]),
		}
	}
	return out
}

// featureState is one named feature and its active state.
type featureState struct {
	Name string
	On   bool
}

// legacyOffloads are the aggregate states `ethtool -k` prints first, read
// through the legacy ethtool commands, in that order.
var legacyOffloads = []struct {
	name string
	cmd  uint32
	mask uint32 // 0: data != 0 means on
}{
	{"rx-checksumming", unix.ETHTOOL_GRXCSUM, 0},
	{"tx-checksumming", unix.ETHTOOL_GTXCSUM, 0},
	{"scatter-gather", unix.ETHTOOL_GSG, 0},
	{"tcp-segmentation-offload", unix.ETHTOOL_GTSO, 0},
	{"generic-segmentation-offload", unix.ETHTOOL_GGSO, 0},
	{"generic-receive-offload", unix.ETHTOOL_GGRO, 0},
	{"large-receive-offload", unix.ETHTOOL_GFLAGS, ethFlagLRO},
}

// offloads returns the legacy aggregate states followed by every named
// feature in kernel order.
func offloads(fd int, iface string) ([]featureState, error) {
	var out []featureState
	for _, l := range legacyOffloads {
		// struct ethtool_value { u32 cmd, data; }
		v := make([]byte, 8)
		binary.NativeEndian.PutUint32(v, l.cmd)
		if _, err := ethtool(fd, iface, v); err != nil {
			return nil, fmt.Errorf("ethtool %s: %w", l.name, err)
		}
		d := binary.NativeEndian.Uint32(v[4:])
		on := d != 0
		if l.mask != 0 {
			on = d&l.mask != 0
		}
		out = append(out, featureState{l.name, on})
	}
	names, err := featureNames(fd, iface)
	if err != nil {
		return nil, err
	}
	blocks, err := getFeatures(fd, iface, len(names))
	if err != nil {
		return nil, err
	}
	return append(out, namedStates(names, blocks)...), nil
}

// namedStates pairs feature names with their active bits, skipping unnamed bits.
func namedStates(names []string, blocks []featureBlock) []featureState {
	var out []featureState
	for i, n := range names {
		if n == "" || i/32 >= len(blocks) {
			continue
		}
		out = append(out, featureState{n, blocks[i/32].active&(1<<(i%32)) != 0})
	}
	return out
}

// setFeature changes one named feature with ETHTOOL_SFEATURES and checks
// that the kernel applied it.
func setFeature(fd int, iface, name string, on bool) error {
	names, err := featureNames(fd, iface)
	if err != nil {
		return err
	}
	bit := -1
	for i, n := range names {
		if n == name {
			bit = i
			break
		}
	}
	if bit < 0 {
		return fmt.Errorf("no feature %q on %s", name, iface)
	}
	blocks := (len(names) + 31) / 32
	// struct ethtool_sfeatures { u32 cmd, size; struct { u32 valid, requested; } features[]; }
	buf := make([]byte, 8+8*blocks)
	binary.NativeEndian.PutUint32(buf[0:], unix.ETHTOOL_SFEATURES)
	binary.NativeEndian.PutUint32(buf[4:], uint32(blocks))
	p := buf[8+8*(bit/32):]
	binary.NativeEndian.PutUint32(p[0:], 1<<(bit%32))
	if on {
		binary.NativeEndian.PutUint32(p[4:], 1<<(bit%32))
	}
	r, err := ethtool(fd, iface, buf)
	if err != nil {
		return fmt.Errorf("ETHTOOL_SFEATURES: %w", err)
	}
	fb, err := getFeatures(fd, iface, len(names))
	if err != nil {
		return err
	}
	if bit/32 >= len(fb) {
		return fmt.Errorf("ETHTOOL_GFEATURES: short reply")
	}
	b := fb[bit/32]
	got := b.active&(1<<(bit%32)) != 0
	if got != on {
		why := ""
		switch {
		case b.available&(1<<(bit%32)) == 0:
			why = " (fixed)"
		case r&ethtoolFWish != 0:
			why = " (requested, not applied: depends on another feature)"
		case r&ethtoolFCompat != 0:
			why = " (driver needs the legacy interface)"
		}
		return fmt.Errorf("%s is still %s%s", name, onOffWord(got), why)
	}
	return nil
}

func onOffWord(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
