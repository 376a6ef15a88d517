// Package protocol is the contract between rscvm's guest agent (the /init of
// the test initramfs) and the host half of a test: the kernel command-line
// parameters that tell the agent what to do, the result lines it prints on
// the console, and the deterministic payload it sends and expects.
//
// Command line (all optional except rscvm.agent):
//
//	rscvm.agent=ACTION[,ACTION...]   what to do, in order
//	rscvm.ip=10.0.2.15/24            address for the interface (IPv4 or IPv6)
//	rscvm.gw=10.0.2.2                IPv4 default gateway
//	rscvm.if=eth0                    interface (default eth0)
//	rscvm.timeout=120                seconds for all actions together (default 300)
//
// Actions:
//
//	ready                 print "ready"
//	link                  bring the interface up, configure rscvm.ip/gw
//	features              negotiated virtio feature bits of the interface
//	offloads              ethtool offload states of the interface
//	sink:PORT             accept one TCP connection, read to EOF, hash
//	drain:PORT            the same without the hash: only bytes and time, so
//	                      that a throughput measurement is not one of the
//	                      guest's SHA-256 speed
//	source:HOST:PORT:N    connect and send N payload bytes, hash
//	rx, tx                interface packet/byte counters
//	set:FEATURE=on|off    change an ethtool feature (ETHTOOL_SFEATURES)
//	sleep:MILLISECONDS    pause
//
// Actions that need the network (link, offloads, set, sink, drain, source, rx, tx)
// bring the link up first if no earlier action did.
package protocol

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Kind names an agent action.
type Kind string

// The agent's actions.
const (
	KindReady    Kind = "ready"
	KindLink     Kind = "link"
	KindFeatures Kind = "features"
	KindOffloads Kind = "offloads"
	KindSink     Kind = "sink"
	KindDrain    Kind = "drain"
	KindSource   Kind = "source"
	KindRX       Kind = "rx"
	KindTX       Kind = "tx"
	KindSet      Kind = "set"
	KindSleep    Kind = "sleep"
)

// Command-line parameter names.
const (
	ParamAgent   = "rscvm.agent"
	ParamIP      = "rscvm.ip"
	ParamGateway = "rscvm.gw"
	ParamIface   = "rscvm.if"
	ParamTimeout = "rscvm.timeout"
)

// DefaultIface is the interface the agent works on unless rscvm.if says otherwise.
const DefaultIface = "eth0"

// DefaultTimeout bounds all actions together unless rscvm.timeout says otherwise.
const DefaultTimeout = 300 * time.Second

// MaxPayload bounds source:...:N so that a typo cannot keep a guest busy forever.
const MaxPayload = 1 << 40

// Action is one step of the agent's program.
type Action struct {
	Kind Kind
	// Port is the listening port of sink and drain.
	Port uint16
	// Addr is the host:port that source connects to.
	Addr string
	// Bytes is the payload size of source.
	Bytes int64
	// Feature and On are the ethtool feature name and state of set.
	Feature string
	On      bool
	// Duration is the pause of sleep.
	Duration time.Duration
}

// NeedsLink reports whether the action needs the interface to be up.
func (a Action) NeedsLink() bool {
	switch a.Kind {
	case KindLink, KindOffloads, KindSet, KindSink, KindDrain, KindSource, KindRX, KindTX:
		return true
	}
	return false
}

// String formats the action in command-line syntax; ParseAction reverses it.
func (a Action) String() string {
	switch a.Kind {
	case KindSink, KindDrain:
		return fmt.Sprintf("%s:%d", a.Kind, a.Port)
	case KindSource:
		return fmt.Sprintf("source:%s:%d", a.Addr, a.Bytes)
	case KindSet:
		return fmt.Sprintf("set:%s=%s", a.Feature, onOff(a.On))
	case KindSleep:
		return fmt.Sprintf("sleep:%d", a.Duration.Milliseconds())
	}
	return string(a.Kind)
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// ParseAction parses one action in command-line syntax.
func ParseAction(s string) (Action, error) {
	name, arg, hasArg := strings.Cut(s, ":")
	a := Action{Kind: Kind(name)}
	switch a.Kind {
	case KindReady, KindLink, KindFeatures, KindOffloads, KindRX, KindTX:
		if hasArg {
			return Action{}, fmt.Errorf("action %q: takes no argument", s)
		}
	case KindSink, KindDrain:
		p, err := parsePort(arg)
		if err != nil {
			return Action{}, fmt.Errorf("action %q: %w", s, err)
		}
		a.Port = p
	case KindSource:
		// HOST:PORT:N with HOST possibly a bracketed IPv6 address.
		i := strings.LastIndexByte(arg, ':')
		if i < 0 {
			return Action{}, fmt.Errorf("action %q: want source:HOST:PORT:BYTES", s)
		}
		n, err := strconv.ParseInt(arg[i+1:], 10, 64)
		if err != nil || n < 0 || n > MaxPayload {
			return Action{}, fmt.Errorf("action %q: bad byte count %q", s, arg[i+1:])
		}
		host, port, err := net.SplitHostPort(arg[:i])
		if err != nil || host == "" {
			return Action{}, fmt.Errorf("action %q: want source:HOST:PORT:BYTES", s)
		}
		if _, err := parsePort(port); err != nil {
			return Action{}, fmt.Errorf("action %q: %w", s, err)
		}
		a.Addr = net.JoinHostPort(host, port)
		a.Bytes = n
	case KindSet:
		feat, val, ok := strings.Cut(arg, "=")
		if !ok || feat == "" || !validFeatureName(feat) {
			return Action{}, fmt.Errorf("action %q: want set:FEATURE=on|off", s)
		}
		switch val {
		case "on":
			a.On = true
		case "off":
		default:
			return Action{}, fmt.Errorf("action %q: want on or off, got %q", s, val)
		}
		a.Feature = feat
	case KindSleep:
		ms, err := strconv.ParseUint(arg, 10, 32)
		if err != nil {
			return Action{}, fmt.Errorf("action %q: bad milliseconds %q", s, arg)
		}
		a.Duration = time.Duration(ms) * time.Millisecond
	default:
		return Action{}, fmt.Errorf("unknown action %q", s)
	}
	return a, nil
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(p), nil
}

func validFeatureName(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return len(s) <= 32
}

// Config is what the agent reads from the kernel command line.
type Config struct {
	Actions []Action
	// Iface is the network interface, DefaultIface if not given.
	Iface string
	// Addr is the interface address with prefix length; invalid if not given.
	Addr netip.Prefix
	// Gateway is the IPv4 default gateway; invalid if not given.
	Gateway netip.Addr
	// Timeout bounds all actions together.
	Timeout time.Duration
}

// ErrNoAgent means the command line has no rscvm.agent= parameter.
var ErrNoAgent = errors.New("no " + ParamAgent + "= on the kernel command line")

// ParseCommandLine parses the rscvm.* parameters of a kernel command line
// (the contents of /proc/cmdline). Other parameters are ignored; a later
// occurrence of a parameter overrides an earlier one, as in the kernel.
func ParseCommandLine(cmdline string) (Config, error) {
	c := Config{Iface: DefaultIface, Timeout: DefaultTimeout}
	seenAgent := false
	for _, word := range SplitCommandLine(cmdline) {
		key, val, _ := strings.Cut(word, "=")
		switch key {
		case ParamAgent:
			seenAgent = true
			c.Actions = c.Actions[:0]
			if val == "" {
				continue
			}
			for _, s := range strings.Split(val, ",") {
				a, err := ParseAction(s)
				if err != nil {
					return Config{}, fmt.Errorf("%s: %w", ParamAgent, err)
				}
				c.Actions = append(c.Actions, a)
			}
		case ParamIP:
			p, err := netip.ParsePrefix(val)
			if err != nil {
				return Config{}, fmt.Errorf("%s: want ADDRESS/PREFIXLEN: %w", ParamIP, err)
			}
			c.Addr = p
		case ParamGateway:
			g, err := netip.ParseAddr(val)
			if err != nil || !g.Is4() {
				return Config{}, fmt.Errorf("%s: want an IPv4 address, got %q", ParamGateway, val)
			}
			c.Gateway = g
		case ParamIface:
			if val == "" || len(val) >= 16 || strings.ContainsAny(val, "/ ") {
				return Config{}, fmt.Errorf("%s: bad interface name %q", ParamIface, val)
			}
			c.Iface = val
		case ParamTimeout:
			s, err := strconv.ParseUint(val, 10, 32)
			if err != nil || s == 0 {
				return Config{}, fmt.Errorf("%s: want seconds, got %q", ParamTimeout, val)
			}
			c.Timeout = time.Duration(s) * time.Second
		}
	}
	if !seenAgent {
		return Config{}, ErrNoAgent
	}
	return c, nil
}

// CommandLine formats the configuration as kernel command-line parameters.
func (c Config) CommandLine() string {
	acts := make([]string, len(c.Actions))
	for i, a := range c.Actions {
		acts[i] = a.String()
	}
	words := []string{ParamAgent + "=" + strings.Join(acts, ",")}
	if c.Addr.IsValid() {
		words = append(words, ParamIP+"="+c.Addr.String())
	}
	if c.Gateway.IsValid() {
		words = append(words, ParamGateway+"="+c.Gateway.String())
	}
	if c.Iface != "" && c.Iface != DefaultIface {
		words = append(words, ParamIface+"="+c.Iface)
	}
	if c.Timeout > 0 && c.Timeout != DefaultTimeout {
		words = append(words, fmt.Sprintf("%s=%d", ParamTimeout, int64(c.Timeout/time.Second)))
	}
	return strings.Join(words, " ")
}

// SplitCommandLine splits a kernel command line into words the way the
// kernel does: at spaces, except inside double quotes, which are removed.
func SplitCommandLine(s string) []string {
	var words []string
	var b strings.Builder
	inQuote, inWord := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, b.String())
	}
	return words
}
