package testguest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Marker lines the guest prints first and last (before powering off).
const (
	StartLine  = "rscvm-testguest: start"
	DoneLine   = "rscvm-testguest: done"
	HaltedLine = "rscvm-testguest: halted"
)

// ErrMalformed is wrapped by ParseOutput for a guest line it recognises by
// its first word but cannot parse.
var ErrMalformed = errors.New("malformed test guest line")

// Output is the parsed serial output of one guest run.
type Output struct {
	Started bool // the start line was seen
	Done    bool // the done line was seen
	Halted  bool // the guest stopped after a trap
	// StartInfo is the "start_info" line, nil if absent or unusable.
	StartInfo *StartInfo
	// Cmdline is the command line as the guest read it (the "cmdline" line).
	Cmdline          string
	CmdlineTruncated bool
	// Options are the "opt" lines, in command-line order.
	Options []Option
	// Memmap holds the "memmap" lines (the PVH memory map), in order.
	Memmap []MemmapEntry
	// PCI holds one entry per "pci" line, in scan order, with its "caps" line.
	PCI []PCIFunction
	// ScannedFunctions is the count from the "pciscan" line, -1 without one.
	ScannedFunctions int
	// MemProbes are the results of memprobe= options.
	MemProbes []MemProbe
	// Traps are the CPU exceptions the guest reported.
	Traps []Trap
	// Failures are "... failed" and "... unusable" style lines, verbatim.
	Failures []string
	// ElapsedMicros is the guest's own start-to-done time from the ACPI PM
	// timer (the "elapsed" line; exact below ~4.6 s), -1 without one.
	ElapsedMicros int64
	// Net is what the virtio-net driver (net=1) reported, nil without its lines.
	Net *NetReport
	// SMP is what smp=1 reported (MADT, CPUs started), nil without "smp" lines.
	SMP *SMPReport
}

// StartInfo is the guest's view of struct hvm_start_info.
type StartInfo struct {
	Addr          uint64
	Magic         uint32
	Version       uint32
	Flags         uint32
	NrModules     uint32
	CmdlinePaddr  uint64
	RSDPPaddr     uint64
	MemmapPaddr   uint64 // version >= 1 only
	MemmapEntries uint32 // version >= 1 only
}

// Option is one key=value word of the command line; a bare word has Value "".
type Option struct {
	Key, Value string
}

// MemmapEntry is one hvm_memmap_table_entry (type 1 RAM, 2 reserved, ...).
type MemmapEntry struct {
	Index      uint32
	Addr, Size uint64
	Type       uint32
}

// BARKind says how a base address register decodes.
type BARKind uint8

// BAR kinds, as printed by the guest ("io", "mem32", "mem64").
const (
	BARNone BARKind = iota
	BARIO
	BARMem32
	BARMem64
)

// String returns the guest's spelling of the kind without the prefetch suffix.
func (k BARKind) String() string {
	switch k {
	case BARIO:
		return "io"
	case BARMem32:
		return "mem32"
	case BARMem64:
		return "mem64"
	default:
		return "none"
	}
}

// BAR is one sized base address register (or the expansion ROM).
type BAR struct {
	Kind         BARKind
	Prefetchable bool
	Addr, Size   uint64
}

// Capability is one entry of a function's capability list. Attrs holds the
// decoded key=value details (e.g. cfg_type, bar, offset, length for virtio
// vendor capabilities) verbatim; Kind is a bare word such as "msix" or "msi".
type Capability struct {
	ID, Offset uint8
	Kind       string
	Attrs      map[string]string
}

// Attr returns the named detail parsed as an unsigned number (decimal or 0x hex).
func (c Capability) Attr(name string) (uint64, bool) {
	v, ok := c.Attrs[name]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// PCIFunction is one "pci" line plus its "caps" line.
type PCIFunction struct {
	Bus, Dev, Fn  uint8
	Vendor        uint16
	Device        uint16
	Rev           uint8
	Class         uint32 // class << 16 | subclass << 8 | prog-if
	HeaderType    uint8
	Multifunction bool
	SubsysVendor  uint16
	SubsysID      uint16
	Command       uint16
	IRQPin        uint8
	IRQLine       uint8
	BARs          [6]BAR // BARNone where unimplemented or the upper half of a 64-bit BAR
	ROM           BAR    // BARNone without an expansion ROM
	Caps          []Capability
}

// BDF returns the function's address as "BB:DD.F" (hex bus and device).
func (f *PCIFunction) BDF() string {
	return fmt.Sprintf("%02x:%02x.%d", f.Bus, f.Dev, f.Fn)
}

// Cap returns the first capability with the given id, or nil.
func (f *PCIFunction) Cap(id uint8) *Capability {
	for i := range f.Caps {
		if f.Caps[i].ID == id {
			return &f.Caps[i]
		}
	}
	return nil
}

// MemProbe is a "memprobe" line: the guest mapped Addr, wrote a pattern there
// and read it back. Result is "ok", "mismatch" or "unmapped".
type MemProbe struct {
	Addr   uint64
	Result string
}

// Trap is a CPU exception the guest reported before halting.
type Trap struct {
	Vector, Error, RIP, CR2 uint64
}

// Function returns the scanned function at bus:dev.fn, or nil.
func (o *Output) Function(bus, dev, fn uint8) *PCIFunction {
	for i := range o.PCI {
		f := &o.PCI[i]
		if f.Bus == bus && f.Dev == dev && f.Fn == fn {
			return f
		}
	}
	return nil
}

// Device returns the first scanned function with the given IDs, or nil.
func (o *Output) Device(vendor, device uint16) *PCIFunction {
	for i := range o.PCI {
		if o.PCI[i].Vendor == vendor && o.PCI[i].Device == device {
			return &o.PCI[i]
		}
	}
	return nil
}

// Option returns the value of the last option named key.
func (o *Output) Option(key string) (string, bool) {
	val, found := "", false
	for _, opt := range o.Options {
		if opt.Key == key {
			val, found = opt.Value, true
		}
	}
	return val, found
}

// maxLine bounds one serial line; longer lines are an error.
const maxLine = 64 << 10

// ParseOutput parses the guest's serial output. Lines the guest does not print
// (firmware noise, other consoles) are ignored; "\r\n" and "\n" both end lines.
// A line with a guest prefix that does not parse fails with ErrMalformed.
func ParseOutput(serial []byte) (*Output, error) {
	o := &Output{ScannedFunctions: -1, ElapsedMicros: -1}
	sc := bufio.NewScanner(bytes.NewReader(serial))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if err := o.parseLine(line); err != nil {
			return o, fmt.Errorf("line %d %q: %w", n, truncate(line, 120), err)
		}
	}
	if err := sc.Err(); err != nil {
		return o, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return o, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (o *Output) parseLine(line string) error {
	switch line {
	case StartLine:
		o.Started = true
		return nil
	case DoneLine:
		o.Done = true
		return nil
	case HaltedLine:
		o.Halted = true
		return nil
	case "poweroff failed", "reset failed", "start_info bad magic", "memmap unusable":
		o.Failures = append(o.Failures, line)
		return nil
	}
	word, rest, _ := strings.Cut(line, " ")
	var err error
	switch word {
	case "start_info":
		if strings.HasSuffix(rest, " unusable") {
			o.Failures = append(o.Failures, line)
			return nil
		}
		o.StartInfo, err = parseStartInfo(rest)
	case "cmdline":
		err = o.parseCmdline(rest)
	case "opt":
		k, v, _ := strings.Cut(rest, "=")
		if k == "" {
			return ErrMalformed
		}
		o.Options = append(o.Options, Option{Key: k, Value: v})
	case "memmap":
		var e MemmapEntry
		e, err = parseMemmap(rest)
		if err == nil {
			o.Memmap = append(o.Memmap, e)
		}
	case "pci":
		var f PCIFunction
		f, err = parsePCI(rest)
		if err == nil {
			o.PCI = append(o.PCI, f)
		}
	case "caps":
		err = o.parseCaps(rest)
	case "pciscan":
		var kv map[string]string
		kv, err = parseKV(strings.Fields(rest))
		if err == nil {
			var n uint64
			n, err = parseNum(kv, "functions", 10, 16)
			o.ScannedFunctions = int(n)
		}
	case "memprobe":
		var kv map[string]string
		kv, err = parseKV(strings.Fields(rest))
		if err == nil {
			var addr uint64
			addr, err = parseNum(kv, "addr", 16, 64)
			res := kv["result"]
			if err == nil && res != "ok" && res != "mismatch" && res != "unmapped" {
				err = fmt.Errorf("%w: memprobe result %q", ErrMalformed, res)
			}
			if err == nil {
				o.MemProbes = append(o.MemProbes, MemProbe{Addr: addr, Result: res})
			}
		}
	case "elapsed":
		var kv map[string]string
		kv, err = parseKV(strings.Fields(rest))
		if err == nil {
			var n uint64
			n, err = parseNum(kv, "us", 10, 63)
			o.ElapsedMicros = int64(n)
		}
	case "smp":
		err = o.parseSMPLine(rest)
	case "trap":
		var t Trap
		t, err = parseTrap(rest)
		if err == nil {
			o.Traps = append(o.Traps, t)
		}
	default:
		_, err = o.parseNetLine(word, rest, line)
	}
	return err
}

func (o *Output) parseCmdline(rest string) error {
	if len(rest) < 2 || rest[0] != '"' {
		return ErrMalformed
	}
	end := strings.LastIndexByte(rest, '"')
	if end == 0 {
		return ErrMalformed
	}
	o.Cmdline = rest[1:end]
	switch rest[end+1:] {
	case "":
	case " truncated":
		o.CmdlineTruncated = true
	default:
		return ErrMalformed
	}
	return nil
}

// parseKV splits key=value words; every word must have a key and '='.
func parseKV(words []string) (map[string]string, error) {
	kv := make(map[string]string, len(words))
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: word %q", ErrMalformed, w)
		}
		kv[k] = v
	}
	return kv, nil
}

// parseNum parses kv[key] in base (16 accepts an optional 0x) into bits bits.
func parseNum(kv map[string]string, key string, base, bits int) (uint64, error) {
	s, ok := kv[key]
	if !ok {
		return 0, fmt.Errorf("%w: missing %s", ErrMalformed, key)
	}
	return parseNumStr(s, key, base, bits)
}

func parseNumStr(s, what string, base, bits int) (uint64, error) {
	if base == 16 {
		s = strings.TrimPrefix(s, "0x")
	}
	n, err := strconv.ParseUint(s, base, bits)
	if err != nil {
		return 0, fmt.Errorf("%w: %s=%q", ErrMalformed, what, s)
	}
	return n, nil
}

// numParser collects the first error of a series of field parses.
type numParser struct {
	kv  map[string]string
	err error
}

func (p *numParser) num(key string, base, bits int) uint64 {
	if p.err != nil {
		return 0
	}
	n, err := parseNum(p.kv, key, base, bits)
	p.err = err
	return n
}

func parseStartInfo(rest string) (*StartInfo, error) {
	kv, err := parseKV(strings.Fields(rest))
	if err != nil {
		return nil, err
	}
	p := numParser{kv: kv}
	si := &StartInfo{
		Addr:         p.num("addr", 16, 64),
		Magic:        uint32(p.num("magic", 16, 32)),
		Version:      uint32(p.num("version", 10, 32)),
		Flags:        uint32(p.num("flags", 16, 32)),
		NrModules:    uint32(p.num("nr_modules", 10, 32)),
		CmdlinePaddr: p.num("cmdline", 16, 64),
		RSDPPaddr:    p.num("rsdp", 16, 64),
	}
	if _, ok := kv["memmap"]; ok {
		si.MemmapPaddr = p.num("memmap", 16, 64)
		si.MemmapEntries = uint32(p.num("memmap_entries", 10, 32))
	}
	if p.err != nil {
		return nil, p.err
	}
	return si, nil
}

func parseMemmap(rest string) (MemmapEntry, error) {
	idx, fields, ok := strings.Cut(rest, " ")
	if !ok {
		return MemmapEntry{}, ErrMalformed
	}
	i, err := parseNumStr(idx, "index", 10, 32)
	if err != nil {
		return MemmapEntry{}, err
	}
	kv, err := parseKV(strings.Fields(fields))
	if err != nil {
		return MemmapEntry{}, err
	}
	p := numParser{kv: kv}
	e := MemmapEntry{
		Index: uint32(i),
		Addr:  p.num("addr", 16, 64),
		Size:  p.num("size", 16, 64),
		Type:  uint32(p.num("type", 10, 32)),
	}
	return e, p.err
}

// parseBDF parses "BB:DD.F".
func parseBDF(s string) (bus, dev, fn uint8, err error) {
	bs, rest, ok1 := strings.Cut(s, ":")
	ds, fs, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return 0, 0, 0, fmt.Errorf("%w: address %q", ErrMalformed, s)
	}
	b, err1 := strconv.ParseUint(bs, 16, 8)
	d, err2 := strconv.ParseUint(ds, 16, 5)
	f, err3 := strconv.ParseUint(fs, 10, 3)
	if err1 != nil || err2 != nil || err3 != nil || f > 7 {
		return 0, 0, 0, fmt.Errorf("%w: address %q", ErrMalformed, s)
	}
	return uint8(b), uint8(d), uint8(f), nil
}

// parseBAR parses "kind:addr/size" (kind io, mem32, mem32p, mem64, mem64p).
func parseBAR(s string) (BAR, error) {
	kind, rest, ok1 := strings.Cut(s, ":")
	as, ss, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 {
		return BAR{}, fmt.Errorf("%w: bar %q", ErrMalformed, s)
	}
	var b BAR
	switch kind {
	case "io":
		b.Kind = BARIO
	case "mem32", "mem32p":
		b.Kind = BARMem32
	case "mem64", "mem64p":
		b.Kind = BARMem64
	default:
		return BAR{}, fmt.Errorf("%w: bar kind %q", ErrMalformed, kind)
	}
	b.Prefetchable = strings.HasSuffix(kind, "p")
	var err error
	if b.Addr, err = parseNumStr(as, "bar address", 16, 64); err != nil {
		return BAR{}, err
	}
	if b.Size, err = parseNumStr(ss, "bar size", 10, 64); err != nil {
		return BAR{}, err
	}
	return b, nil
}

func parsePCI(rest string) (PCIFunction, error) {
	var f PCIFunction
	words := strings.Fields(rest)
	if len(words) == 0 {
		return f, ErrMalformed
	}
	var err error
	if f.Bus, f.Dev, f.Fn, err = parseBDF(words[0]); err != nil {
		return f, err
	}
	kv, err := parseKV(words[1:])
	if err != nil {
		return f, err
	}
	p := numParser{kv: kv}
	f.Vendor = uint16(p.num("vendor", 16, 16))
	f.Device = uint16(p.num("device", 16, 16))
	f.Rev = uint8(p.num("rev", 16, 8))
	f.Class = uint32(p.num("class", 16, 24))
	f.HeaderType = uint8(p.num("hdr", 16, 8))
	f.Multifunction = p.num("mf", 10, 1) == 1
	f.Command = uint16(p.num("cmd", 16, 16))
	f.IRQPin = uint8(p.num("pin", 10, 8))
	f.IRQLine = uint8(p.num("line", 10, 8))
	if p.err != nil {
		return f, p.err
	}
	sv, sid, ok := strings.Cut(kv["subsys"], ":")
	if !ok {
		return f, fmt.Errorf("%w: subsys %q", ErrMalformed, kv["subsys"])
	}
	v, err1 := strconv.ParseUint(sv, 16, 16)
	id, err2 := strconv.ParseUint(sid, 16, 16)
	if err1 != nil || err2 != nil {
		return f, fmt.Errorf("%w: subsys %q", ErrMalformed, kv["subsys"])
	}
	f.SubsysVendor, f.SubsysID = uint16(v), uint16(id)
	for i := range f.BARs {
		s, ok := kv["bar"+strconv.Itoa(i)]
		if !ok {
			continue
		}
		if f.BARs[i], err = parseBAR(s); err != nil {
			return f, err
		}
	}
	if s, ok := kv["rom"]; ok {
		if f.ROM, err = parseBAR(s); err != nil {
			return f, err
		}
	}
	return f, nil
}

// parseCaps parses "BB:DD.F II@OO II@OO(k=v k=v) ..." and attaches the list to
// the most recent "pci" line with the same address.
func (o *Output) parseCaps(rest string) error {
	bdf, list, _ := strings.Cut(rest, " ")
	bus, dev, fn, err := parseBDF(bdf)
	if err != nil {
		return err
	}
	var f *PCIFunction
	for i := len(o.PCI) - 1; i >= 0; i-- {
		if o.PCI[i].Bus == bus && o.PCI[i].Dev == dev && o.PCI[i].Fn == fn {
			f = &o.PCI[i]
			break
		}
	}
	if f == nil {
		return fmt.Errorf("%w: caps for %s without a pci line", ErrMalformed, bdf)
	}
	var caps []Capability
	for s := strings.TrimLeft(list, " "); s != ""; s = strings.TrimLeft(s, " ") {
		end := strings.IndexAny(s, " (")
		if end < 0 {
			end = len(s)
		}
		ids, offs, ok := strings.Cut(s[:end], "@")
		if !ok {
			return fmt.Errorf("%w: capability %q", ErrMalformed, s[:end])
		}
		id, err1 := strconv.ParseUint(ids, 16, 8)
		off, err2 := strconv.ParseUint(offs, 16, 8)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%w: capability %q", ErrMalformed, s[:end])
		}
		c := Capability{ID: uint8(id), Offset: uint8(off)}
		s = s[end:]
		if strings.HasPrefix(s, "(") {
			closing := strings.IndexByte(s, ')')
			if closing < 0 {
				return fmt.Errorf("%w: unterminated capability details", ErrMalformed)
			}
			c.Attrs = make(map[string]string)
			for _, w := range strings.Fields(s[1:closing]) {
				if k, v, ok := strings.Cut(w, "="); ok && k != "" {
					c.Attrs[k] = v
				} else if c.Kind == "" && !ok {
					c.Kind = w
				} else {
					return fmt.Errorf("%w: capability detail %q", ErrMalformed, w)
				}
			}
			s = s[closing+1:]
		}
		caps = append(caps, c)
	}
	f.Caps = caps
	return nil
}

func parseTrap(rest string) (Trap, error) {
	kv, err := parseKV(strings.Fields(rest))
	if err != nil {
		return Trap{}, err
	}
	p := numParser{kv: kv}
	t := Trap{
		Vector: p.num("vector", 10, 64),
		Error:  p.num("error", 16, 64),
		RIP:    p.num("rip", 16, 64),
		CR2:    p.num("cr2", 16, 64),
	}
	return t, p.err
}
