package testguest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// PacketSocket is an AF_PACKET raw socket bound to the TAP inside a
// namespace: frames written to it leave through the TAP towards the VMM (the
// guest receives them); frames the guest transmits arrive on it.
type PacketSocket struct {
	fd      int
	ifindex int
	buf     []byte
}

// maxFrame bounds one frame read from the socket (a 64 KiB GSO frame plus headers).
const maxFrame = 65536 + 256

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenPacketSocket opens a packet socket on interface ifname of the namespace.
func (n *Netns) OpenPacketSocket(ifname string) (*PacketSocket, error) {
	p := &PacketSocket{fd: -1, buf: make([]byte, maxFrame)}
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
		return nil
	})
	if err != nil {
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
	for {
		_, err := unix.Write(p.fd, frame)
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

// Close closes the socket.
func (p *PacketSocket) Close() error {
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}
