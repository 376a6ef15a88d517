package protocol

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every result line of the agent. Kernel messages may precede
// it on the same console line, so look for it anywhere in a line.
const Prefix = "rscvm-agent: "

// Result line kinds (the first word after Prefix). The full formats:
//
//	rscvm-agent: ready
//	rscvm-agent: modules kver=6.1.0-56-cloud-amd64 loaded=8
//	rscvm-agent: link eth0 up mac=52:54:00:12:34:56 addr=10.0.2.15/24 gw=10.0.2.2
//	rscvm-agent: features eth0 0x0000010130afffa7
//	rscvm-agent: offloads eth0 rx-checksumming=on tx-checksumming=on ... rx-gro-hw=off ...
//	rscvm-agent: sink listening port=5001
//	rscvm-agent: sink bytes=1048576 sha256=<64 hex> ns=52817345
//	rscvm-agent: drain listening port=5001
//	rscvm-agent: drain bytes=1048576 ns=41234567
//	rscvm-agent: source bytes=1048576 sha256=<64 hex>
//	rscvm-agent: rx packets=12 bytes=3456
//	rscvm-agent: tx packets=12 bytes=3456
//	rscvm-agent: set rx-gro-hw=off ok
//	rscvm-agent: error <what>: <why>
//	rscvm-agent: done errors=0
//
// addr= and gw= of link appear only when configured. ns= of sink and drain
// is the transfer time in nanoseconds by the guest's monotonic clock, from
// the accepted connection to EOF (agents before it was added print no ns=).
// After done the agent powers the machine off.
const (
	LineReady    = "ready"
	LineModules  = "modules"
	LineLink     = "link"
	LineFeatures = "features"
	LineOffloads = "offloads"
	LineSink     = "sink"
	LineDrain    = "drain"
	LineSource   = "source"
	LineRX       = "rx"
	LineTX       = "tx"
	LineSet      = "set"
	LineError    = "error"
	LineDone     = "done"
)

// Line is one parsed result line.
type Line struct {
	// Kind is the first word after Prefix.
	Kind string
	// Args are the remaining space-separated words.
	Args []string
	// Values holds the Args of the form key=value.
	Values map[string]string
	// Text is everything after Prefix.
	Text string
}

// Value returns Values[key] and whether it is present.
func (l Line) Value(key string) (string, bool) {
	v, ok := l.Values[key]
	return v, ok
}

// Uint returns Values[key] as an unsigned number.
func (l Line) Uint(key string) (uint64, error) {
	v, ok := l.Values[key]
	if !ok {
		return 0, fmt.Errorf("%s line has no %s=", l.Kind, key)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s line: %s=%q: %w", l.Kind, key, v, err)
	}
	return n, nil
}

// Duration returns Values[key], a whole number of nanoseconds, as a
// duration.
func (l Line) Duration(key string) (time.Duration, error) {
	n, err := l.Uint(key)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("%s line: %s=%d: out of range", l.Kind, key, n)
	}
	return time.Duration(n), nil
}

// Keys of the sink and drain result lines.
const (
	KeyBytes  = "bytes"
	KeySHA256 = "sha256"
	// KeyNanoseconds is the transfer time (see Line.Duration).
	KeyNanoseconds = "ns"
)

// FormatSink builds the sink result line: n bytes read with the given
// SHA-256 (hex) in d, from the accepted connection to EOF.
func FormatSink(n int64, sha256Hex string, d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return Format(LineSink,
		KeyBytes+"="+strconv.FormatInt(n, 10),
		KeySHA256+"="+sha256Hex,
		KeyNanoseconds+"="+strconv.FormatInt(int64(d), 10))
}

// FormatDrain builds the drain result line: n bytes read in d.
func FormatDrain(n int64, d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return Format(LineDrain,
		KeyBytes+"="+strconv.FormatInt(n, 10),
		KeyNanoseconds+"="+strconv.FormatInt(int64(d), 10))
}

// SinkResult is a parsed sink or drain result line.
type SinkResult struct {
	Bytes uint64
	// SHA256 is the hex hash of a sink line, "" for drain.
	SHA256   string
	Duration time.Duration
}

// ParseSink parses a sink or drain result line (not the "listening" lines).
// It needs ns=, so it fails on the lines of agents before ns= was added.
func ParseSink(l Line) (SinkResult, error) {
	if l.Kind != LineSink && l.Kind != LineDrain {
		return SinkResult{}, fmt.Errorf("%s line, want %s or %s", l.Kind, LineSink, LineDrain)
	}
	n, err := l.Uint(KeyBytes)
	if err != nil {
		return SinkResult{}, err
	}
	sum, ok := l.Value(KeySHA256)
	if !ok && l.Kind == LineSink {
		return SinkResult{}, fmt.Errorf("%s line has no %s=", l.Kind, KeySHA256)
	}
	d, err := l.Duration(KeyNanoseconds)
	if err != nil {
		return SinkResult{}, err
	}
	return SinkResult{Bytes: n, SHA256: sum, Duration: d}, nil
}

// ParseLine extracts the agent result from one console line; ok is false if
// the line holds none.
func ParseLine(s string) (l Line, ok bool) {
	i := strings.Index(s, Prefix)
	if i < 0 {
		return Line{}, false
	}
	text := strings.TrimRight(s[i+len(Prefix):], "\r\n ")
	words := strings.Fields(text)
	if len(words) == 0 {
		return Line{}, false
	}
	l = Line{Kind: words[0], Args: words[1:], Values: map[string]string{}, Text: text}
	for _, w := range l.Args {
		if k, v, found := strings.Cut(w, "="); found && k != "" {
			l.Values[k] = v
		}
	}
	return l, true
}

// ParseOutput returns the agent result lines of a console transcript in order.
func ParseOutput(out []byte) []Line {
	var lines []Line
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if l, ok := ParseLine(sc.Text()); ok {
			lines = append(lines, l)
		}
	}
	return lines
}

// Format builds a result line (without newline) from a kind and its words.
func Format(kind string, args ...string) string {
	if len(args) == 0 {
		return Prefix + kind
	}
	return Prefix + kind + " " + strings.Join(args, " ")
}

// FormatError builds an error line.
func FormatError(what string, err error) string {
	s := what
	if err != nil {
		s += ": " + err.Error()
	}
	return Format(LineError, strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "\r", " "))
}

// FeatureBitsToHex converts the contents of /sys/bus/virtio/devices/*/features
// (one '0' or '1' per feature bit, bit 0 first) to a hex number with at least
// 16 digits, e.g. "0x0000010130afffa7".
func FeatureBitsToHex(bits string) (string, error) {
	bits = strings.TrimRight(bits, "\n")
	if bits == "" {
		return "", fmt.Errorf("empty feature bit string")
	}
	if len(bits) > 4096 {
		return "", fmt.Errorf("feature bit string of %d characters", len(bits))
	}
	n := new(big.Int)
	for i := 0; i < len(bits); i++ {
		switch bits[i] {
		case '1':
			n.SetBit(n, i, 1)
		case '0':
		default:
			return "", fmt.Errorf("feature bit string: character %q at %d", bits[i], i)
		}
	}
	return fmt.Sprintf("0x%016x", n), nil
}

// ParseFeatures parses the hex number of a features line.
func ParseFeatures(hex string) (*big.Int, error) {
	s, ok := strings.CutPrefix(hex, "0x")
	if !ok || s == "" {
		return nil, fmt.Errorf("features %q: want 0x<hex>", hex)
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		return nil, fmt.Errorf("features %q: not hex", hex)
	}
	return n, nil
}
