// Package vhostuser serves a virtio device's datapath to a vhost-user
// frontend (QEMU, Cloud Hypervisor) over a Unix socket: the protocol of
// QEMU's docs/interop/vhost-user.rst, backend side.
//
// It is a second transport next to virtio/pci: the same virtio.Device (for
// rscvm, virtionet.Device with its TAP backend and RSC engine) runs on
// virtqueues that live in the frontend's guest memory, which the frontend
// shares as file descriptors (SET_MEM_TABLE or ADD_MEM_REG). Kicks arrive on
// the frontend's eventfds and used-buffer notifications go to its call
// eventfds. The frontend keeps the PCI function, the configuration space and
// (for virtio-net) the control queue; the backend sees the data queues.
//
// Everything the frontend sends is checked: message sizes, ring indices,
// ring sizes and addresses (translated through the memory table and
// validated by the queue as any guest address is), region layout, and the
// number of file descriptors. A malformed message gets an error reply (or
// closes the connection when the stream cannot be trusted any more), never
// a crash.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Request is a frontend-to-backend message type.
type Request uint32

// Frontend requests (vhost-user.rst "Front-end message types").
const (
	ReqGetFeatures         Request = 1
	ReqSetFeatures         Request = 2
	ReqSetOwner            Request = 3
	ReqResetOwner          Request = 4
	ReqSetMemTable         Request = 5
	ReqSetLogBase          Request = 6
	ReqSetLogFD            Request = 7
	ReqSetVringNum         Request = 8
	ReqSetVringAddr        Request = 9
	ReqSetVringBase        Request = 10
	ReqGetVringBase        Request = 11
	ReqSetVringKick        Request = 12
	ReqSetVringCall        Request = 13
	ReqSetVringErr         Request = 14
	ReqGetProtocolFeatures Request = 15
	ReqSetProtocolFeatures Request = 16
	ReqGetQueueNum         Request = 17
	ReqSetVringEnable      Request = 18
	ReqSendRARP            Request = 19
	ReqNetSetMTU           Request = 20
	ReqSetBackendReqFD     Request = 21
	ReqIOTLBMsg            Request = 22
	ReqSetVringEndian      Request = 23
	ReqGetConfig           Request = 24
	ReqSetConfig           Request = 25
	ReqGetInflightFD       Request = 31
	ReqSetInflightFD       Request = 32
	ReqResetDevice         Request = 34
	ReqVringKick           Request = 35
	ReqGetMaxMemSlots      Request = 36
	ReqAddMemReg           Request = 37
	ReqRemMemReg           Request = 38
	ReqSetStatus           Request = 39
	ReqGetStatus           Request = 40
)

var requestNames = map[Request]string{
	ReqGetFeatures: "GET_FEATURES", ReqSetFeatures: "SET_FEATURES", ReqSetOwner: "SET_OWNER",
	ReqResetOwner: "RESET_OWNER", ReqSetMemTable: "SET_MEM_TABLE", ReqSetLogBase: "SET_LOG_BASE",
	ReqSetLogFD: "SET_LOG_FD", ReqSetVringNum: "SET_VRING_NUM", ReqSetVringAddr: "SET_VRING_ADDR",
	ReqSetVringBase: "SET_VRING_BASE", ReqGetVringBase: "GET_VRING_BASE", ReqSetVringKick: "SET_VRING_KICK",
	ReqSetVringCall: "SET_VRING_CALL", ReqSetVringErr: "SET_VRING_ERR",
	ReqGetProtocolFeatures: "GET_PROTOCOL_FEATURES", ReqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	ReqGetQueueNum: "GET_QUEUE_NUM", ReqSetVringEnable: "SET_VRING_ENABLE", ReqSendRARP: "SEND_RARP",
	ReqNetSetMTU: "NET_SET_MTU", ReqSetBackendReqFD: "SET_BACKEND_REQ_FD", ReqIOTLBMsg: "IOTLB_MSG",
	ReqSetVringEndian: "SET_VRING_ENDIAN", ReqGetConfig: "GET_CONFIG", ReqSetConfig: "SET_CONFIG",
	ReqGetInflightFD: "GET_INFLIGHT_FD", ReqSetInflightFD: "SET_INFLIGHT_FD", ReqResetDevice: "RESET_DEVICE",
	ReqVringKick: "VRING_KICK", ReqGetMaxMemSlots: "GET_MAX_MEM_SLOTS", ReqAddMemReg: "ADD_MEM_REG",
	ReqRemMemReg: "REM_MEM_REG", ReqSetStatus: "SET_STATUS", ReqGetStatus: "GET_STATUS",
}

func (r Request) String() string {
	if s, ok := requestNames[r]; ok {
		return s
	}
	return fmt.Sprintf("REQUEST_%d", uint32(r))
}

// Protocol feature bits (GET/SET_PROTOCOL_FEATURES).
const (
	ProtocolMQ                = 0
	ProtocolLogSHMFD          = 1
	ProtocolRARP              = 2
	ProtocolReplyAck          = 3
	ProtocolMTU               = 4
	ProtocolBackendReq        = 5
	ProtocolCrossEndian       = 6
	ProtocolConfig            = 9
	ProtocolInflightSHMFD     = 12
	ProtocolResetDevice       = 13
	ProtocolInbandNotify      = 14
	ProtocolConfigureMemSlots = 15
	ProtocolStatus            = 16
)

// FeatureProtocolFeatures is VHOST_USER_F_PROTOCOL_FEATURES, a virtio
// feature bit the backend offers to say it speaks GET/SET_PROTOCOL_FEATURES.
// With it negotiated rings start disabled (SET_VRING_ENABLE enables them).
const FeatureProtocolFeatures = 30

// Header flags.
const (
	flagVersionMask = 0x3
	version         = 0x1
	flagReply       = 1 << 2
	flagNeedReply   = 1 << 3
)

// Sizes and limits.
const (
	HeaderSize = 12
	// MaxPayload bounds a message body. The largest one rscvm accepts is
	// GET/SET_CONFIG (12 + 256 bytes); SET_MEM_TABLE with MaxRegions
	// regions is 8 + 8*32.
	MaxPayload = 4096
	// MaxFDs is the most descriptors one message carries
	// (VHOST_MEMORY_BASELINE_NREGIONS).
	MaxFDs = 8
	// MaxRegions is the most regions SET_MEM_TABLE may list.
	MaxRegions = 8
	// MaxMemSlots is what GET_MAX_MEM_SLOTS answers: the most regions
	// ADD_MEM_REG may build up.
	MaxMemSlots = 32
	// MaxConfigSize bounds GET/SET_CONFIG (VHOST_USER_MAX_CONFIG_SIZE).
	MaxConfigSize = 256

	regionSize     = 32
	vringAddrSize  = 40
	vringStateSize = 8
	u64Size        = 8
	configHdrSize  = 12
)

// SET_VRING_KICK/CALL/ERR payload bits.
const (
	vringIndexMask = 0xFF
	vringNoFD      = 1 << 8
)

// SET_VRING_ADDR flags.
const vringFLog = 1 << 0

var le = binary.LittleEndian

// Errors for malformed messages. Each reply-carrying error wraps one.
var (
	ErrShortPayload = errors.New("vhost-user: payload too short for the request")
	ErrBadHeader    = errors.New("vhost-user: bad message header")
	ErrRingIndex    = errors.New("vhost-user: ring index out of range")
	ErrFDs          = errors.New("vhost-user: wrong number of file descriptors")
	ErrRegion       = errors.New("vhost-user: invalid memory region")
	ErrNotSupported = errors.New("vhost-user: request not supported")
	ErrState        = errors.New("vhost-user: request not valid in the current state")
)

// Header is a message header: request, flags, payload size (all
// little-endian u32).
type Header []byte

// Request is the message type.
func (h Header) Request() Request { return Request(le.Uint32(h[0:4])) }

// Flags are the header flags.
func (h Header) Flags() uint32 { return le.Uint32(h[4:8]) }

// Size is the payload size.
func (h Header) Size() uint32 { return le.Uint32(h[8:12]) }

// NeedReply reports whether the frontend asked for a REPLY_ACK.
func (h Header) NeedReply() bool { return h.Flags()&flagNeedReply != 0 }

// Check validates version, direction and size.
func (h Header) Check() error {
	if len(h) < HeaderSize {
		return fmt.Errorf("%w: %d bytes", ErrBadHeader, len(h))
	}
	if f := h.Flags(); f&flagVersionMask != version || f&flagReply != 0 {
		return fmt.Errorf("%w: flags %#x (want version 1, not a reply)", ErrBadHeader, f)
	}
	if n := h.Size(); n > MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes (at most %d)", ErrBadHeader, n, MaxPayload)
	}
	return nil
}

// putHeader encodes a reply header.
func putHeader(b []byte, req Request, size int) {
	le.PutUint32(b[0:4], uint32(req))
	le.PutUint32(b[4:8], version|flagReply)
	le.PutUint32(b[8:12], uint32(size))
}

// VringState is struct vhost_vring_state: ring index and a number (size,
// base or enable flag).
type VringState []byte

// Index is the ring index.
func (s VringState) Index() uint32 { return le.Uint32(s[0:4]) }

// Num is the value.
func (s VringState) Num() uint32 { return le.Uint32(s[4:8]) }

// VringAddr is struct vhost_vring_addr; the ring addresses are frontend
// virtual addresses (translated through the memory table).
type VringAddr []byte

// Index is the ring index.
func (a VringAddr) Index() uint32 { return le.Uint32(a[0:4]) }

// Flags are the ring flags (bit 0: log writes).
func (a VringAddr) Flags() uint32 { return le.Uint32(a[4:8]) }

// Desc is the descriptor table's address.
func (a VringAddr) Desc() uint64 { return le.Uint64(a[8:16]) }

// Used is the used ring's address.
func (a VringAddr) Used() uint64 { return le.Uint64(a[16:24]) }

// Avail is the available ring's address.
func (a VringAddr) Avail() uint64 { return le.Uint64(a[24:32]) }

// Log is the used ring's guest-physical address for dirty logging.
func (a VringAddr) Log() uint64 { return le.Uint64(a[32:40]) }

// MemRegion is struct vhost_user_memory_region.
type MemRegion []byte

// GPA is the region's guest-physical address.
func (r MemRegion) GPA() uint64 { return le.Uint64(r[0:8]) }

// Size is the region's size in bytes.
func (r MemRegion) Size() uint64 { return le.Uint64(r[8:16]) }

// UserAddr is the region's address in the frontend's address space.
func (r MemRegion) UserAddr() uint64 { return le.Uint64(r[16:24]) }

// MmapOffset is the offset of the region in its file descriptor.
func (r MemRegion) MmapOffset() uint64 { return le.Uint64(r[24:32]) }

// MemTable is SET_MEM_TABLE's payload: a region count, padding, regions.
type MemTable []byte

// NumRegions is the number of regions the table claims.
func (t MemTable) NumRegions() uint32 { return le.Uint32(t[0:4]) }

// Region returns region i; the caller checks i against a validated count.
func (t MemTable) Region(i int) MemRegion { return MemRegion(t[8+i*regionSize : 8+(i+1)*regionSize]) }

// needBytes checks that req's payload has at least n bytes.
func needBytes(req Request, p []byte, n int) error {
	if len(p) < n {
		return fmt.Errorf("%v: %w (%d bytes, want %d)", req, ErrShortPayload, len(p), n)
	}
	return nil
}

// parseMemTable checks the table's length against its region count.
func parseMemTable(p []byte) (MemTable, int, error) {
	if err := needBytes(ReqSetMemTable, p, 8); err != nil {
		return nil, 0, err
	}
	t := MemTable(p)
	n := t.NumRegions()
	if n == 0 || n > MaxRegions {
		return nil, 0, fmt.Errorf("SET_MEM_TABLE: %d regions (1 to %d): %w", n, MaxRegions, ErrRegion)
	}
	if err := needBytes(ReqSetMemTable, p, 8+int(n)*regionSize); err != nil {
		return nil, 0, fmt.Errorf("%w: %d regions", err, n)
	}
	return t, int(n), nil
}

// parseSingleRegion reads ADD_MEM_REG/REM_MEM_REG's payload: 8 bytes of
// padding and one region.
func parseSingleRegion(req Request, p []byte) (MemRegion, error) {
	if err := needBytes(req, p, 8+regionSize); err != nil {
		return nil, err
	}
	return MemRegion(p[8 : 8+regionSize]), nil
}

// ConfigMsg is struct vhost_user_config: offset, size, flags, payload.
type ConfigMsg []byte

// Offset is the offset into the device's configuration space.
func (c ConfigMsg) Offset() uint32 { return le.Uint32(c[0:4]) }

// Size is the number of configuration bytes.
func (c ConfigMsg) Size() uint32 { return le.Uint32(c[4:8]) }

// Flags are the message flags (bit 0: live migration).
func (c ConfigMsg) Flags() uint32 { return le.Uint32(c[8:12]) }

// parseConfig checks the size fields against the payload.
func parseConfig(req Request, p []byte) (ConfigMsg, error) {
	if err := needBytes(req, p, configHdrSize); err != nil {
		return nil, err
	}
	c := ConfigMsg(p)
	if c.Size() > MaxConfigSize || uint64(c.Offset())+uint64(c.Size()) > MaxConfigSize {
		return nil, fmt.Errorf("%v: offset %d size %d outside the %d-byte config space: %w", req, c.Offset(), c.Size(), MaxConfigSize, ErrShortPayload)
	}
	if err := needBytes(req, p, configHdrSize+int(c.Size())); err != nil {
		return nil, err
	}
	return c, nil
}

// payloadU64 reads a u64 payload.
func payloadU64(req Request, p []byte) (uint64, error) {
	if err := needBytes(req, p, u64Size); err != nil {
		return 0, err
	}
	return le.Uint64(p[:u64Size]), nil
}

// payloadState reads a vring state payload.
func payloadState(req Request, p []byte) (VringState, error) {
	if err := needBytes(req, p, vringStateSize); err != nil {
		return nil, err
	}
	return VringState(p[:vringStateSize]), nil
}

// payloadAddr reads a vring address payload.
func payloadAddr(req Request, p []byte) (VringAddr, error) {
	if err := needBytes(req, p, vringAddrSize); err != nil {
		return nil, err
	}
	return VringAddr(p[:vringAddrSize]), nil
}
