package serial

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rscvm/rscvm/devices/bus"
	"github.com/stretchr/testify/require"
)

// line records interrupt level changes.
type line struct {
	mu     sync.Mutex
	levels []bool
}

func (l *line) SetLevel(high bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.levels = append(l.levels, high)
	return nil
}

// take returns and forgets the recorded transitions.
func (l *line) take() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.levels
	l.levels = nil
	return v
}

func (l *line) high() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.levels) > 0 && l.levels[len(l.levels)-1]
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newUART(t *testing.T) (*UART, *line, *syncBuffer) {
	t.Helper()
	l := &line{}
	out := &syncBuffer{}
	u := New(Config{Out: out, IRQ: l})
	t.Cleanup(func() { require.NoError(t, u.Close()) })
	return u, l, out
}

func in(u *UART, reg uint64) uint8 {
	b := []byte{0}
	u.Read(reg, b)
	return b[0]
}

func out(u *UART, reg uint64, v uint8) { u.Write(reg, []byte{v}) }

func flush(t *testing.T, u *UART) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, u.Flush(ctx))
}

func TestResetState(t *testing.T) {
	u, l, _ := newUART(t)
	require.Equal(t, uint8(0x60), in(u, regLSR), "THR and transmitter empty, no data")
	require.Equal(t, uint8(0x01), in(u, regIIR), "no interrupt, FIFOs off")
	require.Equal(t, uint8(0xB0), in(u, regMSR), "DCD, DSR and CTS asserted by the far end")
	require.Equal(t, uint8(0), in(u, regIER))
	require.Equal(t, uint8(0), in(u, regLCR))
	require.Equal(t, uint8(0), in(u, regMCR))
	require.Equal(t, uint8(0), in(u, regData), "empty RBR")
	require.Empty(t, l.take())
}

func TestScratchAndIERMask(t *testing.T) {
	u, _, _ := newUART(t)
	for _, v := range []uint8{0x55, 0xAA, 0x00, 0xFF} {
		out(u, regSCR, v)
		require.Equal(t, v, in(u, regSCR))
	}
	out(u, regIER, 0xF0)
	require.Equal(t, uint8(0), in(u, regIER), "IER bits 4-7 do not exist on a 16550A (XScale UUE probe)")
	out(u, regMCR, 0xFF)
	require.Equal(t, uint8(0x1F), in(u, regMCR))
	out(u, regLSR, 0x00)
	require.Equal(t, uint8(0x60), in(u, regLSR), "LSR writes are ignored")
}

func TestWideAccessNotDecoded(t *testing.T) {
	u, _, _ := newUART(t)
	b := []byte{0, 0}
	u.Read(regSCR, b)
	require.Equal(t, []byte{0xFF, 0xFF}, b)
	u.Write(regSCR, []byte{1, 2})
	require.Equal(t, uint8(0), in(u, regSCR))
	u.Read(Size, b[:1])
	require.Equal(t, uint8(0xFF), b[0])
	u.Write(Size+100, b[:1])
	u.Read(0, nil)
}

func TestDLAB(t *testing.T) {
	u, _, o := newUART(t)
	out(u, regIER, ierRDA)
	out(u, regLCR, lcrDLAB|0x03)
	require.Equal(t, uint8(0x0C), in(u, regData), "power-on divisor 12 (9600 baud)")
	require.Equal(t, uint8(0x00), in(u, regIER))
	out(u, regData, 0x01) // 115200
	out(u, regIER, 0x02)
	require.Equal(t, uint8(0x01), in(u, regData))
	require.Equal(t, uint8(0x02), in(u, regIER))
	require.Equal(t, uint8(0x83), in(u, regLCR))

	out(u, regLCR, 0x03)
	require.Equal(t, uint8(ierRDA), in(u, regIER), "IER untouched by divisor writes")
	out(u, regData, 'x')
	flush(t, u)
	require.Equal(t, "x", o.String(), "divisor writes are not transmitted")
	out(u, regLCR, lcrDLAB)
	require.Equal(t, uint8(0x01), in(u, regData))
	require.Equal(t, uint8(0x02), in(u, regIER))
}

func TestOutput(t *testing.T) {
	u, l, o := newUART(t)
	for _, c := range []byte("Linux version 6.x\r\n") {
		require.NotZero(t, in(u, regLSR)&lsrTHRE)
		out(u, regData, c)
	}
	flush(t, u)
	require.Equal(t, "Linux version 6.x\r\n", o.String())
	require.Empty(t, l.take(), "no interrupts with IER=0")
	require.Zero(t, u.Dropped())
}

func TestTHREInterrupt(t *testing.T) {
	u, l, _ := newUART(t)
	out(u, regIER, ierTHRE)
	require.Equal(t, []bool{true}, l.take(), "enabling ETBEI with THR empty raises THRE")
	require.Equal(t, uint8(iirTHRE), in(u, regIIR), "IIR read reports THRE ...")
	require.Equal(t, []bool{false}, l.take(), "... and clears it")
	require.Equal(t, uint8(iirNoInt), in(u, regIIR))

	out(u, regData, 'a')
	require.Equal(t, []bool{true}, l.take(), "THR empties again after the byte moves out")

	out(u, regData, 'b')
	require.Equal(t, []bool{false, true}, l.take(), "a THR write clears THRE, transmission re-raises it: new edge")

	out(u, regIER, 0)
	require.Equal(t, []bool{false}, l.take())
	require.Equal(t, uint8(iirNoInt), in(u, regIIR))

	// IER rising edge re-raises even after the IIR read cleared it.
	out(u, regIER, ierTHRE)
	require.Equal(t, []bool{true}, l.take())
	in(u, regIIR)
	require.Equal(t, []bool{false}, l.take())
	out(u, regIER, ierTHRE) // no edge on ETBEI: stays clear
	require.Empty(t, l.take())
	require.Equal(t, uint8(iirNoInt), in(u, regIIR))
}

// TestLinuxTHRETest replays serial8250_do_startup's check for UARTs that do
// not re-assert THRE; a good 16550A passes it.
func TestLinuxTHRETest(t *testing.T) {
	u, _, _ := newUART(t)
	out(u, regIER, ierTHRE)
	iir1 := in(u, regIIR)
	out(u, regIER, 0)
	out(u, regIER, ierTHRE)
	iir := in(u, regIIR)
	out(u, regIER, 0)
	require.Zero(t, iir1&iirNoInt)
	require.Zero(t, iir&iirNoInt)
}

func TestRXInterruptAndFIFO(t *testing.T) {
	u, l, _ := newUART(t)
	require.Equal(t, 1, u.Receive([]byte("ab")), "FIFOs disabled: one holding register")
	require.Empty(t, l.take(), "RX interrupt not enabled")
	require.Equal(t, uint8(lsrDR|lsrTHRE|lsrTEMT), in(u, regLSR))
	out(u, regIER, ierRDA)
	require.Equal(t, []bool{true}, l.take())
	require.Equal(t, uint8(iirRDA), in(u, regIIR))
	require.Equal(t, uint8('a'), in(u, regData))
	require.Equal(t, []bool{false}, l.take())
	require.Equal(t, uint8(lsrTHRE|lsrTEMT), in(u, regLSR))

	out(u, regIIR, 0x81) // FIFO on, trigger 8
	require.Equal(t, uint8(iirFIFO|iirNoInt), in(u, regIIR), "IIR bits 6-7 report the FIFO (16550A, not 16750)")
	data := []byte("0123456789abcdefXYZ")
	require.Equal(t, FIFODepth, u.Receive(data))
	require.Equal(t, []bool{true}, l.take())
	require.Equal(t, uint8(iirFIFO|iirRDA), in(u, regIIR), "at/above trigger level")
	for i := 0; i < 10; i++ {
		require.Equal(t, data[i], in(u, regData))
	}
	require.Equal(t, uint8(iirFIFO|iirTimeout), in(u, regIIR), "below trigger level: character timeout")
	out(u, regIIR, 0x83) // clear RX FIFO
	require.Equal(t, []bool{false}, l.take())
	require.Zero(t, in(u, regLSR)&lsrDR)

	require.Equal(t, 2, u.Receive([]byte("hi")))
	out(u, regIIR, 0x00) // FIFO off: FIFOs are reset
	require.Zero(t, in(u, regLSR)&lsrDR)
	require.Equal(t, uint8(iirNoInt), in(u, regIIR))
}

func TestInterruptPriority(t *testing.T) {
	u, l, _ := newUART(t)
	out(u, regIIR, 0x01)
	out(u, regIER, ierRDA|ierTHRE|ierRLS|ierMS)
	require.Equal(t, uint8(iirFIFO|iirTHRE), in(u, regIIR))
	out(u, regIER, 0) // drop everything, then re-enable for a fresh THRE
	l.take()

	// Overrun via loopback to get a line-status interrupt.
	out(u, regMCR, mcrLoop)
	require.Equal(t, uint8(msrDCTS|msrDDSR|msrDDCD), in(u, regMSR), "entering loopback drops the far-end lines")
	for i := 0; i < FIFODepth+1; i++ {
		out(u, regData, byte(i))
	}
	out(u, regIER, ierRDA|ierTHRE|ierRLS|ierMS)
	require.Equal(t, uint8(iirFIFO|iirRLS), in(u, regIIR), "line status has the highest priority")
	lsr := in(u, regLSR)
	require.Equal(t, uint8(lsrOE|lsrDR|lsrTHRE|lsrTEMT|0x80), lsr)
	require.Equal(t, uint8(iirFIFO|iirRDA), in(u, regIIR), "LSR read cleared OE; RX data next")
	for i := 0; i < FIFODepth; i++ {
		require.Equal(t, byte(i), in(u, regData))
	}
	require.Equal(t, uint8(iirFIFO|iirTHRE), in(u, regIIR), "then THRE")
	require.Equal(t, uint8(iirFIFO|iirNoInt), in(u, regIIR), "THRE cleared by the IIR read")

	// Modem status change in loopback (lowest priority).
	out(u, regMCR, mcrLoop|mcrRTS)
	require.Equal(t, uint8(iirFIFO|iirMS), in(u, regIIR))
	require.Equal(t, uint8(msrCTS|msrDCTS), in(u, regMSR))
	require.Equal(t, uint8(iirFIFO|iirNoInt), in(u, regIIR), "MSR read clears the deltas")
	require.False(t, l.high())
}

func TestLoopback(t *testing.T) {
	u, _, o := newUART(t)
	// Linux autoconfig: MCR = LOOP | OUT2 | RTS must read MSR[7:4] = DCD|CTS.
	out(u, regMCR, mcrLoop|0x0A)
	require.Equal(t, uint8(0x90), in(u, regMSR)&0xF0)
	out(u, regMCR, mcrLoop|mcrDTR|mcrOUT1)
	require.Equal(t, uint8(msrDSR|msrRI), in(u, regMSR)&0xF0)
	out(u, regMCR, mcrLoop)
	require.Equal(t, uint8(msrTERI|msrDDSR), in(u, regMSR)&0x0F, "RI trailing edge and DSR change")

	out(u, regData, 'L')
	require.Equal(t, 0, u.Receive([]byte("x")), "receiver disconnected from the line in loopback")
	require.Equal(t, uint8(lsrDR|lsrTHRE|lsrTEMT), in(u, regLSR))
	require.Equal(t, uint8('L'), in(u, regData))
	out(u, regData, 'M')
	out(u, regData, 'N') // FIFOs off: overrun, 'N' lost
	require.NotZero(t, in(u, regLSR)&lsrOE)
	require.Equal(t, uint8('M'), in(u, regData))

	out(u, regMCR, 0)
	require.Equal(t, uint8(0xB0), in(u, regMSR)&0xF0, "far-end lines back")
	flush(t, u)
	require.Empty(t, o.String(), "loopback bytes never reach the output")
}

type chunkReader struct {
	data []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data[:min(len(r.data), 7)])
	r.data = r.data[n:]
	return n, nil
}

func TestPumpBackpressure(t *testing.T) {
	u, _, _ := newUART(t)
	out(u, regIIR, 0x01)
	want := []byte(strings.Repeat("the quick brown fox ", 20))
	errc := make(chan error, 1)
	go func() { errc <- u.Pump(context.Background(), &chunkReader{data: append([]byte(nil), want...)}) }()

	var got []byte
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		if in(u, regLSR)&lsrDR == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		got = append(got, in(u, regData))
	}
	require.Equal(t, string(want), string(got), "nothing dropped although the FIFO holds 16 bytes")
	require.NoError(t, <-errc)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestPumpCancelAndError(t *testing.T) {
	u, _, _ := newUART(t)
	require.ErrorContains(t, u.Pump(context.Background(), errReader{}), "boom")

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- u.Pump(ctx, bytes.NewReader([]byte("xy"))) }() // FIFOs off: 'y' waits
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Pump did not stop on cancel")
	}
	require.Equal(t, uint8('x'), in(u, regData))
}

// gate is a writer that blocks until released.
type gate struct {
	release chan struct{}
	buf     syncBuffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.release
	return g.buf.Write(p)
}

func TestOutputBackpressure(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	l := &line{}
	u := New(Config{Out: g, IRQ: l, TxBuffer: 4})
	defer u.Close()

	out(u, regIER, ierTHRE)
	require.Equal(t, []bool{true}, l.take())
	in(u, regIIR)
	l.take()
	// The writer takes the first byte and blocks; then 4 more fill the buffer.
	out(u, regData, '0')
	require.Eventually(t, func() bool { return !u.tx.full() && u.tx.inFlightNow() }, 5*time.Second, time.Millisecond)
	for _, c := range []byte("1234") {
		out(u, regData, c)
	}
	require.Zero(t, in(u, regLSR)&(lsrTHRE|lsrTEMT), "buffer full: transmitter busy")
	require.False(t, l.high(), "no THRE interrupt while busy")
	out(u, regData, 'X')
	require.Equal(t, uint64(1), u.Dropped())

	close(g.release)
	require.Eventually(t, func() bool { return l.high() }, 5*time.Second, time.Millisecond, "THRE re-raised once drained")
	require.NotZero(t, in(u, regLSR)&lsrTHRE)
	flush(t, u)
	require.Equal(t, "01234", g.buf.String())
}

func TestCloseAndAttach(t *testing.T) {
	o := &syncBuffer{}
	u := New(Config{Out: o})
	pio := bus.New("pio")
	require.NoError(t, u.Attach(pio, COM1Base))
	require.Error(t, u.Attach(pio, COM1Base+4))
	for _, c := range []byte("bye") {
		require.True(t, pio.Write(COM1Base, []byte{c}))
	}
	require.NoError(t, u.Close())
	require.NoError(t, u.Close())
	require.Equal(t, "bye", o.String(), "Close flushes")
	out(u, regData, '!')
	require.Equal(t, uint64(1), u.Dropped())
}

func BenchmarkTHRWrite(b *testing.B) {
	u := New(Config{Out: io.Discard, IRQ: &line{}})
	defer u.Close()
	d := []byte{'x'}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		u.Write(regData, d)
	}
}
