package header

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// virtio-net header sizes, flags and GSO types (virtio 1.x §5.1.6).
const (
	// VirtioNetHdrSize is the size of virtio_net_hdr_v1 / virtio_net_hdr_mrg_rxbuf.
	VirtioNetHdrSize = 12
	// VirtioNetHdrLegacySize is the size of the legacy virtio_net_hdr without
	// num_buffers (legacy device without VIRTIO_NET_F_MRG_RXBUF).
	VirtioNetHdrLegacySize = 10

	// VirtioNetHdrFNeedsCsum: csum_start/csum_offset describe a partial checksum.
	VirtioNetHdrFNeedsCsum = 1
	// VirtioNetHdrFDataValid: the device validated the checksum.
	VirtioNetHdrFDataValid = 2
	// VirtioNetHdrFRSCInfo: csum_start/csum_offset carry the coalesced segment
	// and duplicate ACK counts (VIRTIO_NET_F_RSC_EXT).
	VirtioNetHdrFRSCInfo = 4

	// GSO types.
	VirtioNetHdrGSONone  = 0
	VirtioNetHdrGSOTCPv4 = 1
	VirtioNetHdrGSOUDP   = 3
	VirtioNetHdrGSOTCPv6 = 4
	VirtioNetHdrGSOUDPL4 = 5
	// VirtioNetHdrGSOECN is ORed into the GSO type when ECN (CWR) is in use.
	VirtioNetHdrGSOECN = 0x80
)

// ErrShortBuffer is returned when a buffer is too small for a header.
var ErrShortBuffer = errors.New("header: buffer too short")

// VirtioNetHdr is a decoded virtio-net packet header. With RSC_INFO set,
// CsumStart holds the number of coalesced segments and CsumOffset the number
// of duplicate ACKs (the rsc.segments / rsc.dup_acks union of virtio_net_hdr_v1).
type VirtioNetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	NumBuffers uint16
}

// DecodeVirtioNetHdr decodes the 12-byte header from the start of b.
func DecodeVirtioNetHdr(b []byte) (VirtioNetHdr, error) {
	if len(b) < VirtioNetHdrSize {
		return VirtioNetHdr{}, ErrShortBuffer
	}
	h := decodeCommon(b)
	h.NumBuffers = binary.LittleEndian.Uint16(b[10:12])
	return h, nil
}

// DecodeVirtioNetHdrLegacy decodes the 10-byte legacy header; NumBuffers is 0.
func DecodeVirtioNetHdrLegacy(b []byte) (VirtioNetHdr, error) {
	if len(b) < VirtioNetHdrLegacySize {
		return VirtioNetHdr{}, ErrShortBuffer
	}
	return decodeCommon(b), nil
}

func decodeCommon(b []byte) VirtioNetHdr {
	return VirtioNetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:4]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:6]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:8]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:10]),
	}
}

// Encode writes the 12-byte header to the start of b.
func (h VirtioNetHdr) Encode(b []byte) error {
	if len(b) < VirtioNetHdrSize {
		return ErrShortBuffer
	}
	h.encodeCommon(b)
	binary.LittleEndian.PutUint16(b[10:12], h.NumBuffers)
	return nil
}

// EncodeLegacy writes the 10-byte legacy header (NumBuffers is not written).
func (h VirtioNetHdr) EncodeLegacy(b []byte) error {
	if len(b) < VirtioNetHdrLegacySize {
		return ErrShortBuffer
	}
	h.encodeCommon(b)
	return nil
}

func (h VirtioNetHdr) encodeCommon(b []byte) {
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:4], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:6], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:8], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:10], h.CsumOffset)
}

// AppendTo appends the 12-byte encoding of h to dst.
func (h VirtioNetHdr) AppendTo(dst []byte) []byte {
	var b [VirtioNetHdrSize]byte
	_ = h.Encode(b[:])
	return append(dst, b[:]...)
}

// IsGSO reports whether the header describes a GSO packet.
func (h VirtioNetHdr) IsGSO() bool { return h.GSOType&^VirtioNetHdrGSOECN != VirtioNetHdrGSONone }

// RSCInfo returns the coalesced segment and duplicate ACK counts and whether
// the RSC_INFO flag is set.
func (h VirtioNetHdr) RSCInfo() (segments, dupAcks uint16, ok bool) {
	if h.Flags&VirtioNetHdrFRSCInfo == 0 {
		return 0, 0, false
	}
	return h.CsumStart, h.CsumOffset, true
}

// SetRSCInfo sets RSC_INFO and stores the segment and duplicate ACK counts in
// the csum_start / csum_offset fields.
func (h *VirtioNetHdr) SetRSCInfo(segments, dupAcks uint16) {
	h.Flags |= VirtioNetHdrFRSCInfo
	h.CsumStart, h.CsumOffset = segments, dupAcks
}

// String formats the header for logs and test failures.
func (h VirtioNetHdr) String() string {
	return fmt.Sprintf("vnet{flags=%#x gso=%#x hdr_len=%d gso_size=%d csum_start=%d csum_offset=%d num_buffers=%d}",
		h.Flags, h.GSOType, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset, h.NumBuffers)
}
