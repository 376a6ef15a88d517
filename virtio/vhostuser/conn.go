package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// conn reads and writes vhost-user messages on a connected Unix stream
// socket. File descriptors arrive as SCM_RIGHTS with a message's first bytes.
type conn struct {
	uc   *net.UnixConn
	hdr  [HeaderSize]byte
	body [MaxPayload]byte
	oob  []byte
	out  [HeaderSize + MaxPayload]byte
}

func newConn(uc *net.UnixConn) *conn {
	return &conn{uc: uc, oob: make([]byte, unix.CmsgSpace(MaxFDs*4))}
}

// message is one received request. payload aliases the conn's buffer until
// the next read; the handler owns files (and must close those it does not
// keep).
type message struct {
	hdr     Header
	payload []byte
	files   []*os.File
}

// closeFiles closes the message's descriptors that the handler did not take.
func (m *message) closeFiles() {
	for i, f := range m.files {
		if f != nil {
			_ = f.Close()
			m.files[i] = nil
		}
	}
}

// take returns descriptor i and removes it from the message.
func (m *message) take(i int) *os.File {
	if i >= len(m.files) {
		return nil
	}
	f := m.files[i]
	m.files[i] = nil
	return f
}

// read receives one message. io.EOF means the frontend closed the socket
// between messages; any other error leaves the stream unusable.
func (c *conn) read() (*message, error) {
	n, oobn, _, _, err := c.uc.ReadMsgUnix(c.hdr[:], c.oob)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("vhost-user: recvmsg: %w", err)
	}
	var files []*os.File
	if oobn > 0 {
		files, err = parseRights(c.oob[:oobn])
		if err != nil {
			return nil, err
		}
	}
	fail := func(err error) (*message, error) {
		for _, f := range files {
			_ = f.Close()
		}
		return nil, err
	}
	if n == 0 {
		return fail(io.EOF)
	}
	if n < HeaderSize {
		if err := c.readFull(c.hdr[n:]); err != nil {
			return fail(err)
		}
	}
	h := Header(c.hdr[:])
	if err := h.Check(); err != nil {
		return fail(err)
	}
	size := int(h.Size())
	if err := c.readFull(c.body[:size]); err != nil {
		return fail(err)
	}
	return &message{hdr: h, payload: c.body[:size], files: files}, nil
}

func (c *conn) readFull(p []byte) error {
	if _, err := io.ReadFull(c.uc, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("vhost-user: frontend closed the socket inside a message: %w", io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("vhost-user: read: %w", err)
	}
	return nil
}

// parseRights extracts SCM_RIGHTS descriptors, refusing more than MaxFDs.
func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("vhost-user: control message: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "vhost-user-fd"))
		}
	}
	if len(files) > MaxFDs {
		for _, f := range files {
			_ = f.Close()
		}
		return nil, fmt.Errorf("%w: %d descriptors (at most %d)", ErrFDs, len(files), MaxFDs)
	}
	return files, nil
}

// reply sends a reply with the given payload.
func (c *conn) reply(req Request, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("vhost-user: reply of %d bytes", len(payload))
	}
	putHeader(c.out[:], req, len(payload))
	n := copy(c.out[HeaderSize:], payload)
	return c.write(c.out[:HeaderSize+n])
}

func (c *conn) write(p []byte) error {
	if _, err := c.uc.Write(p); err != nil {
		return fmt.Errorf("vhost-user: write: %w", err)
	}
	return nil
}
