package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseCommandLine(t *testing.T) {
	c, err := ParseCommandLine(`BOOT_IMAGE=/vmlinuz console=ttyS0 rscvm.agent=ready,features,offloads,sink:5001,source:10.0.2.1:5001:1048576,rx,tx,set:rx-gro-hw=off,sleep:250,link,drain:5002 rscvm.ip=10.0.2.15/24 rscvm.gw=10.0.2.2 rscvm.timeout=60` + "\n")
	require.NoError(t, err)
	require.Equal(t, "eth0", c.Iface)
	require.Equal(t, netip.MustParsePrefix("10.0.2.15/24"), c.Addr)
	require.Equal(t, netip.MustParseAddr("10.0.2.2"), c.Gateway)
	require.Equal(t, 60*time.Second, c.Timeout)
	require.Equal(t, []Action{
		{Kind: KindReady},
		{Kind: KindFeatures},
		{Kind: KindOffloads},
		{Kind: KindSink, Port: 5001},
		{Kind: KindSource, Addr: "10.0.2.1:5001", Bytes: 1048576},
		{Kind: KindRX},
		{Kind: KindTX},
		{Kind: KindSet, Feature: "rx-gro-hw", On: false},
		{Kind: KindSleep, Duration: 250 * time.Millisecond},
		{Kind: KindLink},
		{Kind: KindDrain, Port: 5002},
	}, c.Actions)
	require.Equal(t, "drain:5002", c.Actions[10].String())
	require.True(t, c.Actions[10].NeedsLink())
}

func TestParseCommandLineDefaultsAndOverride(t *testing.T) {
	c, err := ParseCommandLine(`rscvm.agent=features rscvm.agent=ready rscvm.if=enp0s3`)
	require.NoError(t, err)
	require.Equal(t, []Action{{Kind: KindReady}}, c.Actions)
	require.Equal(t, "enp0s3", c.Iface)
	require.Equal(t, DefaultTimeout, c.Timeout)
	require.False(t, c.Addr.IsValid())
	require.False(t, c.Gateway.IsValid())

	c, err = ParseCommandLine(`rscvm.agent=`)
	require.NoError(t, err)
	require.Empty(t, c.Actions)

	_, err = ParseCommandLine(`console=ttyS0 quiet`)
	require.ErrorIs(t, err, ErrNoAgent)
}

func TestParseCommandLineIPv6AndQuotes(t *testing.T) {
	c, err := ParseCommandLine(`"rscvm.agent=source:[fd00::1]:80:5,sink:80" rscvm.ip=fd00::2/64 foo="a b"`)
	require.NoError(t, err)
	require.Equal(t, "[fd00::1]:80", c.Actions[0].Addr)
	require.Equal(t, int64(5), c.Actions[0].Bytes)
	require.Equal(t, netip.MustParsePrefix("fd00::2/64"), c.Addr)
}

func TestParseCommandLineErrors(t *testing.T) {
	for _, s := range []string{
		"rscvm.agent=bogus",
		"rscvm.agent=ready:1",
		"rscvm.agent=sink",
		"rscvm.agent=sink:0",
		"rscvm.agent=sink:65536",
		"rscvm.agent=drain",
		"rscvm.agent=drain:0",
		"rscvm.agent=drain:x",
		"rscvm.agent=source:10.0.2.1:5001",
		"rscvm.agent=source:10.0.2.1:5001:-1",
		"rscvm.agent=source::5001:10",
		"rscvm.agent=source:10.0.2.1:0:10",
		"rscvm.agent=source:10.0.2.1:5001:99999999999999",
		"rscvm.agent=set:rx-gro-hw",
		"rscvm.agent=set:rx-gro-hw=maybe",
		"rscvm.agent=set:=on",
		"rscvm.agent=set:a/b=on",
		"rscvm.agent=sleep:x",
		"rscvm.agent=ready,,ready",
		"rscvm.agent=ready rscvm.ip=10.0.2.15",
		"rscvm.agent=ready rscvm.gw=fd00::1",
		"rscvm.agent=ready rscvm.if=",
		"rscvm.agent=ready rscvm.if=abcdefghijklmnop",
		"rscvm.agent=ready rscvm.timeout=0",
	} {
		_, err := ParseCommandLine(s)
		require.Error(t, err, s)
	}
}

func TestCommandLineRoundTrip(t *testing.T) {
	c := Config{
		Actions: []Action{
			{Kind: KindReady}, {Kind: KindFeatures}, {Kind: KindSink, Port: 5001},
			{Kind: KindSource, Addr: "[fd00::1]:5001", Bytes: 10},
			{Kind: KindSet, Feature: "rx-gro-hw", On: true}, {Kind: KindSleep, Duration: time.Second},
		},
		Iface:   "eth1",
		Addr:    netip.MustParsePrefix("10.0.2.15/24"),
		Gateway: netip.MustParseAddr("10.0.2.2"),
		Timeout: 42 * time.Second,
	}
	s := c.CommandLine()
	require.Equal(t, "rscvm.agent=ready,features,sink:5001,source:[fd00::1]:5001:10,set:rx-gro-hw=on,sleep:1000 rscvm.ip=10.0.2.15/24 rscvm.gw=10.0.2.2 rscvm.if=eth1 rscvm.timeout=42", s)
	got, err := ParseCommandLine("console=ttyS0 " + s)
	require.NoError(t, err)
	require.Equal(t, c, got)

	require.Equal(t, "rscvm.agent=ready", Config{Actions: []Action{{Kind: KindReady}}}.CommandLine())
}

func TestNeedsLink(t *testing.T) {
	require.False(t, Action{Kind: KindReady}.NeedsLink())
	require.False(t, Action{Kind: KindFeatures}.NeedsLink())
	require.False(t, Action{Kind: KindSleep}.NeedsLink())
	require.True(t, Action{Kind: KindSink}.NeedsLink())
	require.True(t, Action{Kind: KindOffloads}.NeedsLink())
}

func TestSplitCommandLine(t *testing.T) {
	require.Equal(t, []string{"a", "b=c d", "e", `f=`}, SplitCommandLine(" a  \"b=c d\"\te\nf=\n"))
	require.Empty(t, SplitCommandLine("   "))
	require.Equal(t, []string{""}, SplitCommandLine(`""`))
}

func TestParseLine(t *testing.T) {
	l, ok := ParseLine("[    1.234] random: crng init done\r")
	require.False(t, ok)
	require.Zero(t, l)

	l, ok = ParseLine("[    1.2] noise rscvm-agent: sink bytes=1048576 sha256=abcd\r\n")
	require.True(t, ok)
	require.Equal(t, "sink", l.Kind)
	require.Equal(t, []string{"bytes=1048576", "sha256=abcd"}, l.Args)
	n, err := l.Uint("bytes")
	require.NoError(t, err)
	require.Equal(t, uint64(1048576), n)
	v, ok := l.Value("sha256")
	require.True(t, ok)
	require.Equal(t, "abcd", v)
	_, err = l.Uint("packets")
	require.Error(t, err)
	_, err = l.Uint("sha256")
	require.Error(t, err)

	_, ok = ParseLine("rscvm-agent:    ")
	require.False(t, ok)
}

func TestSinkLine(t *testing.T) {
	const sum = "8b1a9953c4611296a827abf8c47804d7e6c49c6b0a1d5c2e4b1d7e5c7a9b3f10"
	s := FormatSink(33554432, sum, 1500*time.Millisecond)
	require.Equal(t, "rscvm-agent: sink bytes=33554432 sha256="+sum+" ns=1500000000", s)
	l, ok := ParseLine("[   12.5] virtio_net: x " + s + "\r\n")
	require.True(t, ok)
	r, err := ParseSink(l)
	require.NoError(t, err)
	require.Equal(t, SinkResult{Bytes: 33554432, SHA256: sum, Duration: 1500 * time.Millisecond}, r)
	// Parsers of the two older keys see the same line as before.
	require.Equal(t, "33554432", l.Values["bytes"])
	require.Equal(t, sum, l.Values["sha256"])
	require.Equal(t, "rscvm-agent: sink bytes=0 sha256= ns=0", FormatSink(0, "", -time.Second))

	// drain: the same without the hash.
	s = FormatDrain(1<<20, 42*time.Microsecond)
	require.Equal(t, "rscvm-agent: drain bytes=1048576 ns=42000", s)
	l, ok = ParseLine(s)
	require.True(t, ok)
	r, err = ParseSink(l)
	require.NoError(t, err)
	require.Equal(t, SinkResult{Bytes: 1 << 20, Duration: 42 * time.Microsecond}, r)
	require.Equal(t, "rscvm-agent: drain bytes=0 ns=0", FormatDrain(0, -1))

	// A line of an agent without ns=, the listening line, other kinds and
	// bad numbers are errors, not zero durations.
	for _, bad := range []string{
		"rscvm-agent: sink bytes=1 sha256=00",
		"rscvm-agent: sink listening port=5001",
		"rscvm-agent: drain listening port=5001",
		"rscvm-agent: drain bytes=1",
		"rscvm-agent: sink bytes=1 ns=5",
		"rscvm-agent: rx packets=1 bytes=1 ns=1",
		"rscvm-agent: sink bytes=1 sha256=00 ns=-1",
		"rscvm-agent: sink bytes=1 sha256=00 ns=1.5",
		"rscvm-agent: sink bytes=1 sha256=00 ns=9223372036854775808",
		"rscvm-agent: sink bytes=x sha256=00 ns=1",
	} {
		l, ok := ParseLine(bad)
		require.True(t, ok, bad)
		_, err := ParseSink(l)
		require.Error(t, err, bad)
	}
	l, _ = ParseLine("rscvm-agent: sink bytes=1 sha256=00 ns=9223372036854775807")
	d, err := l.Duration(KeyNanoseconds)
	require.NoError(t, err)
	require.Equal(t, time.Duration(1<<63-1), d)
}

func TestParseOutput(t *testing.T) {
	out := strings.Join([]string{
		"Linux version 6.1",
		Format(LineReady),
		Format(LineLink, "eth0", "up", "mac=52:54:00:12:34:56"),
		FormatError("sink:5001", io.ErrUnexpectedEOF),
		Format(LineDone, "errors=1"),
	}, "\r\n")
	lines := ParseOutput([]byte(out))
	require.Len(t, lines, 4)
	require.Equal(t, "ready", lines[0].Kind)
	require.Equal(t, "52:54:00:12:34:56", lines[1].Values["mac"])
	require.Equal(t, "error", lines[2].Kind)
	require.Equal(t, "sink:5001: unexpected EOF", lines[2].Text[len("error "):])
	require.Equal(t, "1", lines[3].Values["errors"])
}

func TestFormat(t *testing.T) {
	require.Equal(t, "rscvm-agent: ready", Format(LineReady))
	require.Equal(t, "rscvm-agent: set rx-gro-hw=off ok", Format(LineSet, "rx-gro-hw=off", "ok"))
	require.Equal(t, "rscvm-agent: error x: a b", FormatError("x", errString("a\nb")))
	require.Equal(t, "rscvm-agent: error x", FormatError("x", nil))
}

type errString string

func (e errString) Error() string { return string(e) }

func TestFeatureBitsToHex(t *testing.T) {
	// QEMU 7.2 defaults as Linux negotiates them: 0x0000010130afffa7
	want := uint64(0x0000010130afffa7)
	var b strings.Builder
	for i := 0; i < 64; i++ {
		if want&(1<<i) != 0 {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	got, err := FeatureBitsToHex(b.String() + "\n")
	require.NoError(t, err)
	require.Equal(t, "0x0000010130afffa7", got)
	n, err := ParseFeatures(got)
	require.NoError(t, err)
	require.Equal(t, want, n.Uint64())

	got, err = FeatureBitsToHex("1")
	require.NoError(t, err)
	require.Equal(t, "0x0000000000000001", got)
	got, err = FeatureBitsToHex(strings.Repeat("0", 64) + "1")
	require.NoError(t, err)
	require.Equal(t, "0x10000000000000000", got)

	for _, bad := range []string{"", "\n", "012", "1 0", strings.Repeat("1", 5000)} {
		_, err := FeatureBitsToHex(bad)
		require.Error(t, err, bad)
	}
	for _, bad := range []string{"", "0x", "12", "0xzz"} {
		_, err := ParseFeatures(bad)
		require.Error(t, err, bad)
	}
}

func TestPayload(t *testing.T) {
	// Reading in odd-sized chunks gives the same stream as one read.
	const n = 100003
	whole := make([]byte, n)
	_, err := io.ReadFull(NewPayload(n), whole)
	require.NoError(t, err)
	var chunks []byte
	p := NewPayload(n)
	buf := make([]byte, 13)
	for size := 1; ; size = size%13 + 1 {
		k, err := p.Read(buf[:size])
		chunks = append(chunks, buf[:k]...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.Equal(t, whole, chunks)
	sum := sha256.Sum256(whole)
	require.Equal(t, hex.EncodeToString(sum[:]), PayloadSHA256(n))

	// Pinned: both halves of a test and other implementations must agree.
	require.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", PayloadSHA256(0))
	first := make([]byte, 8)
	_, err = io.ReadFull(NewPayload(8), first)
	require.NoError(t, err)
	// splitmix64(0) = 0xe220a8397b1dcdaf, little endian
	require.Equal(t, "afcd1d7b39a820e2", hex.EncodeToString(first))

	k, err := NewPayload(-1).Read(buf)
	require.Equal(t, 0, k)
	require.Equal(t, io.EOF, err)
}

func FuzzParseCommandLine(f *testing.F) {
	f.Add("rscvm.agent=ready,features,offloads,sink:5001,source:10.0.2.1:5001:1048576 rscvm.ip=10.0.2.15/24 rscvm.gw=10.0.2.2")
	f.Add(`"rscvm.agent=source:[fd00::1]:80:5" rscvm.ip=fd00::2/64 rscvm.if=eth1 rscvm.timeout=9`)
	f.Add("rscvm.agent=set:rx-gro-hw=off,sleep:10,rx,tx,link")
	f.Add("rscvm.agent=drain:5001,sink:5002")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommandLine(s)
		if err != nil {
			return
		}
		// What parses must format and parse back to the same thing.
		again, err := ParseCommandLine(c.CommandLine())
		if err != nil {
			t.Fatalf("%q -> %q: %v", s, c.CommandLine(), err)
		}
		if again.CommandLine() != c.CommandLine() {
			t.Fatalf("%q: %q != %q", s, again.CommandLine(), c.CommandLine())
		}
	})
}

func FuzzParseLine(f *testing.F) {
	f.Add("rscvm-agent: sink bytes=1 sha256=00")
	f.Add("rscvm-agent: sink bytes=1 sha256=00 ns=18446744073709551615")
	f.Add("rscvm-agent: drain bytes=1 ns=7")
	f.Add("[ 1.0] x rscvm-agent: offloads eth0 a=on b=off\r")
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseLine(s)
		if ok && l.Kind == "" {
			t.Fatal("empty kind")
		}
		_, _ = l.Uint("bytes")
		_, _ = l.Duration(KeyNanoseconds)
		if r, err := ParseSink(l); err == nil && r.Duration < 0 {
			t.Fatalf("negative duration %v", r.Duration)
		}
	})
}

func FuzzFeatureBitsToHex(f *testing.F) {
	f.Add("0101")
	f.Add(strings.Repeat("1", 64))
	f.Fuzz(func(t *testing.T, s string) {
		h, err := FeatureBitsToHex(s)
		if err != nil {
			return
		}
		if _, err := ParseFeatures(h); err != nil {
			t.Fatal(err)
		}
	})
}
