package virtionet

import (
	"encoding/json"
	"sync"

	"github.com/rscvm/rscvm/rsc"
)

// QueueStats are the counters of one queue pair. They accumulate over the
// device's lifetime (device resets do not clear them).
type QueueStats struct {
	Pair int `json:"pair"`

	RxPackets uint64 `json:"rx_packets"` // frames (or coalesced packets) placed in the receive ring
	RxBytes   uint64 `json:"rx_bytes"`   // their Ethernet bytes, virtio-net header excluded
	RxBuffers uint64 `json:"rx_buffers"` // receive chains completed (mergeable packets use several)
	// Receive drops by reason.
	RxDropFiltered uint64 `json:"rx_drop_filtered"`  // rejected by the rx-mode/MAC/VLAN filter
	RxDropLinkDown uint64 `json:"rx_drop_link_down"` // link down
	RxDropGSO      uint64 `json:"rx_drop_gso"`       // GSO type the driver did not enable
	RxDropCsum     uint64 `json:"rx_drop_csum"`      // checksum offsets outside the frame
	RxDropTooBig   uint64 `json:"rx_drop_too_big"`   // larger than a non-mergeable chain, or than MaxFrameSize
	RxDropShort    uint64 `json:"rx_drop_short"`     // shorter than an Ethernet header
	RxDropBackend  uint64 `json:"rx_drop_backend"`   // backend read errors
	RxDropReset    uint64 `json:"rx_drop_reset"`     // held frames discarded by a reset or an unusable queue
	// RxBadBuffers counts chains unusable for receive (writable part
	// shorter than the header), returned with used length 0.
	RxBadBuffers uint64 `json:"rx_bad_buffers"`
	// RxCsumCompleted counts NEEDS_CSUM frames completed in software for a
	// driver without GUEST_CSUM.
	RxCsumCompleted uint64 `json:"rx_csum_completed"`
	// RxRingFull counts the times reception stopped because the ring had no
	// buffers (back-pressure; nothing is dropped).
	RxRingFull      uint64 `json:"rx_ring_full"`
	RxNotifications uint64 `json:"rx_notifications"`

	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	// Transmit drops by reason (the chain is completed).
	TxDropShort    uint64 `json:"tx_drop_short"`     // no frame after the header, or shorter than an Ethernet header
	TxDropTooBig   uint64 `json:"tx_drop_too_big"`   // frame larger than MaxFrameSize
	TxDropGSO      uint64 `json:"tx_drop_gso"`       // GSO type not negotiated (HOST_*), unknown, or gso_size 0
	TxDropCsum     uint64 `json:"tx_drop_csum"`      // csum_start+csum_offset+2 beyond the frame
	TxDropLinkDown uint64 `json:"tx_drop_link_down"` // link down
	TxDropBackend  uint64 `json:"tx_drop_backend"`   // the backend refused the frame
	// TxBackPressure counts the times the backend would block.
	TxBackPressure  uint64 `json:"tx_back_pressure"`
	TxNotifications uint64 `json:"tx_notifications"`

	// RSC are the coalescing engine's counters (nil when RSC never ran on
	// this queue).
	RSC *RSCStats `json:"rsc,omitempty"`
}

// RSCStats are the receive segment coalescing counters of a queue, named as
// QEMU's VirtioNetRscStat fields where they exist (same meaning where our
// behaviour matches), plus Microsoft's RSC statistics and rscvm's own.
type RSCStats struct {
	Received       uint64 `json:"received"`
	Coalesced      uint64 `json:"coalesced"`
	OverSize       uint64 `json:"over_size"`
	Cache          uint64 `json:"cache"`
	EmptyCache     uint64 `json:"empty_cache"`
	NoMatchCache   uint64 `json:"no_match_cache"`
	WinUpdate      uint64 `json:"win_update"`
	TCPSyn         uint64 `json:"tcp_syn"`
	TCPCtrlDrain   uint64 `json:"tcp_ctrl_drain"`
	DupAck         uint64 `json:"dup_ack"`
	PureAck        uint64 `json:"pure_ack"`
	AckOutOfWin    uint64 `json:"ack_out_of_win"`
	DataOutOfWin   uint64 `json:"data_out_of_win"`
	DataOutOfOrder uint64 `json:"data_out_of_order"`
	BypassNotTCP   uint64 `json:"bypass_not_tcp"`
	TCPAllOpt      uint64 `json:"tcp_all_opt"`
	IPFrag         uint64 `json:"ip_frag"`
	IPECN          uint64 `json:"ip_ecn"`
	IPHacked       uint64 `json:"ip_hacked"`
	IPOption       uint64 `json:"ip_option"`
	DrainFailed    uint64 `json:"drain_failed"`
	Timer          uint64 `json:"timer"`

	Frames      uint64 `json:"frames"`
	BypassNotIP uint64 `json:"bypass_not_ip"`
	BadChecksum uint64 `json:"bad_checksum"`
	HostGSO     uint64 `json:"host_gso"`
	TCPECN      uint64 `json:"tcp_ecn"`
	Mismatch    uint64 `json:"mismatch"`
	Timestamp   uint64 `json:"timestamp"`
	TooLarge    uint64 `json:"too_large"`
	Batch       uint64 `json:"batch"`
	Evictions   uint64 `json:"evictions"`
	Delivered   uint64 `json:"delivered"`
	Passthrough uint64 `json:"passthrough"`
	Singles     uint64 `json:"singles"`
	Discarded   uint64 `json:"discarded"`
	Pending     int    `json:"pending"`

	CoalesceEvents    uint64 `json:"coalesce_events"`
	CoalescedSegments uint64 `json:"coalesced_segments"`
	CoalescedBytes    uint64 `json:"coalesced_bytes"`
	Aborts            uint64 `json:"aborts"`
}

func rscStatsFrom(s rsc.Stats) RSCStats {
	return RSCStats{
		Received: s.Received, Coalesced: s.Coalesced, OverSize: s.OverSize, Cache: s.Cache,
		EmptyCache: s.EmptyCache, NoMatchCache: s.NoMatchCache, WinUpdate: s.WinUpdate,
		TCPSyn: s.TCPSyn, TCPCtrlDrain: s.TCPCtrlDrain, DupAck: s.DupAck, PureAck: s.PureAck,
		AckOutOfWin: s.AckOutOfWin, DataOutOfWin: s.DataOutOfWin, DataOutOfOrder: s.DataOutOfOrder,
		BypassNotTCP: s.BypassNotTCP, TCPAllOpt: s.TCPAllOpt, IPFrag: s.IPFrag, IPECN: s.IPECN,
		IPHacked: s.IPHacked, IPOption: s.IPOption, DrainFailed: s.DrainFailed, Timer: s.Timer,
		Frames: s.Frames, BypassNotIP: s.BypassNotIP, BadChecksum: s.BadChecksum, HostGSO: s.HostGSO,
		TCPECN: s.TCPECN, Mismatch: s.Mismatch, Timestamp: s.Timestamp, TooLarge: s.TooLarge,
		Batch: s.Batch, Evictions: s.Evictions, Delivered: s.Delivered, Passthrough: s.Passthrough,
		Singles: s.Singles, Discarded: s.Discarded, Pending: s.Pending,
		CoalesceEvents: s.CoalesceEvents, CoalescedSegments: s.CoalescedSegments,
		CoalescedBytes: s.CoalescedBytes, Aborts: s.Aborts,
	}
}

// plus returns s with o added field by field.
func (s RSCStats) plus(o RSCStats) RSCStats {
	s.Received += o.Received
	s.Coalesced += o.Coalesced
	s.OverSize += o.OverSize
	s.Cache += o.Cache
	s.EmptyCache += o.EmptyCache
	s.NoMatchCache += o.NoMatchCache
	s.WinUpdate += o.WinUpdate
	s.TCPSyn += o.TCPSyn
	s.TCPCtrlDrain += o.TCPCtrlDrain
	s.DupAck += o.DupAck
	s.PureAck += o.PureAck
	s.AckOutOfWin += o.AckOutOfWin
	s.DataOutOfWin += o.DataOutOfWin
	s.DataOutOfOrder += o.DataOutOfOrder
	s.BypassNotTCP += o.BypassNotTCP
	s.TCPAllOpt += o.TCPAllOpt
	s.IPFrag += o.IPFrag
	s.IPECN += o.IPECN
	s.IPHacked += o.IPHacked
	s.IPOption += o.IPOption
	s.DrainFailed += o.DrainFailed
	s.Timer += o.Timer
	s.Frames += o.Frames
	s.BypassNotIP += o.BypassNotIP
	s.BadChecksum += o.BadChecksum
	s.HostGSO += o.HostGSO
	s.TCPECN += o.TCPECN
	s.Mismatch += o.Mismatch
	s.Timestamp += o.Timestamp
	s.TooLarge += o.TooLarge
	s.Batch += o.Batch
	s.Evictions += o.Evictions
	s.Delivered += o.Delivered
	s.Passthrough += o.Passthrough
	s.Singles += o.Singles
	s.Discarded += o.Discarded
	s.CoalesceEvents += o.CoalesceEvents
	s.CoalescedSegments += o.CoalescedSegments
	s.CoalescedBytes += o.CoalescedBytes
	s.Aborts += o.Aborts
	return s
}

// CtrlStats are the control queue's counters.
type CtrlStats struct {
	Commands  uint64 `json:"commands"`  // commands answered
	Errors    uint64 `json:"errors"`    // answered with VIRTIO_NET_ERR
	Malformed uint64 `json:"malformed"` // chains without header or ack byte
}

// Stats is a snapshot of the device's counters.
type Stats struct {
	Queues []QueueStats `json:"queues"`
	Ctrl   CtrlStats    `json:"ctrl"`
}

// JSON returns the snapshot as indented JSON.
func (s Stats) JSON() ([]byte, error) { return json.MarshalIndent(s, "", "  ") }

// pairStats is the published copy of a worker's counters.
type pairStats struct {
	mu  sync.Mutex
	s   QueueStats
	rsc RSCStats
	has bool // rsc is valid
	// rscBase are the RSC counters of the pair's earlier activations (each
	// activation starts a new engine): the counters are cumulative, as the
	// queue counters are.
	rscBase RSCStats
}

// Stats returns a snapshot of the counters. Workers publish their counters
// at the end of every batch, so a snapshot may lag the datapath by one
// batch.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	out := Stats{Ctrl: d.ctrlStats}
	ps := d.pairStats
	d.mu.Unlock()
	for _, p := range ps {
		p.mu.Lock()
		q := p.s
		if p.has {
			r := p.rsc
			q.RSC = &r
		}
		p.mu.Unlock()
		out.Queues = append(out.Queues, q)
	}
	return out
}
