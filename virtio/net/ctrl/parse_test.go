package ctrl

import (
	"errors"
	"testing"

	"github.com/rscvm/rscvm/virtio/queue"
	"github.com/rscvm/rscvm/virtio/queue/queuetest"
	"github.com/stretchr/testify/require"
)

var _ Source = (*queue.Reader)(nil)

// chunkSource is a Source over data split into pieces, like a descriptor
// chain. It records how many bytes were consumed.
type chunkSource struct {
	chunks [][]byte
	read   int
}

func newChunkSource(data []byte, sizes ...int) *chunkSource {
	c := &chunkSource{}
	for _, n := range sizes {
		n = min(n, len(data))
		c.chunks = append(c.chunks, data[:n])
		data = data[n:]
	}
	if len(data) > 0 {
		c.chunks = append(c.chunks, data)
	}
	return c
}

func (c *chunkSource) Available() int {
	n := 0
	for _, b := range c.chunks {
		n += len(b)
	}
	return n
}

func (c *chunkSource) ReadFull(p []byte) error {
	if len(p) > c.Available() {
		return errors.New("short")
	}
	for len(p) > 0 {
		k := copy(p, c.chunks[0])
		p = p[k:]
		c.read += k
		c.chunks[0] = c.chunks[0][k:]
		if len(c.chunks[0]) == 0 {
			c.chunks = c.chunks[1:]
		}
	}
	return nil
}

func cmdBytes(class, cmd uint8, payload []byte) []byte {
	return append([]byte{class, cmd}, payload...)
}

func TestParseCommandSplit(t *testing.T) {
	payload := macTable([]MAC{uc1, otherUC}, []MAC{mc1})
	raw := cmdBytes(ClassMAC, MACTableSet, payload)
	// Linux: header, unicast table, multicast table in separate
	// descriptors; also byte-by-byte and a header split in two.
	splits := [][]int{
		{2, 4 + 12, 4 + 6},
		{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
		{1, 5, 0, 0, 7},
		{len(raw)},
	}
	for _, sp := range splits {
		src := newChunkSource(append([]byte{}, raw...), sp...)
		class, cmd, got, err := ParseCommand(src, nil)
		require.NoError(t, err)
		require.Equal(t, ClassMAC, class)
		require.Equal(t, MACTableSet, cmd)
		require.Equal(t, payload, got)
		require.Zero(t, src.Available())
	}
}

func TestParseCommandBuffer(t *testing.T) {
	buf := make([]byte, 0, 64)
	_, _, p, err := ParseCommand(newChunkSource(cmdBytes(ClassRX, RXPromisc, []byte{1})), buf)
	require.NoError(t, err)
	require.Equal(t, []byte{1}, p)
	require.Equal(t, &buf[:1][0], &p[0], "payload reuses buf")

	_, _, p, err = ParseCommand(newChunkSource(cmdBytes(ClassMAC, MACTableSet, make([]byte, 100))), buf)
	require.NoError(t, err)
	require.Len(t, p, 100, "buffer too small: a new one")

	class, cmd, p, err := ParseCommand(newChunkSource([]byte{ClassAnnounce, AnnounceAck}), buf)
	require.NoError(t, err)
	require.Equal(t, ClassAnnounce, class)
	require.Equal(t, AnnounceAck, cmd)
	require.Empty(t, p)
}

func TestParseCommandErrors(t *testing.T) {
	for _, raw := range [][]byte{nil, {ClassRX}} {
		src := newChunkSource(raw)
		_, _, _, err := ParseCommand(src, nil)
		require.ErrorIs(t, err, ErrMissingHeader)
		require.Zero(t, src.read, "nothing consumed")
		_, _, _, err = ParseBytes(raw)
		require.ErrorIs(t, err, ErrMissingHeader)
	}

	// Exactly MaxPayloadSize is fine, one more is refused without reading it.
	ok := cmdBytes(ClassMAC, MACTableSet, make([]byte, MaxPayloadSize))
	_, _, p, err := ParseCommand(newChunkSource(ok, 2, 4096), nil)
	require.NoError(t, err)
	require.Len(t, p, MaxPayloadSize)

	big := cmdBytes(ClassMAC, MACTableSet, make([]byte, MaxPayloadSize+1))
	src := newChunkSource(big, 2, 4096)
	class, cmd, p, err := ParseCommand(src, nil)
	require.ErrorIs(t, err, ErrTooLarge)
	require.Equal(t, ClassMAC, class)
	require.Equal(t, MACTableSet, cmd)
	require.Nil(t, p)
	require.Equal(t, HeaderSize, src.read, "only the header is read")

	class, cmd, p, err = ParseBytes(big)
	require.ErrorIs(t, err, ErrTooLarge)
	require.Equal(t, ClassMAC, class)
	require.Equal(t, MACTableSet, cmd)
	require.Nil(t, p)
}

func TestParseBytes(t *testing.T) {
	raw := cmdBytes(ClassVLAN, VLANAdd, le16(7))
	class, cmd, p, err := ParseBytes(raw)
	require.NoError(t, err)
	require.Equal(t, ClassVLAN, class)
	require.Equal(t, VLANAdd, cmd)
	require.Equal(t, le16(7), p)
	require.Equal(t, &raw[2], &p[0], "payload aliases the input")
}

// TestControlQueueChain drives a real split virtqueue: the driver posts a
// command split over three readable descriptors and a 1-byte writable ack,
// the device parses it from the chain's Reader, handles it and writes the
// ack.
func TestControlQueueChain(t *testing.T) {
	d := queuetest.New(t, 16, 1<<20)
	q := d.NewQueue(t, queue.Features{})
	s := New(fullConfig(), testMAC)

	post := func(bufs ...queuetest.Buffer) *queue.Chain {
		_, err := d.AddChain(bufs...)
		require.NoError(t, err)
		c, err := q.Pop()
		require.NoError(t, err)
		require.NotNil(t, c)
		return c
	}
	handle := func(c *queue.Chain) uint8 {
		require.GreaterOrEqual(t, int(c.WritableLen()), AckSize)
		class, cmd, payload, err := ParseCommand(c.Reader(), nil)
		require.NoError(t, err)
		ack, _ := s.Handle(class, cmd, payload)
		_, err = c.Writer().Write([]byte{ack})
		require.NoError(t, err)
		ackBuf := make([]byte, 1)
		copy(ackBuf, c.Writable()[0])
		return ackBuf[0]
	}

	full := macTable([]MAC{uc1}, []MAC{mc1, mc2})
	// Multicast table one byte short: AckErr, nothing changes.
	c := post(
		queuetest.R([]byte{ClassMAC, MACTableSet}),
		queuetest.R(full[:4+6]),
		queuetest.R(full[4+6:len(full)-1]),
		queuetest.W(1),
	)
	snap := *s
	require.Equal(t, AckErr, handle(c))
	require.Equal(t, snap, *s)

	c = post(
		queuetest.R([]byte{ClassMAC, MACTableSet}),
		queuetest.R(full[:4+6]),
		queuetest.R(full[4+6:]),
		queuetest.W(1),
	)
	require.Equal(t, AckOK, handle(c))
	require.Equal(t, MACTable{Unicast: []MAC{uc1}, Multicast: []MAC{mc1, mc2}}, s.MACTable())

	c = post(queuetest.R([]byte{ClassGuestOffloads}), queuetest.R([]byte{GuestOffloadsSet}),
		queuetest.R(le64(offCSUM|OffloadRSCExt)), queuetest.W(1))
	require.Equal(t, AckOK, handle(c))
	require.Equal(t, offCSUM, s.Offloads())
}

// lyingSource reports more bytes than it can deliver (a buggy Source must
// give an error, not a panic or a partial command).
type lyingSource struct {
	avail   int
	okReads int
}

func (l *lyingSource) Available() int { return l.avail }

func (l *lyingSource) ReadFull(p []byte) error {
	if l.okReads == 0 {
		return errors.New("lying source")
	}
	l.okReads--
	return nil
}

func TestParseCommandBrokenSource(t *testing.T) {
	_, _, _, err := ParseCommand(&lyingSource{avail: 10}, nil)
	require.ErrorContains(t, err, "reading header")
	_, _, p, err := ParseCommand(&lyingSource{avail: 10, okReads: 1}, nil)
	require.ErrorContains(t, err, "reading 10 payload bytes")
	require.Nil(t, p)
}
