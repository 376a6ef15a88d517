package pcap

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the Reader: it must never panic,
// must end with io.EOF or a *FormatError, and every record it accepts must
// survive a Writer/Reader round trip unchanged.
func FuzzReader(f *testing.F) {
	f.Add(buildFile(false, false, 65535, 1, []rawRecord{rec(1, 2, payload(60, 1))}))
	f.Add(buildFile(true, true, 0, 1, []rawRecord{rec(1, 2, payload(20, 1)), {3, 4, 5, 100, payload(5, 0)}}))
	f.Add(buildFile(false, true, 16, 113, []rawRecord{rec(1, 2, payload(17, 1))}))
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a})
	f.Fuzz(func(t *testing.T, data []byte) {
		rd, err := NewReader(bytes.NewReader(data))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("NewReader error %v is not a *FormatError", err)
			}
			return
		}
		var buf bytes.Buffer
		w, err := NewWriter(&buf, rd.LinkType())
		if err != nil {
			t.Fatal(err)
		}
		var in []Packet
		for {
			p, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) || fe.Record != len(in)+1 {
					t.Fatalf("bad error %v after %d records", err, len(in))
				}
				break
			}
			if len(p.Data) > MaxCapLen || len(p.Data) > p.OrigLen {
				t.Fatalf("record %d: caplen %d origlen %d", len(in)+1, len(p.Data), p.OrigLen)
			}
			in = append(in, p.Clone())
			if err := w.WritePacket(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		_, out, err := ReadAll(&buf)
		if err != nil {
			t.Fatalf("re-reading written file: %v", err)
		}
		if len(out) != len(in) {
			t.Fatalf("round trip: %d records, want %d", len(out), len(in))
		}
		for i := range in {
			if !in[i].Time.Equal(out[i].Time) || !bytes.Equal(in[i].Data, out[i].Data) || in[i].OrigLen != out[i].OrigLen {
				t.Fatalf("record %d changed in round trip", i+1)
			}
		}
	})
}
