package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"github.com/rscvm/rscvm/net/impair"
	"github.com/rscvm/rscvm/net/pcap"
	"github.com/rscvm/rscvm/net/pcap/pcaptest"
	"github.com/stretchr/testify/require"
)

var (
	replayT0  = time.Unix(1700000000, 0)
	replayV4a = netip.MustParseAddr("10.0.0.1")
	replayV4b = netip.MustParseAddr("10.0.0.2")
	replayV6a = netip.MustParseAddr("2001:db8::1")
	replayV6b = netip.MustParseAddr("2001:db8::2")
	replayMAC = [2][6]byte{{0x52, 0x54, 0, 1, 2, 3}, {0x52, 0x54, 0, 4, 5, 6}}
)

// stream returns n bytes of flow content at sequence number seq.
func stream(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := seq + uint32(i)
		b[i] = byte(x ^ x>>8 ^ x>>16)
	}
	return b
}

func seg(v6 bool, seq uint32, n int, flags uint8, cs header.ChecksumMode) header.TCPFrame {
	f := header.TCPFrame{DstMAC: replayMAC[1], SrcMAC: replayMAC[0], Src: replayV4a, Dst: replayV4b, SrcPort: 40000, DstPort: 5001,
		Seq: seq, Ack: 5000, Flags: header.TCPFlagACK | flags, Window: 1000, Payload: stream(seq, n), Checksum: cs, DontFragment: true}
	if v6 {
		f.Src, f.Dst, f.SrcPort = replayV6a, replayV6b, 40001
	}
	return f
}

// goldenCapture is the hand-built capture of the golden tests (times in µs
// after replayT0):
//
//	0..90   IPv4 flow A: 10 contiguous 1448-byte segments (the last with PSH)
//	5,15,25 IPv6 flow B: 3 contiguous 1000-byte segments
//	100     an ARP request
//	1000    A: one 500-byte segment, alone
//	2000    A: a segment; 2010: a segment after a gap (one segment lost); 2020: the next one
func goldenCapture(cs header.ChecksumMode) []pcap.Packet {
	var pkts []pcap.Packet
	add := func(us int, b []byte) {
		pkts = append(pkts, pcap.Packet{Time: replayT0.Add(time.Duration(us) * time.Microsecond), Data: b})
	}
	seq := uint32(1000)
	for i := range 10 {
		var psh uint8
		if i == 9 {
			psh = header.TCPFlagPSH
		}
		add(i*10, seg(false, seq, 1448, psh, cs).Build(nil))
		seq += 1448
		if i < 3 {
			add(i*10+5, seg(true, 7000+uint32(i)*1000, 1000, 0, cs).Build(nil))
		}
	}
	arp := make([]byte, 42)
	copy(arp, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(arp[6:], replayMAC[0][:])
	binary.BigEndian.PutUint16(arp[12:], header.EtherTypeARP)
	add(100, arp)
	add(1000, seg(false, seq, 500, 0, cs).Build(nil))
	seq += 500
	add(2000, seg(false, seq, 1448, 0, cs).Build(nil))
	seq += 2 * 1448
	add(2010, seg(false, seq, 1448, 0, cs).Build(nil))
	seq += 1448
	add(2020, seg(false, seq, 1448, 0, cs).Build(nil))
	return pkts
}

// replayed is the result of one replay run.
type replayed struct {
	json   []replayPacket
	raw    []map[string]any
	out    []pcap.Packet
	stderr string
}

// replayPackets writes pkts to a capture, runs `rscvm rsc replay` on it
// with --out and --json plus args, and returns what it produced.
func replayPackets(t *testing.T, pkts []pcap.Packet, args ...string) replayed {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	require.NoError(t, pcap.WriteFile(in, pcap.LinkTypeEthernet, pkts))
	return replayFile(t, in, out, args...)
}

func replayFile(t *testing.T, in, out string, args ...string) replayed {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"rsc", "replay", "--in", in, "--out", out, "--json"}, args...), &stdout, &stderr)
	require.NoError(t, err)
	var r replayed
	r.stderr = stderr.String()
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var p replayPacket
		require.NoError(t, json.Unmarshal(sc.Bytes(), &p))
		r.json = append(r.json, p)
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		r.raw = append(r.raw, m)
	}
	_, r.out, err = pcap.ReadFile(out)
	require.NoError(t, err)
	require.Len(t, r.out, len(r.json), "--out and --json list the same packets")
	for i, p := range r.out {
		sum := sha256.Sum256(p.Data)
		require.Equal(t, hex.EncodeToString(sum[:]), r.json[i].SHA256, "packet %d", i)
		require.Equal(t, len(p.Data), r.json[i].Len)
		require.Equal(t, p.Time.UnixNano(), r.json[i].TimeNs)
	}
	return r
}

// want describes an expected delivered packet.
type want struct {
	us                  int // delivery time, µs after replayT0
	flags, gso          uint8
	hdrLen, gsoSize     uint16
	csumStart, csumOff  uint16
	rscSegs             int // -1: no rsc fields in the JSON
	length              int
	flow                string
	payloadSeq, payload int // TCP payload: stream(seq, n)
}

const (
	flowA = "tcp 10.0.0.1:40000 > 10.0.0.2:5001"
	flowB = "tcp [2001:db8::1]:40001 > [2001:db8::2]:5001"
	rscFl = header.VirtioNetHdrFNeedsCsum | header.VirtioNetHdrFRSCInfo
	dv    = header.VirtioNetHdrFDataValid
)

func checkDelivered(t *testing.T, r replayed, wants []want) {
	t.Helper()
	require.Len(t, r.json, len(wants), "delivered packets: %+v", r.json)
	for i, w := range wants {
		p := r.json[i]
		require.Equal(t, replayT0.Add(time.Duration(w.us)*time.Microsecond).UnixNano(), p.TimeNs, "packet %d time", i)
		require.Equal(t, w.flags, p.Flags, "packet %d flags", i)
		require.Equal(t, w.gso, p.GSOType, "packet %d gso_type", i)
		require.Equal(t, w.hdrLen, p.HdrLen, "packet %d hdr_len", i)
		require.Equal(t, w.gsoSize, p.GSOSize, "packet %d gso_size", i)
		require.Equal(t, w.csumStart, p.CsumStart, "packet %d csum_start", i)
		require.Equal(t, w.csumOff, p.CsumOffset, "packet %d csum_offset", i)
		require.Equal(t, uint16(1), p.NumBuffers, "packet %d num_buffers", i)
		if w.rscSegs < 0 {
			require.NotContains(t, r.raw[i], "rsc_segments", "packet %d", i)
		} else {
			require.Equal(t, float64(w.rscSegs), r.raw[i]["rsc_segments"], "packet %d rsc_segments", i)
			require.Equal(t, float64(0), r.raw[i]["rsc_dup_acks"], "packet %d rsc_dup_acks", i)
		}
		require.Equal(t, w.length, p.Len, "packet %d len", i)
		require.Equal(t, w.flow, p.Flow, "packet %d flow", i)
		if w.payload > 0 {
			s, ok := pcaptest.ParseTCP(r.out[i].Data)
			require.True(t, ok)
			require.Equal(t, uint32(w.payloadSeq), s.Seq, "packet %d seq", i)
			require.Equal(t, stream(uint32(w.payloadSeq), w.payload), s.Payload, "packet %d payload", i)
		}
	}
}

// noBatchFlush selects timer-only flushing (QEMU's model) instead of the
// device's default flush at the end of every read batch.
const noBatchFlush = "--batch-flush=false"

// Sequence numbers of the golden capture's A segments.
const (
	seqA0    = 1000
	seqLone  = seqA0 + 10*1448
	seqAfter = seqLone + 500
	seqGap   = seqAfter + 2*1448
)

func TestReplayGolden(t *testing.T) {
	// Timer-only flushing (QEMU's model): batch ends do not flush.
	r := replayPackets(t, goldenCapture(header.ChecksumFull), noBatchFlush)
	scuA := want{300, rscFl, header.VirtioNetHdrGSOTCPv4, 54, 1448, 10, 0, 10, 14 + 40 + 14480, flowA, seqA0, 14480}
	scuB := want{305, rscFl, header.VirtioNetHdrGSOTCPv6, 74, 1000, 3, 0, 3, 14 + 60 + 3000, flowB, 7000, 3000}
	checkDelivered(t, r, []want{
		{100, dv, 0, 0, 0, 0, 0, -1, 42, "", 0, 0},
		scuA,
		scuB,
		{1300, dv, 0, 0, 0, 0, 0, -1, 14 + 40 + 500, flowA, seqLone, 500},
		{2010, dv, 0, 0, 0, 0, 0, -1, 14 + 40 + 1448, flowA, seqAfter, 1448},
		{2310, rscFl, header.VirtioNetHdrGSOTCPv4, 54, 1448, 2, 0, 2, 14 + 40 + 2896, flowA, seqGap, 2896},
	})
	// The coalesced IPv4 packet: total length fixed, header checksum
	// valid, PSH kept, TCP checksum field = pseudo-header sum.
	f := r.out[1].Data
	ip := header.IPv4(f[14:])
	require.Equal(t, uint16(20+20+14480), ip.TotalLength())
	require.True(t, ip.IsChecksumValid())
	tcp := header.TCP(f[34:])
	require.NotZero(t, tcp.Flags()&header.TCPFlagPSH)
	require.Equal(t, header.PseudoHeaderSum(header.ProtocolTCP, f[26:30], f[30:34], uint32(len(f)-34)), tcp.Checksum())
	// IPv6: payload length fixed.
	require.Equal(t, uint16(20+3000), header.IPv6(r.out[2].Data[14:]).PayloadLength())

	require.Contains(t, r.stderr, "18 frames in, 6 packets out (3 coalesced packets carrying 15 segments, 20376 payload bytes)")
	require.Contains(t, r.stderr, "exceptions: not_ip=1 data_out_of_order=1")
	require.Contains(t, r.stderr, "timer 4, batch end 0, evictions 0, aborts 1")
}

func TestReplayBatches(t *testing.T) {
	pkts := goldenCapture(header.ChecksumFull)
	// Device defaults: frames 5 µs apart with a 5 µs batch gap are all
	// separate batches and every batch end flushes: nothing is coalesced,
	// each frame leaves on arrival.
	r := replayPackets(t, pkts, "--batch-gap", "4999")
	require.Len(t, r.json, len(pkts))
	for i, p := range r.json {
		require.Equal(t, pkts[i].Time.UnixNano(), p.TimeNs)
		require.Equal(t, pkts[i].Data, r.out[i].Data)
	}
	require.Contains(t, r.stderr, "batch end 17")
	// With a 20 µs gap, 0..100 µs is one batch flushed at its end.
	r = replayPackets(t, pkts, "--batch-gap", "20000")
	checkDelivered(t, r, []want{
		{100, dv, 0, 0, 0, 0, 0, -1, 42, "", 0, 0},
		{100, rscFl, header.VirtioNetHdrGSOTCPv4, 54, 1448, 10, 0, 10, 14534, flowA, seqA0, 14480},
		{100, rscFl, header.VirtioNetHdrGSOTCPv6, 74, 1000, 3, 0, 3, 3074, flowB, 7000, 3000},
		{1000, dv, 0, 0, 0, 0, 0, -1, 554, flowA, seqLone, 500},
		{2010, dv, 0, 0, 0, 0, 0, -1, 1502, flowA, seqAfter, 1448},
		{2020, rscFl, header.VirtioNetHdrGSOTCPv4, 54, 1448, 2, 0, 2, 2950, flowA, seqGap, 2896},
	})

	// --interval 0 without --batch-flush behaves the same: with the timer
	// off, batch ends always flush.
	r = replayPackets(t, pkts, noBatchFlush, "--interval", "0", "--batch-gap", "20000")
	checkDelivered(t, r, []want{
		{100, dv, 0, 0, 0, 0, 0, -1, 42, "", 0, 0},
		{100, rscFl, header.VirtioNetHdrGSOTCPv4, 54, 1448, 10, 0, 10, 14534, flowA, seqA0, 14480},
		{100, rscFl, header.VirtioNetHdrGSOTCPv6, 74, 1000, 3, 0, 3, 3074, flowB, 7000, 3000},
		{1000, dv, 0, 0, 0, 0, 0, -1, 554, flowA, seqLone, 500},
		{2010, dv, 0, 0, 0, 0, 0, -1, 1502, flowA, seqAfter, 1448},
		{2020, rscFl, header.VirtioNetHdrGSOTCPv4, 54, 1448, 2, 0, 2, 2950, flowA, seqGap, 2896},
	})
	require.Contains(t, r.stderr, "batch end 4")

	// --interval 0 with a 1 µs gap: frames 5 µs apart are all separate
	// batches, nothing is coalesced, each frame leaves at once.
	r = replayPackets(t, pkts, "--interval", "0", "--batch-gap", "1000")
	require.Len(t, r.json, len(pkts))
	for i, p := range r.json {
		require.Equal(t, pkts[i].Time.UnixNano(), p.TimeNs)
		require.Equal(t, pkts[i].Data, r.out[i].Data)
	}

	// --batch 4 with a wide gap: batches of 4 frames, flushed at their end.
	r = replayPackets(t, pkts, "--batch", "4", "--batch-gap", "100000000")
	require.Contains(t, r.stderr, "18 frames in")
	segs := 0
	for _, p := range r.json {
		if p.RSCSegments != nil {
			require.LessOrEqual(t, int(*p.RSCSegments), 4)
			segs += int(*p.RSCSegments)
		}
	}
	require.Positive(t, segs)
}

func TestReplayModes(t *testing.T) {
	full := goldenCapture(header.ChecksumFull)
	t.Run("gso", func(t *testing.T) {
		r := replayPackets(t, full, noBatchFlush, "--gso")
		require.Len(t, r.json, 6)
		p := r.json[1]
		require.Equal(t, uint8(header.VirtioNetHdrFNeedsCsum), p.Flags)
		require.Equal(t, uint16(34), p.CsumStart)
		require.Equal(t, uint16(16), p.CsumOffset)
		require.NotContains(t, r.raw[1], "rsc_segments")
		require.Equal(t, uint16(54), r.json[2].CsumStart)
	})
	t.Run("compat-checksum", func(t *testing.T) {
		r := replayPackets(t, full, noBatchFlush, "--compat-checksum")
		p := r.json[1]
		require.Equal(t, uint8(header.VirtioNetHdrFRSCInfo), p.Flags)
		f := r.out[1].Data
		require.True(t, header.TransportChecksumValid(header.ProtocolTCP, f[26:30], f[30:34], f[34:]))
	})
	t.Run("ipv4-only", func(t *testing.T) {
		r := replayPackets(t, full, noBatchFlush, "--ipv4-only")
		var v6 []replayPacket
		for _, p := range r.json {
			if p.Flow == flowB {
				v6 = append(v6, p)
			}
		}
		require.Len(t, v6, 3)
		for i, p := range v6 {
			require.Equal(t, uint8(dv), p.Flags)
			require.Equal(t, replayT0.Add(time.Duration(i*10+5)*time.Microsecond).UnixNano(), p.TimeNs, "passed through on arrival")
		}
	})
	t.Run("ipv6-only", func(t *testing.T) {
		r := replayPackets(t, full, noBatchFlush, "--ipv6-only")
		require.Contains(t, r.stderr, "1 coalesced packets carrying 3 segments, 3000 payload bytes")
	})
	t.Run("tap-flags none", func(t *testing.T) {
		// Full checksums: verified in software, coalesced; singles keep flags 0.
		r := replayPackets(t, full, noBatchFlush, "--tap-flags", "none")
		require.Len(t, r.json, 6)
		require.Zero(t, r.json[3].Flags)
		require.Equal(t, uint16(10), r.json[1].CsumStart)
		// Partial checksums cannot be verified: nothing is coalesced.
		r = replayPackets(t, goldenCapture(header.ChecksumPartial), "--tap-flags", "none")
		require.Len(t, r.json, 18)
		require.Contains(t, r.stderr, "bad_checksum=17")
	})
	t.Run("tap-flags needs_csum", func(t *testing.T) {
		r := replayPackets(t, goldenCapture(header.ChecksumPartial), noBatchFlush, "--tap-flags", "needs_csum")
		require.Len(t, r.json, 6)
		lone := r.json[3]
		require.Equal(t, uint8(header.VirtioNetHdrFNeedsCsum), lone.Flags)
		require.Equal(t, uint16(34), lone.CsumStart)
		require.Equal(t, uint16(16), lone.CsumOffset)
		require.Zero(t, r.json[0].Flags, "ARP gets no checksum flags")
	})
	t.Run("tcp-timestamps", func(t *testing.T) {
		ts := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTimestamp, 10, 0, 0, 0, 1, 0, 0, 0, 2}
		var pkts []pcap.Packet
		for i := range 4 {
			f := seg(false, uint32(1000+i*1436), 1436, 0, header.ChecksumFull)
			f.Options = ts
			pkts = append(pkts, pcap.Packet{Time: replayT0.Add(time.Duration(i) * time.Microsecond), Data: f.Build(nil)})
		}
		r := replayPackets(t, pkts)
		require.Len(t, r.json, 1)
		require.Equal(t, uint16(66), r.json[0].HdrLen)
		r = replayPackets(t, pkts, "--tcp-timestamps=false")
		require.Len(t, r.json, 4)
		require.Contains(t, r.stderr, "tcp_option=4")
	})
	t.Run("rx-buf", func(t *testing.T) {
		r := replayPackets(t, full, noBatchFlush, "--rx-buf", "4096")
		require.Equal(t, uint16((12+14534+4095)/4096), r.json[1].NumBuffers)
		require.Equal(t, uint16(1), r.json[0].NumBuffers)
	})
	t.Run("max-flows", func(t *testing.T) {
		r := replayPackets(t, full, noBatchFlush, "--max-flows", "1")
		require.Contains(t, r.stderr, "evictions 6")
	})
}

func TestReplayFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  []string
	}{
		{nil, []string{"--in is required"}},
		{[]string{"--in", "x", "--tap-flags", "valid"}, []string{"--tap-flags", "none, data_valid, needs_csum"}},
		{[]string{"--in", "x", "--interval", "-1"}, []string{"--interval", "0 to 4294967295"}},
		{[]string{"--in", "x", "--interval", "1ms"}, []string{"--interval", "nanoseconds"}},
		{[]string{"--in", "x", "--batch", "0"}, []string{"--batch", "1 to 1048576"}},
		{[]string{"--in", "x", "--batch-gap", "x"}, []string{"--batch-gap", "≥ 0"}},
		{[]string{"--in", "x", "--max-flows", "5000"}, []string{"--max-flows", "1 to 4096"}},
		{[]string{"--in", "x", "--rx-buf", "-2"}, []string{"--rx-buf"}},
		{[]string{"--in", "x", "--ipv4-only", "--ipv6-only"}, []string{"--ipv4-only and --ipv6-only"}},
		{[]string{"--in", "x", "--nope"}, []string{"--nope", "accepted: --batch"}},
		{[]string{"--in", "x", "trace.pcap"}, []string{`unexpected argument "trace.pcap"`}},
		{[]string{"--in"}, []string{"needs an argument: --in"}},
	} {
		_, err := parseReplayArgs(tc.args)
		require.Error(t, err, "%q", tc.args)
		for _, m := range tc.msg {
			require.Contains(t, err.Error(), m, "%q", tc.args)
		}
	}
	o, err := parseReplayArgs([]string{"-in=a.pcap", "--interval=0", "--tap-flags", "needs_csum", "--gso", "--tcp-timestamps=false"})
	require.NoError(t, err)
	require.Equal(t, "a.pcap", o.In)
	require.Zero(t, o.Interval)
	require.Equal(t, tapFlagsNeedsCsum, o.TapFlags)
	require.True(t, o.GSO)
	require.False(t, o.Timestamps)
	o, err = parseReplayArgs([]string{"--in", "a"})
	require.NoError(t, err)
	require.Equal(t, 300*time.Microsecond, o.Interval)
	require.Equal(t, tapFlagsDataValid, o.TapFlags)
	require.Equal(t, 64, o.Batch)
	require.Equal(t, 5*time.Microsecond, o.BatchGap)
	require.True(t, o.FlushBatchEnd)
	require.True(t, o.Timestamps)

	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"rsc"}, &stdout, &stderr)
	require.Equal(t, exitError{2}, err)
	require.Contains(t, stderr.String(), "rscvm rsc replay")
	require.ErrorContains(t, run(context.Background(), []string{"rsc", "play"}, &stdout, &stderr), `unknown subcommand "play"`)
	stdout.Reset()
	require.NoError(t, run(context.Background(), []string{"rsc", "replay", "--help"}, &stdout, &stderr))
	for _, f := range replayFlagOrder {
		require.Contains(t, stdout.String(), "--"+f)
	}
}

// TestReplayMalformed cuts a valid capture at every byte and corrupts
// record lengths: replay either succeeds (cut at a record boundary) or
// fails naming the file and the record, never panics.
func TestReplayMalformed(t *testing.T) {
	var buf bytes.Buffer
	w, err := pcap.NewWriter(&buf, pcap.LinkTypeEthernet)
	require.NoError(t, err)
	for _, p := range goldenCapture(header.ChecksumFull) {
		require.NoError(t, w.WritePacket(p))
	}
	require.NoError(t, w.Flush())
	full := buf.Bytes()
	dir := t.TempDir()
	in := filepath.Join(dir, "cut.pcap")
	// Cut everywhere in the file header and the first record, and around
	// every record boundary.
	var cuts []int
	for c := 0; c < pcap.FileHeaderSize+pcap.RecordHeaderSize+20; c++ {
		cuts = append(cuts, c)
	}
	for off := pcap.FileHeaderSize; off < len(full); off += pcap.RecordHeaderSize + int(binary.LittleEndian.Uint32(full[off+8:])) {
		for _, d := range []int{-1, 1, 8, 15, 16, 17} {
			cuts = append(cuts, off+d)
		}
	}
	for _, cut := range cuts {
		require.NoError(t, os.WriteFile(in, full[:cut], 0o644))
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"rsc", "replay", "--in", in, "--json"}, &stdout, &stderr)
		if err == nil {
			continue
		}
		require.Contains(t, err.Error(), in, "cut %d", cut)
		if cut >= pcap.FileHeaderSize {
			require.Contains(t, err.Error(), "record ", "cut %d", cut)
		}
	}
	// Record 3's captured length made larger than its original length.
	bad := bytes.Clone(full)
	off := pcap.FileHeaderSize
	for range 2 {
		off += pcap.RecordHeaderSize + int(binary.LittleEndian.Uint32(bad[off+8:]))
	}
	binary.LittleEndian.PutUint32(bad[off+12:], 10)
	require.NoError(t, os.WriteFile(in, bad, 0o644))
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"rsc", "replay", "--in", in}, &stdout, &stderr)
	require.ErrorContains(t, err, in+": pcap: record 3 (offset ")
	require.ErrorContains(t, err, "exceeds the original length 10")

	// Another link type.
	require.NoError(t, pcap.WriteFile(in, pcap.LinkTypeLinuxSLL, nil))
	err = run(context.Background(), []string{"rsc", "replay", "--in", in}, &stdout, &stderr)
	require.ErrorContains(t, err, "LINKTYPE_LINUX_SLL (113) is not supported")
	// Garbage frames inside a valid file are passed through.
	var pkts []pcap.Packet
	for n := range 80 {
		pkts = append(pkts, pcap.Packet{Time: replayT0, Data: bytes.Repeat([]byte{0x45}, n)})
	}
	r := replayPackets(t, pkts)
	require.Len(t, r.json, 80)
}

func TestReplayOutputReadableByTcpdump(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed (apt-get install tcpdump)")
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	require.NoError(t, pcap.WriteFile(in, pcap.LinkTypeEthernet, goldenCapture(header.ChecksumFull)))
	r := replayFile(t, in, out, noBatchFlush)
	b, err := exec.Command("tcpdump", "-nn", "-r", out).CombinedOutput()
	require.NoError(t, err, "%s", b)
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, "reading from file") {
			lines++
		}
	}
	require.Equal(t, len(r.json), lines, "%s", b)
	require.Contains(t, string(b), "length 14480")
}

// ipDatagramLen returns the IP datagram length of an IPv4/IPv6 frame.
func ipDatagramLen(f []byte) int {
	info, ok := header.Ethernet(f).Parse()
	if !ok {
		return 0
	}
	switch info.EtherType {
	case header.EtherTypeIPv4:
		if len(f) >= info.HeaderLen+header.IPv4MinSize {
			return int(header.IPv4(f[info.HeaderLen:]).TotalLength())
		}
	case header.EtherTypeIPv6:
		if len(f) >= info.HeaderLen+header.IPv6MinSize {
			return header.IPv6MinSize + int(header.IPv6(f[info.HeaderLen:]).PayloadLength())
		}
	}
	return 0
}

// TestReplayRealTraffic captures real Linux TCP transfers (IPv4 2 MiB and
// IPv6 1 MiB, concurrently) between two network namespaces, replays them
// through the engine unimpaired and after seeded loss, duplication and
// reordering, and checks that every flow's delivered byte stream is exactly
// the one the engine received.
func TestReplayRealTraffic(t *testing.T) {
	capt := pcaptest.MustCaptureTransfer(t, pcaptest.TransferConfig{
		Seed:  2024,
		Flows: []pcaptest.FlowConfig{{Bytes: 2 << 20}, {IPv6: true, Bytes: 1 << 20}},
	})
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.pcap")
	require.NoError(t, capt.WriteFile(clean))
	input := pcaptest.Reassemble(capt.Packets)
	for _, f := range capt.Flows {
		s := input[f.Key()]
		require.NotNil(t, s)
		require.True(t, s.Matches(f.Sent), "capture of %v is the sent stream", f.Key())
	}
	dataFrames := 0
	for _, p := range capt.Packets {
		if s, ok := pcaptest.ParseTCP(p.Data); ok && len(s.Payload) > 0 {
			dataFrames++
		}
	}

	check := func(t *testing.T, want pcaptest.Streams, r replayed) {
		t.Helper()
		got := pcaptest.Reassemble(r.out)
		require.Empty(t, pcaptest.CompareStreams(want, got))
		for i, f := range r.out {
			require.LessOrEqual(t, ipDatagramLen(f.Data), 65535, "packet %d", i)
			if ipDatagramLen(f.Data) > 0 && header.Ethernet(f.Data).Type() == header.EtherTypeIPv4 {
				require.True(t, header.IPv4(f.Data[14:]).IsChecksumValid(), "packet %d IPv4 header checksum", i)
			}
		}
		require.NotContains(t, r.stderr, "bad_checksum")
	}

	// Unimpaired, with the device's defaults (flush at every batch end, so
	// the result depends on the capture's timing) and with timer-only
	// flushing (which depends only on rsc_interval).
	for _, u := range []struct {
		args    []string
		maxFrac int
	}{{[]string{"--batch-gap", "5000"}, 2}, {[]string{noBatchFlush}, 4}} {
		t.Run("unimpaired "+strings.Join(u.args, " "), func(t *testing.T) {
			r := replayFile(t, clean, filepath.Join(dir, "clean-out.pcap"), u.args...)
			check(t, input, r)
			for _, f := range capt.Flows {
				require.True(t, pcaptest.Reassemble(r.out)[f.Key()].Matches(f.Sent))
			}
			t.Logf("%d frames (%d with data) in, %d packets out; %s", len(capt.Packets), dataFrames, len(r.json), r.stderr)
			require.Less(t, len(r.json), dataFrames/u.maxFrac, "coalescing should cut the packet count well below the segment count")
		})
	}

	impaired, st, err := impair.Apply(impair.Config{Seed: 42, Loss: 0.01, Duplicate: 0.01, Reorder: 0.02, Window: 4}, capt.Packets)
	require.NoError(t, err)
	require.Positive(t, st.Dropped)
	require.Positive(t, st.Duplicated)
	require.Positive(t, st.Reordered)
	imp := filepath.Join(dir, "impaired.pcap")
	require.NoError(t, pcap.WriteFile(imp, pcap.LinkTypeEthernet, impaired))
	wantImp := pcaptest.Reassemble(impaired)
	for _, args := range [][]string{
		{"--interval", "300000"},
		{"--interval", "0"},
		{"--interval", "0", "--batch-gap", "1000000"},
		{"--batch", "8", "--batch-gap", "1000000"},
		{"--batch-flush=false"},
		{"--gso"},
		{"--compat-checksum", "--tap-flags", "none"},
		{"--max-flows", "1", "--interval", "5000000"},
		{"--ipv6-only"},
		{"--tcp-timestamps=false"},
	} {
		t.Run("impaired "+strings.Join(args, " "), func(t *testing.T) {
			r := replayFile(t, imp, filepath.Join(dir, "impaired-out.pcap"), args...)
			check(t, wantImp, r)
			t.Logf("%s", r.stderr)
		})
	}
}

// TestReplayCancel stops on a cancelled context.
func TestReplayCancel(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pcap")
	require.NoError(t, pcap.WriteFile(in, pcap.LinkTypeEthernet, goldenCapture(header.ChecksumFull)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"rsc", "replay", "--in", in}, &stdout, &stderr)
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
}

// FuzzReplay runs arbitrary capture bytes through the whole replay path
// (pcap reader, TAP header synthesis, engine, JSON and pcap output): it
// must never panic, and a capture the reader accepts must replay without
// error, delivering every TCP payload byte it was given.
func FuzzReplay(f *testing.F) {
	var buf bytes.Buffer
	w, _ := pcap.NewWriter(&buf, pcap.LinkTypeEthernet)
	for _, p := range goldenCapture(header.ChecksumPartial)[:4] {
		p.Data = p.Data[:min(len(p.Data), 100)] // small seeds keep minimization fast
		_ = w.WritePacket(p)
	}
	_ = w.Flush()
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:150])
	f.Add([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0})
	f.Fuzz(checkReplayFuzz)
}

func checkReplayFuzz(t *testing.T, data []byte) {
	for _, o := range []*replayOptions{
		{Interval: 300 * time.Microsecond, TapFlags: tapFlagsDataValid, Batch: 64, BatchGap: time.Microsecond, Timestamps: true, MaxFlows: 4},
		{TapFlags: tapFlagsNeedsCsum, Batch: 3, GSO: true, MaxFlows: 2},
		{Interval: time.Millisecond, TapFlags: tapFlagsNone, Batch: 1, FlushBatchEnd: true, CompatChecksum: true, IPv4Only: true, MaxFlows: 1, RxBuf: 1000},
	} {
		var in, delivered []pcap.Packet
		var jsonOut bytes.Buffer
		r := &replayer{opts: o, js: json.NewEncoder(&jsonOut)}
		pw, err := pcap.NewWriter(io.Discard, pcap.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		r.pw = pw
		r.deliv = func(_ header.VirtioNetHdr, frame []byte, at time.Time) {
			delivered = append(delivered, pcap.Packet{Time: at, Data: bytes.Clone(frame)})
		}
		_, err = replayCapture(context.Background(), "fuzz.pcap", bytes.NewReader(data), r)
		rd, rerr := pcap.NewReader(bytes.NewReader(data))
		ok := rerr == nil && rd.LinkType() == pcap.LinkTypeEthernet
		for ok {
			p, err := rd.Next()
			if err != nil {
				ok = errors.Is(err, io.EOF)
				break
			}
			in = append(in, p.Clone())
		}
		if !ok {
			if err == nil {
				t.Fatal("replay accepted a capture the reader rejects")
			}
			continue
		}
		if err != nil {
			t.Fatalf("replay of a valid capture failed: %v", err)
		}
		if o.TapFlags == tapFlagsNone || o.TapFlags == tapFlagsDataValid {
			// Every TCP payload byte arrives exactly once.
			if errs := pcaptest.CompareStreams(pcaptest.Reassemble(in), pcaptest.Reassemble(delivered)); len(errs) > 0 {
				t.Fatalf("streams differ: %v", errs)
			}
		}
	}
}
