package compat

import (
	"encoding/hex"
	"strings"
)

// DefaultRules are the known differences between QEMU 7.2's virtio-net-pci
// and rscvm's: QEMU defects from rsc-spec part (b), cited by number, and
// deliberate rscvm behaviour. Anything they do not match is unexpected.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "machine-slot", Normalise: true, Match: machineSlot},
		{Name: "firmware-serr", Normalise: true, Match: firmwareSERR},
		{Name: "num-buffers", Match: numBuffers},
		{Name: "scu-flags", Match: scuFlags},
		{Name: "scu-gso", Match: scuGSO},
		{Name: "scu-checksums", Match: scuChecksums},
		{Name: "ctrl-gating", Match: ctrlGating},
	}
}

// rxPair returns both sides' rx record of a diff on an rx record.
func rxPair(d Diff, q, r Report) (*Record, *Record) {
	if !strings.HasPrefix(d.Record, "rx ") {
		return nil, nil
	}
	return q.Find(d.Record), r.Find(d.Record)
}

const (
	flagNeedsCsum = 0x01
	flagRSCInfo   = 0x04
)

// qemuSCU reports whether QEMU delivered the packet as a coalesced unit.
func qemuSCU(qr *Record) bool { return qr != nil && hexField(qr, "flags")&flagRSCInfo != 0 }

// scuFlags: QEMU sets RSC_INFO only on an SCU, rscvm NEEDS_CSUM|RSC_INFO.
func scuFlags(d Diff, q, r Report) string {
	qr, rr := rxPair(d, q, r)
	if d.Field != "flags" || !qemuSCU(qr) || rr == nil {
		return ""
	}
	if hexField(qr, "flags") == flagRSCInfo && hexField(rr, "flags") == flagRSCInfo|flagNeedsCsum {
		return "QEMU (b)5: coalesced packet without NEEDS_CSUM"
	}
	return ""
}

// scuGSO: QEMU leaves gso_size and hdr_len 0 in an SCU's header.
func scuGSO(d Diff, q, r Report) string {
	qr, rr := rxPair(d, q, r)
	if (d.Field != "gso_size" && d.Field != "hdr_len") || !qemuSCU(qr) || rr == nil || d.QEMU != "0" {
		return ""
	}
	return "QEMU (b)5: coalesced packet with " + d.Field + " 0"
}

// scuChecksums: QEMU leaves the first segment's IPv4 header checksum and TCP
// checksum in an SCU; rscvm recomputes the IPv4 one and writes the
// pseudo-header sum (NEEDS_CSUM). The frames must be equal otherwise, and
// rscvm's IPv4 header checksum must be valid.
func scuChecksums(d Diff, q, r Report) string {
	qr, rr := rxPair(d, q, r)
	if (d.Field != "data" && d.Field != "sum") || !qemuSCU(qr) || rr == nil {
		return ""
	}
	qd, _ := qr.Get("data")
	rd, _ := rr.Get("data")
	qb, err1 := hex.DecodeString(qd)
	rb, err2 := hex.DecodeString(rd)
	if err1 != nil || err2 != nil || len(qb) != len(rb) || len(qb) < 74 {
		return ""
	}
	if qb[14] == 0x60 && rb[14] == 0x60 && qb[20] == 6 {
		// IPv6 (no extension header): only the TCP checksum may differ.
		for _, rg := range diffOffsets(qb, rb) {
			if rg[0] < 70 || rg[1] > 72 {
				return ""
			}
		}
		return "QEMU (b)5: stale TCP checksum in the coalesced IPv6 packet"
	}
	if qb[14] != 0x45 {
		return ""
	}
	for _, rg := range diffOffsets(qb, rb) {
		for i := rg[0]; i < rg[1]; i++ {
			if i != 24 && i != 25 && i != 50 && i != 51 {
				return ""
			}
		}
	}
	if ipv4Checksum(rb[14:34]) != 0 {
		return ""
	}
	return "QEMU (b)5: stale IPv4 header and TCP checksums in the coalesced packet"
}

func ipv4Checksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// ctrlGating: control commands QEMU accepts although the feature they belong
// to was not negotiated (or the payload is malformed); rscvm answers ERR
// (see qemuCtrlQuirks in testguest/net_test.go).
func ctrlGating(d Diff, q, r Report) string {
	if !strings.HasPrefix(d.Record, "ctrl ") || d.Field != "ack" || d.QEMU != "0" || d.Rscvm != "1" {
		return ""
	}
	qr := q.Find(d.Record)
	class, _ := decField(qr, "class")
	cmd, _ := decField(qr, "cmd")
	ln, _ := decField(qr, "len")
	neg := hexField(q.Find("virtio features"), "negotiated")
	switch {
	case class == 0 && cmd >= 2 && cmd <= 5 && neg&(1<<20) == 0:
		return "rscvm: RX_EXTRA commands need CTRL_RX_EXTRA negotiated"
	case class == 0 && cmd <= 1 && ln != 1:
		return "rscvm: rx mode command payload must be exactly 1 byte"
	case class == 1 && cmd == 0:
		return "rscvm: MAC table larger than the filter is rejected"
	case class == 2 && neg&(1<<19) == 0:
		return "rscvm: VLAN commands need CTRL_VLAN negotiated"
	case class == 5 && cmd == 0 && neg&(1<<61) == 0 && ctrlArg(q, d.Record) == "offloads:0x2000000000000000":
		return "rscvm: OFFLOADS_SET bit 61 without RSC_EXT negotiated is rejected"
	}
	return ""
}

// ctrlArg returns the ctrl= command (from the guest's "opt ctrl=" line) that
// produced the record "ctrl n=K".
func ctrlArg(q Report, record string) string {
	opt := q.Find("opt ctrl")
	if opt == nil {
		return ""
	}
	v, _ := opt.Get("ctrl")
	n, ok := decField(q.Find(record), "n")
	list := strings.Split(v, ",")
	if !ok || n >= uint64(len(list)) {
		return ""
	}
	return list[n]
}

// machineSlot: QEMU's pc machine has the PIIX3 at 00:01.x, so its first
// -device lands in slot 2; rscvm's machine has no ISA bridge and puts the NIC
// in the first free slot. Not device behaviour.
func machineSlot(d Diff, q, r Report) string {
	if d.Record == "virtio dev" && d.Field == "pos0" {
		return "rscvm: machine layout (no PIIX3 at 00:01, the NIC takes the first free slot)"
	}
	return ""
}

// firmwareSERR: SeaBIOS (QEMU's firmware, which runs before the PVH entry)
// sets SERR# enable (command bit 8); rscvm enters the guest directly. The
// guest's own bits (I/O, memory, bus master) must agree.
func firmwareSERR(d Diff, q, r Report) string {
	if d.Record != "virtio dev" || d.Field != "cmd" {
		return ""
	}
	qc, rc := hexField(q.Find(d.Record), "cmd"), hexField(r.Find(d.Record), "cmd")
	if qc&^0x100 == rc && qc&0x100 != 0 {
		return "rscvm: no firmware (SeaBIOS sets SERR# enable, command bit 8)"
	}
	if qc&^0x101 == rc && qc&0x101 == 0x101 && isModernOnly(q) {
		return "rscvm: no firmware (SeaBIOS sets SERR# and I/O decode; the modern-only function has no I/O BAR)"
	}
	return ""
}

// isModernOnly reports whether the device is the modern-only 1af4:1041.
func isModernOnly(q Report) bool {
	id, _ := q.Find("virtio dev").Get("id")
	return id == "1af4:1041"
}

// numBuffers: without MRG_RXBUF a virtio 1 device must write num_buffers 1;
// QEMU 7.2 leaves it 0 (fixed in QEMU in 2025, c17ad4b11b; see
// virtio-pci-qemu.md).
func numBuffers(d Diff, q, r Report) string {
	if !strings.HasPrefix(d.Record, "rx ") || d.Field != "num_buffers" || d.QEMU != "0" || d.Rscvm != "1" {
		return ""
	}
	neg := hexField(r.Find("virtio features"), "negotiated")
	if neg&(1<<15) == 0 && neg&(1<<32) != 0 {
		return "rscvm: num_buffers 1 without MRG_RXBUF on virtio 1 (QEMU 7.2 writes 0; fixed upstream c17ad4b11b)"
	}
	return ""
}

// Known is a case-specific expected difference (a scenario whose outcome
// differs by design, documented in rsc-spec part (a)/(b)). It matches a diff
// on Record and Field exactly; QEMU and Rscvm, if non-empty, must equal the
// values; for "data" and "sum" diffs, Offsets (if set) are the only byte
// offsets where the frames may differ.
type Known struct {
	Record, Field string
	QEMU, Rscvm   string
	Offsets       []int
	Reason        string
}

// anyField as a Known's Field matches every diff on the record (a packet
// that exists on both sides with different content, or on one side only).
const anyField = "*"

// knownRecords returns Known entries matching any difference on the records:
// for scenarios where QEMU and rscvm split or order the packets differently.
func knownRecords(reason string, records ...string) []Known {
	var k []Known
	for _, r := range records {
		k = append(k, Known{Record: r, Field: anyField, Reason: reason})
	}
	return k
}

// knownRule turns a case's Known list into a rule.
func knownRule(known []Known) Rule {
	return Rule{Name: "case", Match: func(d Diff, q, r Report) string {
		for _, k := range known {
			if k.Record != d.Record || k.Field != d.Field && k.Field != anyField {
				continue
			}
			if k.QEMU != "" && k.QEMU != d.QEMU || k.Rscvm != "" && k.Rscvm != d.Rscvm {
				continue
			}
			if k.Offsets != nil && !onlyOffsets(q.Find(d.Record), r.Find(d.Record), k.Offsets) {
				continue
			}
			return k.Reason
		}
		return ""
	}}
}

// onlyOffsets reports whether the two records' frames have the same length
// and differ at most at the given offsets.
func onlyOffsets(qr, rr *Record, offs []int) bool {
	if qr == nil || rr == nil {
		return false
	}
	qd, _ := qr.Get("data")
	rd, _ := rr.Get("data")
	qb, err1 := hex.DecodeString(qd)
	rb, err2 := hex.DecodeString(rd)
	if err1 != nil || err2 != nil || len(qb) != len(rb) {
		return false
	}
	allowed := map[int]bool{}
	for _, o := range offs {
		allowed[o] = true
	}
	for _, rg := range diffOffsets(qb, rb) {
		for i := rg[0]; i < rg[1]; i++ {
			if !allowed[i] {
				return false
			}
		}
	}
	return true
}
