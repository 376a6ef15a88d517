package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/rscvm/rscvm/guestimages/agent/protocol"
)

// transferResult is what sink and source report.
type transferResult struct {
	Bytes  int64
	SHA256 string
}

// copyBufSize is large enough for TSO/GRO-sized reads and writes.
const copyBufSize = 256 * 1024

// listenSink listens on TCP port (all addresses, IPv4 and IPv6).
func listenSink(ctx context.Context, port uint16) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("", strconv.Itoa(int(port))))
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return ln, nil
}

// acceptSink accepts one connection on ln, reads it to EOF and hashes it.
// ln is closed on return.
func acceptSink(ctx context.Context, ln net.Listener) (transferResult, error) {
	r, _, err := acceptSinkTimed(ctx, ln, true)
	return r, err
}

// acceptSinkTimed is acceptSink that also returns how long the transfer
// took: from the accepted connection to EOF (or the error), by the
// monotonic clock. Without hash it only counts (SHA256 stays empty).
func acceptSinkTimed(ctx context.Context, ln net.Listener, hash bool) (transferResult, time.Duration, error) {
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	c, err := ln.Accept()
	if err != nil {
		if ctx.Err() != nil {
			return transferResult{}, 0, fmt.Errorf("accept: %w", ctx.Err())
		}
		return transferResult{}, 0, fmt.Errorf("accept: %w", err)
	}
	start := time.Now()
	defer c.Close()
	stopConn := context.AfterFunc(ctx, func() { c.Close() })
	defer stopConn()
	h := sha256.New()
	// Reads of copyBufSize straight from the connection (io.Copy would
	// go through TCPConn.WriteTo and its 32 KiB buffer).
	buf := make([]byte, copyBufSize)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if hash {
			h.Write(buf[:k])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return transferResult{Bytes: n}, time.Since(start), fmt.Errorf("read after %d bytes: %w", n, err)
		}
	}
	d := time.Since(start)
	if !hash {
		return transferResult{Bytes: n}, d, nil
	}
	return transferResult{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, d, nil
}

// source connects to addr and sends n payload bytes (see sendPayload).
func source(ctx context.Context, addr string, n int64) (transferResult, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return transferResult{}, fmt.Errorf("connect: %w", err)
	}
	return sendPayload(ctx, c, n)
}

// sendPayload sends n payload bytes on c, half-closes it and waits for the
// peer to close, so that all data is acknowledged before the agent powers
// off. c is closed on return.
func sendPayload(ctx context.Context, c net.Conn, n int64) (transferResult, error) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	h := sha256.New()
	w := io.MultiWriter(c, h)
	sent, err := io.CopyBuffer(w, io.LimitReader(protocol.NewPayload(n), n), make([]byte, copyBufSize))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return transferResult{Bytes: sent}, fmt.Errorf("write after %d bytes: %w", sent, err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil {
			return transferResult{Bytes: sent}, fmt.Errorf("shutdown: %w", err)
		}
		_, _ = io.Copy(io.Discard, c)
	}
	return transferResult{Bytes: sent, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
