package tap

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

var (
	hostIP  = net.IPv4(10, 9, 0, 1).To4()
	guestIP = net.IPv4(10, 9, 0, 2).To4()
)

// frameReader reads frames from a queue the way a device rx worker does: Wait, then ReadV into a header
// buffer and a frame buffer.
type frameReader struct {
	q     *Queue
	hdr   []byte
	frame []byte
}

func newFrameReader(q *Queue) *frameReader {
	return &frameReader{q: q, hdr: make([]byte, q.VnetHdrSize()), frame: make([]byte, 65550)}
}

// next returns the next frame accepted by match, skipping others (IPv6 router solicitations and the like).
func (r *frameReader) next(timeout time.Duration, match func(h vnetHdr, f []byte) bool) (vnetHdr, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	iovs := [][]byte{r.hdr, r.frame}
	for {
		n, err := r.q.ReadV(iovs)
		if errors.Is(err, ErrWouldBlock) {
			if _, err := r.q.Wait(ctx, Readable); err != nil {
				return vnetHdr{}, nil, fmt.Errorf("%w: %v", errNoFrame, err)
			}
			continue
		}
		if err != nil {
			return vnetHdr{}, nil, err
		}
		if n < len(r.hdr) {
			return vnetHdr{}, nil, fmt.Errorf("short read %d", n)
		}
		h := parseVnetHdr(r.hdr)
		f := append([]byte(nil), r.frame[:n-len(r.hdr)]...)
		if match(h, f) {
			return h, f, nil
		}
	}
}

// writeFrame writes a virtio-net header and a frame as two iovecs.
func writeFrame(t testing.TB, q *Queue, h vnetHdr, frame []byte) {
	t.Helper()
	n, err := q.WriteV([][]byte{h.bytes(), frame})
	require.NoError(t, err)
	require.Equal(t, vnetHdrLen+len(frame), n)
}

func TestARPAndICMPThroughKernel(t *testing.T) {
	ns := newNetns(t)
	tp := ns.openUp(t, Config{Name: "dp0"}, hostIP.String())
	hostMAC, err := tp.MAC()
	require.NoError(t, err)
	pkt := ns.packetSocket(t, "dp0", false)
	q := tp.Queue(0)
	rd := newFrameReader(q)

	// Guest -> host: an ARP request for the host address, answered by the kernel.
	req := ether(bcastMAC, guestMAC, etherTypeARP, arp(1, guestMAC, guestIP, make(net.HardwareAddr, 6), hostIP))
	writeFrame(t, q, vnetHdr{}, req)

	h, f, err := rd.next(2*time.Second, func(_ vnetHdr, f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == etherTypeARP && binary.BigEndian.Uint16(f[20:]) == 2
	})
	require.NoError(t, err)
	require.Equal(t, vnetHdr{}, h, "no offload on an ARP reply")
	require.Equal(t, []byte(guestMAC), f[0:6])
	require.Equal(t, []byte(hostMAC), f[6:12])
	require.Equal(t, []byte(hostMAC), f[22:28], "sender hardware address")
	require.Equal(t, []byte(hostIP), f[28:32], "sender protocol address")
	require.Equal(t, []byte(guestMAC), f[32:38])
	require.Equal(t, []byte(guestIP), f[38:42])

	// The same frame is visible on the host side of the tap (AF_PACKET bound to it).
	require.NoError(t, waitPacket(pkt, 2*time.Second, func(b []byte, pkttype uint8) bool {
		return pkttype != unix.PACKET_OUTGOING && bytes.Equal(b, req)
	}))

	// Guest -> host ICMP echo; the kernel's echo reply comes back fully checksummed.
	payload := []byte("rscvm tap echo payload 0123456789")
	echo := ether(hostMAC, guestMAC, etherTypeIPv4, ipv4(guestIP, hostIP, protoICMP, 7, icmpEcho(8, 0x1234, 1, payload)))
	writeFrame(t, q, vnetHdr{}, echo)
	h, f, err = rd.next(2*time.Second, func(_ vnetHdr, f []byte) bool {
		p, ok := parseIPv4Frame(f)
		return ok && p.proto == protoICMP && len(p.l4) >= 8 && p.l4[0] == 0
	})
	require.NoError(t, err)
	require.Equal(t, uint8(0), h.Flags)
	require.Equal(t, uint8(gsoNone), h.GSOType)
	p, _ := parseIPv4Frame(f)
	require.Equal(t, []byte(guestMAC), f[0:6])
	require.True(t, p.src.Equal(hostIP))
	require.True(t, p.dst.Equal(guestIP))
	require.Zero(t, checksum(p.hdr), "IP header checksum")
	require.True(t, p.l4ChecksumOK(), "ICMP checksum")
	require.Equal(t, uint16(0x1234), binary.BigEndian.Uint16(p.l4[4:]))
	require.Equal(t, uint16(1), binary.BigEndian.Uint16(p.l4[6:]))
	require.Equal(t, payload, p.l4[8:])

	// Single-buffer Read/Write work the same way.
	writeFrame(t, q, vnetHdr{}, req)
	buf := make([]byte, 2048)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		n, err := q.Read(buf)
		if errors.Is(err, ErrWouldBlock) {
			require.NoError(t, q.WaitReadable(ctx))
			continue
		}
		require.NoError(t, err)
		if fr := buf[vnetHdrLen:n]; len(fr) >= 42 && binary.BigEndian.Uint16(fr[12:]) == etherTypeARP {
			require.Equal(t, uint16(2), binary.BigEndian.Uint16(fr[20:]))
			break
		}
	}

	// A frame shorter than the header is rejected by the kernel.
	_, err = q.Write(make([]byte, 4))
	require.ErrorIs(t, err, unix.EINVAL)
}

// waitPacket reads the AF_PACKET socket until match accepts a frame or the timeout expires.
func waitPacket(fd int, timeout time.Duration, match func(b []byte, pkttype uint8) bool) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 70000)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EAGAIN {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, _ = unix.Poll(pfd, int(time.Until(deadline)/time.Millisecond)+1)
			continue
		}
		if err != nil {
			return err
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		if ll != nil && match(buf[:n], ll.Pkttype) {
			return nil
		}
	}
	return errNoFrame
}

// TestGuestChecksumAndUSOWrite writes UDP frames the way a guest with HOST offloads does and checks what the
// kernel delivers to a UDP socket: a bad full checksum is dropped, NEEDS_CSUM is completed by the kernel, and a
// GSO_UDP_L4 super-frame is split into gso_size datagrams.
func TestGuestChecksumAndUSOWrite(t *testing.T) {
	ns := newNetns(t)
	tp := ns.openUp(t, Config{Name: "dp1"}, hostIP.String())
	hostMAC, err := tp.MAC()
	require.NoError(t, err)
	ns.run(t, "ip", "neigh", "replace", guestIP.String(), "lladdr", guestMAC.String(), "dev", "dp1", "nud", "permanent")
	var conn net.PacketConn
	require.NoError(t, ns.do(func() (err error) {
		conn, err = net.ListenPacket("udp4", hostIP.String()+":5555")
		return err
	}))
	defer conn.Close()
	q := tp.Queue(0)

	recv := func(timeout time.Duration) ([]byte, error) {
		buf := make([]byte, 65536)
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		n, _, err := conn.ReadFrom(buf)
		return buf[:n], err
	}
	frame := func(id uint16, l4 []byte) []byte {
		return ether(hostMAC, guestMAC, etherTypeIPv4, ipv4(guestIP, hostIP, protoUDP, id, l4))
	}

	// Full checksum, no offload.
	good := udp(guestIP, hostIP, 4000, 5555, []byte("full checksum"))
	writeFrame(t, q, vnetHdr{}, frame(1, good))
	got, err := recv(2 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "full checksum", string(got))

	// Corrupted checksum, no offload: dropped.
	bad := udp(guestIP, hostIP, 4000, 5555, []byte("bad checksum"))
	bad[6] ^= 0x55
	writeFrame(t, q, vnetHdr{}, frame(2, bad))
	_, err = recv(200 * time.Millisecond)
	require.Error(t, err, "a frame with a wrong checksum must be dropped")

	// Partial checksum (NEEDS_CSUM): the checksum field holds the pseudo-header sum only.
	partial := func(sport uint16, data []byte) []byte {
		l4 := udp(guestIP, hostIP, sport, 5555, data)
		binary.BigEndian.PutUint16(l4[6:], csumFold(pseudoSum(guestIP, hostIP, protoUDP, len(l4))))
		return l4
	}
	writeFrame(t, q, vnetHdr{Flags: vnetFlagNeedsCsum, CsumStart: 34, CsumOffset: 6}, frame(3, partial(4000, []byte("partial checksum"))))
	got, err = recv(2 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "partial checksum", string(got))

	// Guest USO: one 1400-byte UDP super-datagram with gso_size 500 arrives as 500+500+400.
	data := bytes.Repeat([]byte("0123456789"), 140)
	writeFrame(t, q, vnetHdr{Flags: vnetFlagNeedsCsum, GSOType: gsoUDPL4, HdrLen: 42, GSOSize: 500, CsumStart: 34, CsumOffset: 6},
		frame(4, partial(4001, data)))
	var sizes []int
	var all []byte
	for len(all) < len(data) {
		got, err := recv(2 * time.Second)
		require.NoError(t, err, "after %v", sizes)
		sizes = append(sizes, len(got))
		all = append(all, got...)
	}
	require.Equal(t, []int{500, 500, 400}, sizes)
	require.Equal(t, data, all)
}

// fakeTCPGuest answers one TCP handshake on the tap as the "guest" and collects the data frames the kernel then
// sends (without acknowledging them, so the first flight is all there is).
type tcpRx struct {
	hdr   vnetHdr
	frame []byte
	data  int // TCP payload bytes
}

func fakeTCPGuest(rd *frameReader, hostMAC net.HardwareAddr, port uint16, want int) ([]tcpRx, error) {
	isTCP := func(_ vnetHdr, f []byte) bool {
		p, ok := parseIPv4Frame(f)
		return ok && p.proto == protoTCP && len(p.l4) >= 20 && binary.BigEndian.Uint16(p.l4[2:]) == port
	}
	_, syn, err := rd.next(5*time.Second, isTCP)
	if err != nil {
		return nil, fmt.Errorf("waiting for SYN: %w", err)
	}
	p, _ := parseIPv4Frame(syn)
	if p.l4[13]&tcpSYN == 0 {
		return nil, fmt.Errorf("first segment flags %#x, want SYN", p.l4[13])
	}
	sport := binary.BigEndian.Uint16(p.l4[0:])
	hostSeq := binary.BigEndian.Uint32(p.l4[4:])
	const guestISN = 0x10000000
	mss := []byte{2, 4, 0x05, 0xb4} // MSS 1460, no window scaling, no timestamps
	synack := tcp(guestIP, hostIP, port, sport, guestISN, hostSeq+1, tcpSYN|tcpACK, 65535, mss, nil)
	if _, err := rd.q.WriteV([][]byte{vnetHdr{}.bytes(), ether(hostMAC, guestMAC, etherTypeIPv4, ipv4(guestIP, hostIP, protoTCP, 1, synack))}); err != nil {
		return nil, fmt.Errorf("writing SYN-ACK: %w", err)
	}
	var out []tcpRx
	total := 0
	for total < want {
		h, f, err := rd.next(2*time.Second, isTCP)
		if err != nil {
			return out, fmt.Errorf("after %d bytes: %w", total, err)
		}
		p, _ := parseIPv4Frame(f)
		doff := int(p.l4[12]>>4) * 4
		n := len(p.l4) - doff
		if n <= 0 {
			continue // the handshake's final ACK
		}
		out = append(out, tcpRx{hdr: h, frame: f, data: n})
		total += n
	}
	return out, nil
}

// TestTCPGSOReceive has the kernel send TCP to the fake guest: with TUN_F_TSO4 the first flight arrives as GSO
// super-frames (gso_type TCPV4, gso_size = MSS, partial checksum), without offloads as MSS-sized frames with full
// checksums.
func TestTCPGSOReceive(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offload Offload
	}{
		{"tso4", OffloadCSUM | OffloadTSO4 | OffloadTSO6},
		{"csum only", OffloadCSUM},
		{"none", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t)
			tp := ns.openUp(t, Config{Name: "gso0"}, hostIP.String())
			applied, err := tp.SetOffload(tc.offload)
			require.NoError(t, err)
			require.Equal(t, tc.offload, applied)
			hostMAC, err := tp.MAC()
			require.NoError(t, err)
			ns.run(t, "ip", "neigh", "replace", guestIP.String(), "lladdr", guestMAC.String(), "dev", "gso0", "nud", "permanent")
			rd := newFrameReader(tp.Queue(0))

			const port = 7777
			const want = 10 * 1460 // the initial congestion window
			type result struct {
				frames []tcpRx
				err    error
			}
			res := make(chan result, 1)
			go func() {
				f, err := fakeTCPGuest(rd, hostMAC, port, want)
				res <- result{f, err}
			}()
			var conn net.Conn
			require.NoError(t, ns.do(func() (err error) {
				conn, err = net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", guestIP, port), 5*time.Second)
				return err
			}))
			defer conn.Close()
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			go func() { _, _ = conn.Write(make([]byte, 64<<10)) }()
			r := <-res
			require.NoError(t, r.err)

			var gsoFrames, total int
			for _, rx := range r.frames {
				total += rx.data
				p, ok := parseIPv4Frame(rx.frame)
				require.True(t, ok)
				require.Zero(t, checksum(p.hdr), "IP header checksum")
				if tc.offload&OffloadCSUM != 0 {
					require.Equal(t, uint8(vnetFlagNeedsCsum), rx.hdr.Flags&vnetFlagNeedsCsum)
					require.Equal(t, uint16(34), rx.hdr.CsumStart)
					require.Equal(t, uint16(16), rx.hdr.CsumOffset)
				} else {
					require.Zero(t, rx.hdr.Flags&vnetFlagNeedsCsum)
					require.True(t, p.l4ChecksumOK(), "TCP checksum without TUN_F_CSUM")
				}
				if rx.hdr.GSOType != gsoNone {
					gsoFrames++
					require.Equal(t, uint8(gsoTCPv4), rx.hdr.GSOType)
					require.Equal(t, uint16(1460), rx.hdr.GSOSize)
					require.Greater(t, rx.data, 1460)
				} else {
					require.LessOrEqual(t, rx.data, 1460)
					require.LessOrEqual(t, len(rx.frame), 1514)
				}
			}
			t.Logf("offload %s: %d frames, %d GSO, %d bytes", tc.offload, len(r.frames), gsoFrames, total)
			if tc.offload&OffloadTSO4 != 0 {
				require.Positive(t, gsoFrames, "expected GSO super-frames with TUN_F_TSO4")
			} else {
				require.Zero(t, gsoFrames)
				require.GreaterOrEqual(t, len(r.frames), want/1460)
			}
		})
	}
}

func TestMultiqueueTraffic(t *testing.T) {
	ns := newNetns(t)
	tp := ns.openUp(t, Config{Name: "mqt0", Queues: 2}, hostIP.String())
	pkt := ns.packetSocket(t, "mqt0", false)
	for i, q := range tp.Queues() {
		// Each queue can send: the kernel answers every ARP request on some queue.
		spa := net.IPv4(10, 9, 0, byte(10+i)).To4()
		mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i)}
		req := ether(bcastMAC, mac, etherTypeARP, arp(1, mac, spa, make(net.HardwareAddr, 6), hostIP))
		writeFrame(t, q, vnetHdr{}, req)
		require.NoError(t, waitPacket(pkt, 2*time.Second, func(b []byte, pkttype uint8) bool {
			return pkttype != unix.PACKET_OUTGOING && bytes.Equal(b, req)
		}), "frame written on queue %d not seen on the host", i)

		found := false
		deadline := time.Now().Add(2 * time.Second)
		for !found && time.Now().Before(deadline) {
			for _, rq := range tp.Queues() {
				_, f, err := newFrameReader(rq).next(50*time.Millisecond, func(_ vnetHdr, f []byte) bool {
					return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == etherTypeARP && bytes.Equal(f[0:6], mac)
				})
				if err == nil && f != nil {
					found = true
					break
				}
			}
		}
		require.True(t, found, "no ARP reply for the request sent on queue %d", i)
	}
}

func TestPoller(t *testing.T) {
	ns := newNetns(t)
	tp := ns.openUp(t, Config{Name: "pl0"}, hostIP.String())
	q := tp.Queue(0)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := NewPoller(ctx)
	require.NoError(t, err)
	defer p.Close()
	kick, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(kick)
	const tokTap, tokKick = 1, 2
	require.NoError(t, p.Add(q.Fd(), Readable, tokTap))
	require.NoError(t, p.Add(kick, Readable, tokKick))

	ready := make([]Ready, 4)
	n, err := p.Wait(ready, 10*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n, "nothing ready yet")

	// Wake from another goroutine interrupts an infinite wait.
	go func() { time.Sleep(20 * time.Millisecond); _ = p.Wake() }()
	n, err = p.Wait(ready, -1)
	require.NoError(t, err)
	require.Zero(t, n)

	// A kick.
	require.NoError(t, signalEventfd(kick))
	n, err = p.Wait(ready, time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, Ready{Token: tokKick, Events: Readable}, ready[0])
	drainEventfd(kick)

	// The kernel answers an ARP request: the tap becomes readable.
	req := ether(bcastMAC, guestMAC, etherTypeARP, arp(1, guestMAC, guestIP, make(net.HardwareAddr, 6), hostIP))
	writeFrame(t, q, vnetHdr{}, req)
	n, err = p.Wait(ready, 2*time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, uint32(tokTap), ready[0].Token)
	require.NotZero(t, ready[0].Events&Readable)

	// Stop polling the tap (no guest buffers): only the kick is reported.
	require.NoError(t, p.Modify(q.Fd(), 0, tokTap))
	n, err = p.Wait(ready, 10*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, p.Remove(q.Fd()))

	// Cancelling the context ends a pending Wait.
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err = p.Wait(ready, -1)
	require.ErrorIs(t, err, context.Canceled)
	_, err = p.Wait(ready, -1)
	require.ErrorIs(t, err, context.Canceled)

	// Queue.Wait: readiness, Wake, context.
	ev, err := q.Wait(context.Background(), Readable)
	require.NoError(t, err)
	require.NotZero(t, ev&Readable, "the ARP reply is still queued")
	for {
		if _, err := q.Read(make([]byte, 2048)); err != nil {
			require.ErrorIs(t, err, ErrWouldBlock)
			break
		}
	}
	go func() { time.Sleep(20 * time.Millisecond); _ = q.Wake() }()
	ev, err = q.Wait(context.Background(), Readable)
	require.NoError(t, err)
	require.Zero(t, ev, "woken, nothing readable")
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer wcancel()
	_, err = q.Wait(wctx, Readable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	ev, err = q.Wait(context.Background(), Writable)
	require.NoError(t, err)
	require.Equal(t, Writable, ev)

	// No allocations in the steady state.
	allocs := testing.AllocsPerRun(100, func() { _, _ = p.Wait(ready, 0) })
	require.Zero(t, allocs)
}
