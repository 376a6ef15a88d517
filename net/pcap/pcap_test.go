package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// rawRecord is one record for buildFile.
type rawRecord struct {
	sec, frac, capLen, origLen uint32
	data                       []byte
}

// buildFile encodes a pcap file by hand in the given byte order and
// precision, independently of Writer.
func buildFile(big, nano bool, snap uint32, lt uint32, recs []rawRecord) []byte {
	var o binary.AppendByteOrder = binary.LittleEndian
	if big {
		o = binary.BigEndian
	}
	magic := uint32(MagicMicroseconds)
	if nano {
		magic = MagicNanoseconds
	}
	b := o.AppendUint32(nil, magic)
	b = o.AppendUint16(b, 2)
	b = o.AppendUint16(b, 4)
	b = o.AppendUint32(b, 0)
	b = o.AppendUint32(b, 0)
	b = o.AppendUint32(b, snap)
	b = o.AppendUint32(b, lt)
	for _, r := range recs {
		b = o.AppendUint32(b, r.sec)
		b = o.AppendUint32(b, r.frac)
		b = o.AppendUint32(b, r.capLen)
		b = o.AppendUint32(b, r.origLen)
		b = append(b, r.data...)
	}
	return b
}

func rec(sec, frac uint32, data []byte) rawRecord {
	return rawRecord{sec, frac, uint32(len(data)), uint32(len(data)), data}
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ seed
	}
	return b
}

func TestReadByteOrdersAndPrecisions(t *testing.T) {
	for _, big := range []bool{false, true} {
		for _, nano := range []bool{false, true} {
			frac := uint32(123456)
			wantNs := 123456000
			if nano {
				frac, wantNs = 123456789, 123456789
			}
			recs := []rawRecord{rec(1700000000, frac, payload(60, 1)), rec(1700000001, 0, payload(1514, 2)),
				{1700000002, 5, 100, 1514, payload(100, 3)}}
			f := buildFile(big, nano, 65535, 1, recs)
			rd, err := NewReader(bytes.NewReader(f))
			require.NoError(t, err)
			h := rd.Header()
			require.Equal(t, big, h.BigEndian)
			require.Equal(t, nano, h.Nanosecond)
			require.Equal(t, uint32(65535), h.SnapLen)
			require.Equal(t, LinkTypeEthernet, h.LinkType)
			require.Equal(t, uint16(2), h.VersionMajor)
			require.Equal(t, uint16(4), h.VersionMinor)
			require.Zero(t, h.FCSLen)

			p, err := rd.Next()
			require.NoError(t, err)
			require.Equal(t, time.Unix(1700000000, int64(wantNs)), p.Time)
			require.Equal(t, payload(60, 1), p.Data)
			require.Equal(t, 60, p.OrigLen)
			require.False(t, p.Truncated())
			p, err = rd.Next()
			require.NoError(t, err)
			require.Equal(t, payload(1514, 2), p.Data)
			p, err = rd.Next()
			require.NoError(t, err)
			require.Equal(t, 1514, p.OrigLen)
			require.True(t, p.Truncated())
			require.Len(t, p.Data, 100)
			unit := int64(1000)
			if nano {
				unit = 1
			}
			require.Equal(t, time.Unix(1700000002, 5*unit), p.Time)
			_, err = rd.Next()
			require.ErrorIs(t, err, io.EOF)
			_, err = rd.Next()
			require.ErrorIs(t, err, io.EOF, "EOF is sticky")
			require.Equal(t, 3, rd.Records())
		}
	}
}

func TestLinkTypeAndFCS(t *testing.T) {
	f := buildFile(false, false, 0, 113, nil)
	rd, err := NewReader(bytes.NewReader(f))
	require.NoError(t, err)
	require.Equal(t, LinkTypeLinuxSLL, rd.LinkType())
	require.Equal(t, "LINKTYPE_LINUX_SLL (113)", rd.LinkType().String())
	require.Equal(t, "LINKTYPE 4242", LinkType(4242).String())

	// F bit set, FCS length 2 (16-bit words) = 4 bytes.
	f = buildFile(true, false, 0, 1|1<<26|2<<28, nil)
	rd, err = NewReader(bytes.NewReader(f))
	require.NoError(t, err)
	require.Equal(t, LinkTypeEthernet, rd.LinkType())
	require.Equal(t, 4, rd.Header().FCSLen)
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, LinkTypeEthernet)
	require.NoError(t, err)
	base := time.Unix(1700000000, 999_999_999)
	var in []Packet
	for i := range 50 {
		p := Packet{Time: base.Add(time.Duration(i) * 1234567 * time.Nanosecond), Data: payload(14+i*37, byte(i))}
		if i == 7 {
			p.OrigLen = len(p.Data) + 1000
		}
		if i == 8 {
			p.Data = nil
		}
		in = append(in, p)
		require.NoError(t, w.WritePacket(p))
	}
	require.NoError(t, w.Flush())

	h, out, err := ReadAll(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.True(t, h.Nanosecond)
	require.False(t, h.BigEndian)
	require.Equal(t, uint32(MaxCapLen), h.SnapLen)
	require.Equal(t, LinkTypeEthernet, h.LinkType)
	require.Len(t, out, len(in))
	for i := range in {
		require.True(t, in[i].Time.Equal(out[i].Time), "record %d time", i)
		require.Equal(t, len(in[i].Data), len(out[i].Data), "record %d", i)
		if len(in[i].Data) > 0 {
			require.Equal(t, in[i].Data, out[i].Data, "record %d", i)
		}
		require.Equal(t, max(in[i].OrigLen, len(in[i].Data)), out[i].OrigLen, "record %d", i)
	}
}

func TestFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	in := []Packet{{Time: time.Unix(1, 2), Data: payload(70, 9)}}
	require.NoError(t, WriteFile(path, LinkTypeEthernet, in))
	_, out, err := ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, in[0].Data, out[0].Data)
	_, _, err = ReadFile(filepath.Join(t.TempDir(), "missing.pcap"))
	require.Error(t, err)
}

func TestWriterLimits(t *testing.T) {
	w, err := NewWriter(io.Discard, LinkTypeEthernet)
	require.NoError(t, err)
	require.Error(t, w.WritePacket(Packet{Time: time.Unix(-1, 0)}))
	require.Error(t, w.WritePacket(Packet{Time: time.Unix(1<<33, 0)}))

	// Oversized data is truncated to MaxCapLen, keeping the original length.
	var buf bytes.Buffer
	w, err = NewWriter(&buf, LinkTypeEthernet)
	require.NoError(t, err)
	require.NoError(t, w.WritePacket(Packet{Time: time.Unix(1, 0), Data: make([]byte, MaxCapLen+10)}))
	require.NoError(t, w.Flush())
	_, out, err := ReadAll(&buf)
	require.NoError(t, err)
	require.Len(t, out[0].Data, MaxCapLen)
	require.Equal(t, MaxCapLen+10, out[0].OrigLen)
}

// TestEveryTruncation cuts a valid file at every byte: each prefix either
// ends at a record boundary (clean EOF after the right number of records)
// or gives ErrTruncated naming the right record.
func TestEveryTruncation(t *testing.T) {
	for _, big := range []bool{false, true} {
		recs := []rawRecord{rec(10, 1, payload(20, 1)), rec(11, 2, nil), rec(12, 3, payload(33, 2))}
		full := buildFile(big, true, 0, 1, recs)
		bounds := map[int]int{24: 0, 24 + 16 + 20: 1, 24 + 16 + 20 + 16: 2, len(full): 3}
		for cut := 0; cut <= len(full); cut++ {
			rd, err := NewReader(bytes.NewReader(full[:cut]))
			if cut < FileHeaderSize {
				require.ErrorIs(t, err, ErrTruncated, "cut %d", cut)
				var fe *FormatError
				require.ErrorAs(t, err, &fe)
				require.Zero(t, fe.Record)
				require.Contains(t, err.Error(), "file header")
				continue
			}
			require.NoError(t, err, "cut %d", cut)
			n := 0
			for {
				_, err = rd.Next()
				if err != nil {
					break
				}
				n++
			}
			if want, ok := bounds[cut]; ok {
				require.ErrorIs(t, err, io.EOF, "cut %d", cut)
				require.Equal(t, want, n, "cut %d", cut)
				continue
			}
			require.ErrorIs(t, err, ErrTruncated, "cut %d", cut)
			var fe *FormatError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, n+1, fe.Record, "cut %d", cut)
			require.Contains(t, err.Error(), "record ")
			_, err2 := rd.Next()
			require.Equal(t, err, err2, "errors are sticky")
		}
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		file []byte
		want error
		msg  string
	}{
		{"bad magic", []byte("GIF89a-this-is-not-pcap-at-all"), ErrNotPcap, "bad magic"},
		{"pcapng", append([]byte{0x0a, 0x0d, 0x0d, 0x0a}, make([]byte, 28)...), ErrNotPcap, "pcapng"},
		{"version", func() []byte {
			b := buildFile(false, false, 0, 1, nil)
			b[4] = 3
			return b
		}(), ErrMalformed, "version 3.4"},
		{"caplen > snaplen", buildFile(false, false, 64, 1, []rawRecord{rec(0, 0, payload(65, 0))}), ErrMalformed, "snapshot length 64"},
		{"caplen > max", buildFile(true, false, 0, 1, []rawRecord{{0, 0, MaxCapLen + 1, MaxCapLen + 1, nil}}), ErrMalformed, "maximum"},
		{"caplen huge", buildFile(false, false, 0xffffffff, 1, []rawRecord{{0, 0, 0xffffffff, 0xffffffff, nil}}), ErrMalformed, "maximum"},
		{"caplen > origlen", buildFile(false, true, 0, 1, []rawRecord{{0, 0, 10, 9, payload(10, 0)}}), ErrMalformed, "original length 9"},
		{"usec fraction", buildFile(false, false, 0, 1, []rawRecord{rec(0, 1_000_000, nil)}), ErrMalformed, "timestamp fraction"},
		{"nsec fraction", buildFile(true, true, 0, 1, []rawRecord{rec(0, 1_000_000_000, nil)}), ErrMalformed, "nanoseconds"},
		{"second record", buildFile(false, false, 100, 1, []rawRecord{rec(0, 0, payload(100, 0)), rec(0, 0, payload(101, 0))}), ErrMalformed, "record 2 (offset 140)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadAll(bytes.NewReader(tc.file))
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), tc.msg)
			require.True(t, strings.HasPrefix(err.Error(), "pcap: "), err.Error())
		})
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestIOError(t *testing.T) {
	boom := errors.New("boom")
	_, err := NewReader(errReader{boom})
	require.ErrorIs(t, err, boom)

	f := buildFile(false, false, 0, 1, []rawRecord{rec(0, 0, payload(10, 0))})
	rd, err := NewReader(io.MultiReader(bytes.NewReader(f[:30]), errReader{boom}))
	require.NoError(t, err)
	_, err = rd.Next()
	require.ErrorIs(t, err, boom)
	require.Contains(t, err.Error(), "record 1")
}

func manyRecords(n, size int) []byte {
	recs := make([]rawRecord, n)
	for i := range recs {
		recs[i] = rec(uint32(i), 0, payload(size, byte(i)))
	}
	return buildFile(false, true, 0, 1, recs)
}

func TestNextAllocatesNothing(t *testing.T) {
	f := manyRecords(2000, 1514)
	rd, err := NewReader(bytes.NewReader(f))
	require.NoError(t, err)
	_, err = rd.Next() // sizes the buffer
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := rd.Next(); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}

func BenchmarkNext(b *testing.B) {
	f := manyRecords(1000, 1514)
	b.SetBytes(int64(len(f)) / 1000)
	b.ReportAllocs()
	var rd *Reader
	for i := 0; b.Loop(); i++ {
		if i%1000 == 0 {
			rd, _ = NewReader(bytes.NewReader(f))
		}
		if _, err := rd.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWritePacket(b *testing.B) {
	w, _ := NewWriter(io.Discard, LinkTypeEthernet)
	p := Packet{Time: time.Unix(1700000000, 0), Data: payload(1514, 0)}
	b.SetBytes(int64(len(p.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WritePacket(p); err != nil {
			b.Fatal(err)
		}
	}
}
