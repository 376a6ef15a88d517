package testguest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rscvm/rscvm/net/header"
	"golang.org/x/sys/unix"
)

// PacketSocket is an AF_PACKET raw socket bound to the TAP inside a
// namespace: frames written to it leave through the TAP towards the VMM (the
// guest receives them); frames the guest transmits arrive on it.
type PacketSocket struct {
	fd      int
	vfd     int // a second socket with PACKET_VNET_HDR, for WriteVnet
	ifindex int
	buf     []byte
}

// maxFrame bounds one frame read from the socket (a 64 KiB GSO frame plus headers).
const maxFrame = 65536 + 256

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenPacketSocket opens a packet socket on interface ifname of the namespace.
func (n *Netns) OpenPacketSocket(ifname string) (*PacketSocket, error) {
	p := &PacketSocket{fd: -1, vfd: -1, buf: make([]byte, maxFrame)}
	err := n.Do(func() error {
		idx, err := interfaceIndex(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK,
			int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("testguest: packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("testguest: bind packet socket to %s: %w", ifname, err)
		}
		// Bursts from the guest must not be dropped while the test is busy.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		p.fd, p.ifindex = fd, idx

		// Send-only socket whose writes start with a virtio_net_hdr: GSO and
		// partial-checksum frames. Protocol 0 keeps it from receiving.
		vfd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("testguest: packet socket: %w", err)
		}
		p.vfd = vfd
		if err := unix.SetsockoptInt(vfd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fmt.Errorf("testguest: PACKET_VNET_HDR: %w", err)
		}
		if err := unix.Bind(vfd, &unix.SockaddrLinklayer{Ifindex: idx}); err != nil {
			return fmt.Errorf("testguest: bind packet socket to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

func interfaceIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("testguest: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("testguest: interface %q: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("testguest: interface %q: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

// Write sends one Ethernet frame (no virtio header) to the guest.
func (p *PacketSocket) Write(frame []byte) error {
	return writeRetry(p.fd, frame)
}

// WriteVnet sends one frame with virtio-net header information, as a local
// sender with offloads would: hdr.Flags NEEDS_CSUM with CsumStart/CsumOffset
// for a partial checksum (see header.TCPFrame.PartialChecksumHdr), GSOType,
// GSOSize and HdrLen for a GSO super-frame longer than the MTU. The TAP hands
// the header to the VMM (its NumBuffers is not sent).
func (p *PacketSocket) WriteVnet(hdr header.VirtioNetHdr, frame []byte) error {
	b := make([]byte, header.VirtioNetHdrLegacySize, header.VirtioNetHdrLegacySize+len(frame))
	if err := hdr.EncodeLegacy(b); err != nil {
		return fmt.Errorf("testguest: encode virtio header: %w", err)
	}
	return writeRetry(p.vfd, append(b, frame...))
}

func writeRetry(fd int, frame []byte) error {
	for {
		_, err := unix.Write(fd, frame)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) {
			time.Sleep(time.Millisecond) // the TAP queue is full: let the VMM read
			continue
		}
		if err != nil {
			return fmt.Errorf("testguest: inject %d-byte frame: %w", len(frame), err)
		}
		return nil
	}
}

// Read returns the next frame the guest transmitted (frames this host sent
// out through the TAP are skipped), waiting until ctx ends. The returned slice
// is a copy.
func (p *PacketSocket) Read(ctx context.Context) ([]byte, error) {
	for {
		n, from, err := unix.Recvfrom(p.fd, p.buf, unix.MSG_TRUNC)
		switch {
		case err == nil:
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if n > len(p.buf) {
				return nil, fmt.Errorf("testguest: %d-byte frame exceeds %d", n, len(p.buf))
			}
			return append([]byte(nil), p.buf[:n]...), nil
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		default:
			return nil, fmt.Errorf("testguest: read packet socket: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("testguest: waiting for a guest frame: %w", err)
		}
		wait := 100 * time.Millisecond
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			wait = max(time.Until(dl), time.Millisecond)
		}
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(wait/time.Millisecond)); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("testguest: poll packet socket: %w", err)
		}
	}
}

// Close closes the sockets.
func (p *PacketSocket) Close() error {
	var errs []error
	for _, fd := range []*int{&p.fd, &p.vfd} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}
