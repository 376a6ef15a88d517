package protocol

import (
	"bufio"
	"bytes"
	"fmt"
	"math/big"
	"strconv"
	"strings"
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
//	rscvm-agent: sink bytes=1048576 sha256=<64 hex>
//	rscvm-agent: source bytes=1048576 sha256=<64 hex>
//	rscvm-agent: rx packets=12 bytes=3456
//	rscvm-agent: tx packets=12 bytes=3456
//	rscvm-agent: set rx-gro-hw=off ok
//	rscvm-agent: error <what>: <why>
//	rscvm-agent: done errors=0
//
// addr= and gw= of link appear only when configured. After done the agent
// powers the machine off.
const (
	LineReady    = "ready"
	LineModules  = "modules"
	LineLink     = "link"
	LineFeatures = "features"
	LineOffloads = "offloads"
	LineSink     = "sink"
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
