package pcap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Header is the decoded global header of a capture file.
type Header struct {
	// BigEndian is the byte order the file was written in.
	BigEndian bool
	// Nanosecond is true for nanosecond timestamps (magic 0xa1b23c4d).
	Nanosecond bool
	// VersionMajor and VersionMinor are the format version (normally 2.4).
	VersionMajor, VersionMinor uint16
	// ThisZone is the obsolete GMT offset field (normally 0; ignored).
	ThisZone int32
	// SnapLen is the snapshot length: no record holds more bytes. 0 means
	// unspecified (records are then bounded by MaxCapLen only).
	SnapLen uint32
	// LinkType is the link-layer header type of every record.
	LinkType LinkType
	// FCSLen is the number of frame-check-sequence bytes at the end of each
	// packet when the link-type field says so (its F bit), else 0.
	FCSLen int
}

// Reader reads records from a classic pcap file. It is not safe for
// concurrent use.
type Reader struct {
	r    io.Reader
	hdr  Header
	buf  []byte
	rh   [RecordHeaderSize]byte
	n    int   // records read
	off  int64 // offset of the next record header
	err  error // sticky
	unit int64 // nanoseconds per timestamp fraction unit
	frac uint32
}

// NewReader reads and validates the file header from r. Unless r is
// already a *bufio.Reader it is wrapped in one.
func NewReader(r io.Reader) (*Reader, error) {
	if _, ok := r.(*bufio.Reader); !ok {
		r = bufio.NewReaderSize(r, 64<<10)
	}
	rd := &Reader{r: r, off: FileHeaderSize}
	var b [FileHeaderSize]byte
	if n, err := io.ReadFull(r, b[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, &FormatError{Msg: "empty file, want a 24-byte pcap file header", Err: ErrTruncated}
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &FormatError{Msg: fmt.Sprintf("file ends after %d of 24 header bytes", n), Err: ErrTruncated}
		}
		return nil, &FormatError{Msg: "reading: " + err.Error(), Err: err}
	}
	h := &rd.hdr
	switch m := binary.LittleEndian.Uint32(b[0:4]); {
	case m == MagicMicroseconds:
	case m == MagicNanoseconds:
		h.Nanosecond = true
	case binary.BigEndian.Uint32(b[0:4]) == MagicMicroseconds:
		h.BigEndian = true
	case binary.BigEndian.Uint32(b[0:4]) == MagicNanoseconds:
		h.BigEndian, h.Nanosecond = true, true
	case m == magicPcapng:
		return nil, &FormatError{Msg: "this is a pcapng file, only classic pcap is supported (convert it: tcpdump -r IN -w OUT.pcap, or editcap -F pcap IN OUT.pcap)", Err: ErrNotPcap}
	default:
		return nil, &FormatError{Msg: fmt.Sprintf("bad magic number %#08x (want %#08x or %#08x in either byte order)", m, MagicMicroseconds, MagicNanoseconds), Err: ErrNotPcap}
	}
	u16, u32 := binary.LittleEndian.Uint16, binary.LittleEndian.Uint32
	if h.BigEndian {
		u16, u32 = binary.BigEndian.Uint16, binary.BigEndian.Uint32
	}
	h.VersionMajor, h.VersionMinor = u16(b[4:6]), u16(b[6:8])
	h.ThisZone = int32(u32(b[8:12]))
	h.SnapLen = u32(b[16:20])
	lt := u32(b[20:24])
	h.LinkType = LinkType(lt)
	if lt&(1<<26) != 0 {
		h.FCSLen = int(lt>>28) * 2
	}
	if h.VersionMajor != VersionMajor {
		return nil, &FormatError{Msg: fmt.Sprintf("unsupported format version %d.%d (want 2.x)", h.VersionMajor, h.VersionMinor), Err: ErrMalformed}
	}
	rd.unit, rd.frac = 1000, 1_000_000
	if h.Nanosecond {
		rd.unit, rd.frac = 1, 1_000_000_000
	}
	return rd, nil
}

// Header returns the file header.
func (r *Reader) Header() Header { return r.hdr }

// LinkType returns the link-layer header type of the records.
func (r *Reader) LinkType() LinkType { return r.hdr.LinkType }

// Records returns the number of records read so far.
func (r *Reader) Records() int { return r.n }

func (r *Reader) u32(b []byte) uint32 {
	if r.hdr.BigEndian {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *Reader) fail(msg string, err error) error {
	r.err = &FormatError{Record: r.n + 1, Offset: r.off, Msg: msg, Err: err}
	return r.err
}

// Next returns the next record. Its Data aliases a buffer the Reader
// reuses: it is valid until the next call (use Packet.Clone to keep it).
// At the end of a well-formed file Next returns io.EOF; malformed or
// truncated input gives a *FormatError, and every later call returns the
// same error.
func (r *Reader) Next() (Packet, error) {
	if r.err != nil {
		return Packet{}, r.err
	}
	n, err := io.ReadFull(r.r, r.rh[:])
	switch {
	case err == nil:
	case n == 0 && errors.Is(err, io.EOF):
		r.err = io.EOF
		return Packet{}, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Packet{}, r.fail(fmt.Sprintf("file ends after %d of 16 record header bytes", n), ErrTruncated)
	default:
		return Packet{}, r.fail("reading record header: "+err.Error(), err)
	}
	sec, frac := r.u32(r.rh[0:4]), r.u32(r.rh[4:8])
	capLen, origLen := r.u32(r.rh[8:12]), r.u32(r.rh[12:16])
	switch {
	case capLen > MaxCapLen:
		return Packet{}, r.fail(fmt.Sprintf("captured length %d exceeds the maximum of %d", capLen, MaxCapLen), ErrMalformed)
	case r.hdr.SnapLen != 0 && capLen > r.hdr.SnapLen:
		return Packet{}, r.fail(fmt.Sprintf("captured length %d exceeds the snapshot length %d", capLen, r.hdr.SnapLen), ErrMalformed)
	case capLen > origLen:
		return Packet{}, r.fail(fmt.Sprintf("captured length %d exceeds the original length %d", capLen, origLen), ErrMalformed)
	case frac >= r.frac:
		unit := "microseconds"
		if r.hdr.Nanosecond {
			unit = "nanoseconds"
		}
		return Packet{}, r.fail(fmt.Sprintf("timestamp fraction %d is not below one second (%d %s)", frac, r.frac, unit), ErrMalformed)
	}
	if cap(r.buf) < int(capLen) {
		r.buf = make([]byte, min(max(int(capLen), 2*cap(r.buf), 2048), MaxCapLen))
	}
	data := r.buf[:capLen]
	if n, err := io.ReadFull(r.r, data); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Packet{}, r.fail(fmt.Sprintf("file ends after %d of %d captured bytes", n, capLen), ErrTruncated)
		}
		return Packet{}, r.fail("reading packet data: "+err.Error(), err)
	}
	r.n++
	r.off += RecordHeaderSize + int64(capLen)
	return Packet{
		Time:    time.Unix(int64(sec), int64(frac)*r.unit),
		Data:    data,
		OrigLen: int(origLen),
	}, nil
}

// ReadAll reads a whole capture from r, copying every packet.
func ReadAll(r io.Reader) (Header, []Packet, error) {
	rd, err := NewReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	var pkts []Packet
	for {
		p, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return rd.hdr, pkts, nil
		}
		if err != nil {
			return rd.hdr, pkts, err
		}
		pkts = append(pkts, p.Clone())
	}
}
