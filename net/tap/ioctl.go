package tap

import (
	"bytes"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TUN ioctl request numbers (Linux <linux/if_tun.h>; identical on all little-endian 64-bit targets we build for).
const (
	reqTUNSETIFF       = 0x400454ca
	reqTUNGETIFF       = 0x800454d2
	reqTUNGETFEATURES  = 0x800454cf
	reqTUNSETOFFLOAD   = 0x400454d0
	reqTUNSETSNDBUF    = 0x400454d4
	reqTUNGETSNDBUF    = 0x800454d3
	reqTUNSETVNETHDRSZ = 0x400454d8
	reqTUNGETVNETHDRSZ = 0x800454d7
	reqTUNSETQUEUE     = 0x400454d9
	reqTUNGETDEVNETNS  = 0x54e3
)

// Interface flags used with TUNSETIFF / TUNGETIFF / TUNSETQUEUE (<linux/if_tun.h>).
const (
	flagTUN         = 0x0001
	flagTAP         = 0x0002
	flagMultiQueue  = 0x0100
	flagAttachQueue = 0x0200
	flagDetachQueue = 0x0400
	flagPersist     = 0x0800
	flagNoPI        = 0x1000
	flagVnetHdr     = 0x4000
)

// ifreq mirrors struct ifreq: a 16-byte name followed by a 24-byte union.
type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data [24]byte
}

func newIfreq(name string) ifreq {
	var r ifreq
	copy(r.name[:unix.IFNAMSIZ-1], name)
	return r
}

func (r *ifreq) ifName() string {
	if i := bytes.IndexByte(r.name[:], 0); i >= 0 {
		return string(r.name[:i])
	}
	return string(r.name[:])
}

func (r *ifreq) flags() uint16     { return *(*uint16)(unsafe.Pointer(&r.data[0])) }
func (r *ifreq) setFlags(f uint16) { *(*uint16)(unsafe.Pointer(&r.data[0])) = f }
func (r *ifreq) int32() int32      { return *(*int32)(unsafe.Pointer(&r.data[0])) }
func (r *ifreq) setInt32(v int32)  { *(*int32)(unsafe.Pointer(&r.data[0])) = v }

// ioctlPtr issues an ioctl whose argument is a pointer.
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// ioctlVal issues an ioctl whose argument is passed by value; it returns the ioctl's return value.
func ioctlVal(fd int, req uintptr, arg uintptr) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// ioctlSetInt passes a pointer to a C int.
func ioctlSetInt(fd int, req uintptr, v int32) error {
	return ioctlPtr(fd, req, unsafe.Pointer(&v))
}

// ioctlGetInt reads a C int through a pointer.
func ioctlGetInt(fd int, req uintptr) (int32, error) {
	var v int32
	err := ioctlPtr(fd, req, unsafe.Pointer(&v))
	return v, err
}
