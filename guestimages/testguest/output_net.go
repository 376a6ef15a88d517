package testguest

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// NetReport is what the guest's virtio-net driver (net=1) printed.
type NetReport struct {
	// Device is the "virtio dev" line.
	Device *VirtioDevice
	// Features is the "virtio features" line.
	Features *Features
	// Config is the "virtio config" line (raw device-config reads).
	Config *NetConfig
	// Queues is the "virtio queues" line.
	Queues *Queues
	// MSIX is the "virtio msix" line.
	MSIX *MSIX
	// Rings is the "virtio rings" line.
	Rings *Rings
	// Ready is the "ready" line.
	Ready *Ready
	// Reinit is the "reinit" line (reinit=1: reset and set up again).
	Reinit *Reinit
	// Ctrl holds the "ctrl" lines in order.
	Ctrl []CtrlResult
	// UnknownCtrl holds the verbatim "ctrl unknown command" lines.
	UnknownCtrl []string
	// Tx holds the "tx" lines (completed transmissions) in completion order.
	Tx []TxFrame
	// TxEnd is the "txend" line.
	TxEnd *TxEnd
	// Rx holds the "rx" lines with their "rsc" and "rxdata" lines.
	Rx []RxPacket
	// RxEnd is the "rxend" line.
	RxEnd *RxEnd
	// Done is the "virtio done" line.
	Done *VirtioDone
	// Errors are the "virtio error" lines without the prefix.
	Errors []string

	pendingData map[uint32][]byte // rxdata lines before their rx line
}

// VirtioDevice is the "virtio dev" line: the function the driver uses and, in
// modern mode, where its structures live (Attrs: common, notify, mult, isr,
// device, pcicfg, cmd; legacy: io, cmd).
type VirtioDevice struct {
	Bus, Dev, Fn   uint8
	Vendor, Device uint16
	Rev            uint8
	Mode           string // "modern" or "legacy"
	Attrs          map[string]string
}

// Features is the negotiation result.
type Features struct {
	Offered    uint64 // device feature words 0 and 1
	OfferedHi  uint64 // words 2 and 3 (bits 64-127)
	Wanted     uint64 // what the driver asked for (features= or the default, plus rsc=1)
	Negotiated uint64 // Offered & Wanted, as written
	Status     uint8  // device status read back after FEATURES_OK
}

// Has reports whether feature bit is negotiated.
func (f *Features) Has(bit uint) bool { return bit < 64 && f.Negotiated>>bit&1 == 1 }

// NetConfig is the device configuration as read (fields past the device's
// config size read as all-ones on QEMU).
type NetConfig struct {
	MAC        string
	Status     uint16
	MaxPairs   uint16
	MTU        uint16
	Generation uint8
}

// Queues is num_queues and the maximum size of each queue.
type Queues struct {
	Num   uint16
	Sizes []uint16
}

// MSIX is the MSI-X table size and the vectors as read back.
type MSIX struct {
	TableSize            uint16
	Enabled              bool
	Config, RX, TX, Ctrl uint16
}

// Rings are the queues the driver set up.
type Rings struct {
	RXSize, TXSize      uint16
	CtrlIndex, CtrlSize uint16
	HdrLen              uint8 // virtio-net header length: 12, or 10 (legacy without MRG_RXBUF)
	EventIdx            bool
}

// Ready is the "ready" line: DRIVER_OK set, rx buffers posted, control commands done.
type Ready struct {
	Status  uint8
	RxBufs  uint32
	BufSize uint32
	Descs   uint32 // descriptors per rx buffer
	Mode    string // "mrg", "big" or "small"
	Heap    uint64
}

// Reinit is the "reinit" line: the device status after the second setup,
// the features written again and the rx buffers posted again.
type Reinit struct {
	Status     uint8
	Negotiated uint64
	RxBufs     uint32
}

// Ctrl acknowledgement values that are not device answers.
const (
	CtrlAckTimeout = -1 // no used entry within ctrlwait
	CtrlAckNone    = -2 // not sent (no control queue, or queue full)
	CtrlAckError   = -3 // the used ring was invalid
)

// CtrlResult is one control command and the device's answer (0 OK, 1 ERR,
// 255 if the device never wrote the ack byte, or one of the CtrlAck values).
type CtrlResult struct {
	N          uint32
	Class, Cmd uint8
	Len        uint32 // payload bytes after {class, cmd}
	Ack        int
	UsedLen    uint32
}

// RxPacket is one received packet: its virtio-net header, length (frame bytes
// without the header), buffers used, FNV-1a 32 of the frame (see FrameSum),
// and optionally its RSC info and bytes (rxdump=1).
type RxPacket struct {
	N, Len, Bufs uint32
	Flags        uint8
	GSOType      uint8
	HdrLen       uint16
	GSOSize      uint16
	CsumStart    uint16
	CsumOffset   uint16
	NumBuffers   uint16
	Sum          uint32
	RSC          *RSCInfo
	Data         []byte
}

// RSCInfo is the "rsc" line: the header had VIRTIO_NET_HDR_F_RSC_INFO, and
// csum_start/csum_offset carry the coalesced segments and duplicate ACKs.
type RSCInfo struct {
	Segments, DupAcks uint16
}

// RxEnd ends the receive phase: Reason is "count" (rx=N reached), "idle"
// (rxwait ms without a packet) or "error".
type RxEnd struct {
	Packets uint32
	Reason  string
}

// TxFrame is one transmitted frame the device returned.
type TxFrame struct {
	N, Len, Sum uint32
}

// TxEnd ends the transmit phase: Reason is "count", "timeout" or "error".
type TxEnd struct {
	Sent, Done uint32
	Reason     string
}

// VirtioDone is the last driver line: device status before the final reset,
// status after it, and notifications sent on rx, tx and ctrl.
type VirtioDone struct {
	Status, ResetStatus uint8
	Kicks               [3]uint32
}

// FrameSum is the guest's frame checksum: FNV-1a 32 over the Ethernet frame.
func FrameSum(frame []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(frame)
	return h.Sum32()
}

func (o *Output) net() *NetReport {
	if o.Net == nil {
		o.Net = &NetReport{}
	}
	return o.Net
}

// parseNetLine handles the driver's lines; handled is false for other lines.
func (o *Output) parseNetLine(word, rest, line string) (handled bool, err error) {
	switch word {
	case "virtio":
		return true, o.parseVirtio(rest)
	case "ready":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return true, err
		}
		p := numParser{kv: kv}
		r := &Ready{
			Status:  uint8(p.num("status", 16, 8)),
			RxBufs:  uint32(p.num("rxbufs", 10, 32)),
			BufSize: uint32(p.num("bufsize", 10, 32)),
			Descs:   uint32(p.num("descs", 10, 32)),
			Heap:    p.num("heap", 10, 64),
			Mode:    kv["mode"],
		}
		if p.err != nil {
			return true, p.err
		}
		o.net().Ready = r
	case "reinit":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return true, err
		}
		p := numParser{kv: kv}
		r := &Reinit{Status: uint8(p.num("status", 16, 8)), Negotiated: p.num("negotiated", 16, 64),
			RxBufs: uint32(p.num("rxbufs", 10, 32))}
		if p.err != nil {
			return true, p.err
		}
		o.net().Reinit = r
	case "ctrl":
		if strings.HasPrefix(rest, "unknown command ") {
			o.net().UnknownCtrl = append(o.net().UnknownCtrl, line)
			return true, nil
		}
		c, err := parseCtrl(rest)
		if err != nil {
			return true, err
		}
		o.net().Ctrl = append(o.net().Ctrl, c)
	case "tx":
		words := strings.Fields(rest)
		if len(words) == 0 || words[len(words)-1] != "ok" {
			return true, fmt.Errorf("%w: tx line without ok", ErrMalformed)
		}
		kv, err := parseKV(words[:len(words)-1])
		if err != nil {
			return true, err
		}
		p := numParser{kv: kv}
		f := TxFrame{N: uint32(p.num("n", 10, 32)), Len: uint32(p.num("len", 10, 32)), Sum: uint32(p.num("sum", 16, 32))}
		if p.err != nil {
			return true, p.err
		}
		o.net().Tx = append(o.net().Tx, f)
	case "txend":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return true, err
		}
		p := numParser{kv: kv}
		e := &TxEnd{Sent: uint32(p.num("sent", 10, 32)), Done: uint32(p.num("done", 10, 32)), Reason: kv["reason"]}
		if p.err != nil {
			return true, p.err
		}
		if e.Reason == "" {
			return true, fmt.Errorf("%w: txend without reason", ErrMalformed)
		}
		o.net().TxEnd = e
	case "rx":
		pkt, err := parseRx(rest)
		if err != nil {
			return true, err
		}
		n := o.net()
		if d, ok := n.pendingData[pkt.N]; ok {
			pkt.Data = d
			delete(n.pendingData, pkt.N)
		}
		n.Rx = append(n.Rx, pkt)
	case "rsc":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return true, err
		}
		p := numParser{kv: kv}
		idx := uint32(p.num("n", 10, 32))
		info := &RSCInfo{Segments: uint16(p.num("segs", 10, 16)), DupAcks: uint16(p.num("dupacks", 10, 16))}
		if p.err != nil {
			return true, p.err
		}
		n := o.net()
		if len(n.Rx) == 0 || n.Rx[len(n.Rx)-1].N != idx {
			return true, fmt.Errorf("%w: rsc line for n=%d without its rx line", ErrMalformed, idx)
		}
		n.Rx[len(n.Rx)-1].RSC = info
	case "rxdata":
		return true, o.parseRxData(rest)
	case "rxend":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return true, err
		}
		p := numParser{kv: kv}
		e := &RxEnd{Packets: uint32(p.num("packets", 10, 32)), Reason: kv["reason"]}
		if p.err != nil {
			return true, p.err
		}
		if e.Reason == "" {
			return true, fmt.Errorf("%w: rxend without reason", ErrMalformed)
		}
		o.net().RxEnd = e
	default:
		return false, nil
	}
	return true, nil
}

func (o *Output) parseVirtio(rest string) error {
	kind, rest, _ := strings.Cut(rest, " ")
	n := o.net()
	switch kind {
	case "error":
		n.Errors = append(n.Errors, rest)
		return nil
	case "dev":
		words := strings.Fields(rest)
		if len(words) == 0 {
			return ErrMalformed
		}
		bus, dev, fn, err := parseBDF(words[0])
		if err != nil {
			return err
		}
		kv, err := parseKV(words[1:])
		if err != nil {
			return err
		}
		vs, ds, ok := strings.Cut(kv["id"], ":")
		v, err1 := strconv.ParseUint(vs, 16, 16)
		d, err2 := strconv.ParseUint(ds, 16, 16)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("%w: id %q", ErrMalformed, kv["id"])
		}
		p := numParser{kv: kv}
		vd := &VirtioDevice{Bus: bus, Dev: dev, Fn: fn, Vendor: uint16(v), Device: uint16(d),
			Rev: uint8(p.num("rev", 16, 8)), Mode: kv["mode"], Attrs: kv}
		if p.err != nil {
			return p.err
		}
		if vd.Mode != "modern" && vd.Mode != "legacy" {
			return fmt.Errorf("%w: mode %q", ErrMalformed, vd.Mode)
		}
		n.Device = vd
	case "features":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		f := &Features{
			Offered:    p.num("offered", 16, 64),
			OfferedHi:  p.num("offered_hi", 16, 64),
			Wanted:     p.num("wanted", 16, 64),
			Negotiated: p.num("negotiated", 16, 64),
			Status:     uint8(p.num("status", 16, 8)),
		}
		if p.err != nil {
			return p.err
		}
		n.Features = f
	case "config":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		c := &NetConfig{
			MAC:        kv["mac"],
			Status:     uint16(p.num("status", 16, 16)),
			MaxPairs:   uint16(p.num("max_pairs", 10, 16)),
			MTU:        uint16(p.num("mtu", 10, 16)),
			Generation: uint8(p.num("generation", 10, 8)),
		}
		if p.err != nil {
			return p.err
		}
		if len(c.MAC) != 17 {
			return fmt.Errorf("%w: mac %q", ErrMalformed, c.MAC)
		}
		n.Config = c
	case "queues":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		q := &Queues{Num: uint16(p.num("num", 10, 16))}
		if p.err != nil {
			return p.err
		}
		sizes, ok := kv["sizes"]
		if !ok {
			return fmt.Errorf("%w: queues without sizes", ErrMalformed)
		}
		if sizes != "" {
			for _, s := range strings.Split(sizes, ",") {
				v, err := parseNumStr(s, "queue size", 10, 16)
				if err != nil {
					return err
				}
				q.Sizes = append(q.Sizes, uint16(v))
			}
		}
		n.Queues = q
	case "msix":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		m := &MSIX{
			TableSize: uint16(p.num("table_size", 10, 16)),
			Enabled:   p.num("enabled", 10, 1) == 1,
			Config:    uint16(p.num("config", 16, 16)),
			RX:        uint16(p.num("rx", 16, 16)),
			TX:        uint16(p.num("tx", 16, 16)),
			Ctrl:      uint16(p.num("ctrl", 16, 16)),
		}
		if p.err != nil {
			return p.err
		}
		n.MSIX = m
	case "rings":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return err
		}
		r := &Rings{}
		for _, q := range []struct {
			key       string
			idx, size *uint16
		}{{"rx", nil, &r.RXSize}, {"tx", nil, &r.TXSize}, {"ctrl", &r.CtrlIndex, &r.CtrlSize}} {
			is, ss, ok := strings.Cut(kv[q.key], ":")
			i, err1 := strconv.ParseUint(is, 10, 16)
			s, err2 := strconv.ParseUint(ss, 10, 16)
			if !ok || err1 != nil || err2 != nil {
				return fmt.Errorf("%w: ring %s=%q", ErrMalformed, q.key, kv[q.key])
			}
			if q.idx != nil {
				*q.idx = uint16(i)
			}
			*q.size = uint16(s)
		}
		p := numParser{kv: kv}
		r.HdrLen = uint8(p.num("hdr_len", 10, 8))
		r.EventIdx = p.num("event_idx", 10, 1) == 1
		if p.err != nil {
			return p.err
		}
		n.Rings = r
	case "done":
		kv, err := parseKV(strings.Fields(rest))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		d := &VirtioDone{Status: uint8(p.num("status", 16, 8)), ResetStatus: uint8(p.num("reset", 16, 8))}
		if p.err != nil {
			return p.err
		}
		ks := strings.Split(kv["kicks"], ",")
		if len(ks) != 3 {
			return fmt.Errorf("%w: kicks %q", ErrMalformed, kv["kicks"])
		}
		for i, s := range ks {
			v, err := parseNumStr(s, "kicks", 10, 32)
			if err != nil {
				return err
			}
			d.Kicks[i] = uint32(v)
		}
		n.Done = d
	default:
		return fmt.Errorf("%w: virtio %q", ErrMalformed, kind)
	}
	return nil
}

func parseCtrl(rest string) (CtrlResult, error) {
	kv, err := parseKV(strings.Fields(rest))
	if err != nil {
		return CtrlResult{}, err
	}
	p := numParser{kv: kv}
	c := CtrlResult{
		N:     uint32(p.num("n", 10, 32)),
		Class: uint8(p.num("class", 10, 8)),
		Cmd:   uint8(p.num("cmd", 10, 8)),
		Len:   uint32(p.num("len", 10, 32)),
	}
	if p.err != nil {
		return c, p.err
	}
	switch a := kv["ack"]; a {
	case "timeout":
		c.Ack = CtrlAckTimeout
	case "none":
		c.Ack = CtrlAckNone
	case "error":
		c.Ack = CtrlAckError
	default:
		v, err := parseNumStr(a, "ack", 10, 8)
		if err != nil {
			return c, err
		}
		c.Ack = int(v)
		c.UsedLen = uint32(p.num("used_len", 10, 32))
	}
	return c, p.err
}

func parseRx(rest string) (RxPacket, error) {
	kv, err := parseKV(strings.Fields(rest))
	if err != nil {
		return RxPacket{}, err
	}
	p := numParser{kv: kv}
	r := RxPacket{
		N:          uint32(p.num("n", 10, 32)),
		Len:        uint32(p.num("len", 10, 32)),
		Bufs:       uint32(p.num("bufs", 10, 32)),
		Flags:      uint8(p.num("flags", 16, 8)),
		GSOType:    uint8(p.num("gso_type", 16, 8)),
		HdrLen:     uint16(p.num("hdr_len", 10, 16)),
		GSOSize:    uint16(p.num("gso_size", 10, 16)),
		CsumStart:  uint16(p.num("csum_start", 10, 16)),
		CsumOffset: uint16(p.num("csum_offset", 10, 16)),
		NumBuffers: uint16(p.num("num_buffers", 10, 16)),
		Sum:        uint32(p.num("sum", 16, 32)),
	}
	return r, p.err
}

// maxRxData bounds the bytes collected from rxdata lines of one packet.
const maxRxData = 1 << 20

func (o *Output) parseRxData(rest string) error {
	words := strings.Fields(rest)
	if len(words) != 3 {
		return fmt.Errorf("%w: rxdata needs n=, off= and hex", ErrMalformed)
	}
	kv, err := parseKV(words[:2])
	if err != nil {
		return err
	}
	p := numParser{kv: kv}
	idx := uint32(p.num("n", 10, 32))
	off := p.num("off", 10, 32)
	if p.err != nil {
		return p.err
	}
	b, err := hex.DecodeString(words[2])
	if err != nil {
		return fmt.Errorf("%w: rxdata hex: %w", ErrMalformed, err)
	}
	n := o.net()
	if n.pendingData == nil {
		n.pendingData = make(map[uint32][]byte)
	}
	cur := n.pendingData[idx]
	if uint64(len(cur)) != off || len(cur)+len(b) > maxRxData {
		return fmt.Errorf("%w: rxdata n=%d off=%d after %d bytes", ErrMalformed, idx, off, len(cur))
	}
	n.pendingData[idx] = append(cur, b...)
	return nil
}
