package pcap

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// Writer writes a nanosecond-precision, little-endian pcap file with
// snapshot length MaxCapLen. It buffers: call Flush when done.
type Writer struct {
	w  *bufio.Writer
	rh [RecordHeaderSize]byte
}

// NewWriter writes the file header for link type lt to w.
func NewWriter(w io.Writer, lt LinkType) (*Writer, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var b [FileHeaderSize]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:4], MagicNanoseconds)
	le.PutUint16(b[4:6], VersionMajor)
	le.PutUint16(b[6:8], VersionMinor)
	le.PutUint32(b[16:20], MaxCapLen)
	le.PutUint32(b[20:24], uint32(lt))
	if _, err := bw.Write(b[:]); err != nil {
		return nil, fmt.Errorf("pcap: writing file header: %w", err)
	}
	return &Writer{w: bw}, nil
}

// WritePacket appends one record. Data longer than MaxCapLen is truncated
// (the record keeps the full original length); OrigLen 0 means len(Data).
// Timestamps must lie between 1970 and 2106 (the format's 32-bit seconds).
func (w *Writer) WritePacket(p Packet) error {
	sec := p.Time.Unix()
	if sec < 0 || sec > math.MaxUint32 {
		return fmt.Errorf("pcap: timestamp %v outside the pcap range 1970..2106", p.Time)
	}
	data := p.Data
	orig := max(p.OrigLen, len(data))
	if orig > math.MaxUint32 {
		return fmt.Errorf("pcap: packet length %d does not fit the format", orig)
	}
	if len(data) > MaxCapLen {
		data = data[:MaxCapLen]
	}
	le := binary.LittleEndian
	le.PutUint32(w.rh[0:4], uint32(sec))
	le.PutUint32(w.rh[4:8], uint32(p.Time.Nanosecond()))
	le.PutUint32(w.rh[8:12], uint32(len(data)))
	le.PutUint32(w.rh[12:16], uint32(orig))
	if _, err := w.w.Write(w.rh[:]); err != nil {
		return fmt.Errorf("pcap: writing record header: %w", err)
	}
	if _, err := w.w.Write(data); err != nil {
		return fmt.Errorf("pcap: writing packet data: %w", err)
	}
	return nil
}

// Flush writes buffered records to the underlying writer.
func (w *Writer) Flush() error {
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	return nil
}

// ReadFile reads a whole capture file. Errors name the file.
func ReadFile(path string) (Header, []Packet, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, nil, err
	}
	defer f.Close()
	h, pkts, err := ReadAll(f)
	if err != nil {
		return h, pkts, fmt.Errorf("%s: %w", path, err)
	}
	return h, pkts, nil
}

// WriteFile writes packets to a new capture file with link type lt.
func WriteFile(path string, lt LinkType, pkts []Packet) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w, err := NewWriter(f, lt)
	if err == nil {
		for _, p := range pkts {
			if err = w.WritePacket(p); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
