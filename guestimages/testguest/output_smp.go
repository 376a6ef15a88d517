package testguest

import (
	"fmt"
	"strings"
)

// maxSMPEntries bounds the CPU lists of an SMP report (the guest handles at
// most 32 CPUs; a hostile serial stream cannot grow the lists beyond this).
const maxSMPEntries = 256

// SMPReport is what the guest printed for smp=1: the MADT, the bootstrap
// processor, each application processor's fate and the summary.
type SMPReport struct {
	// MADTSeen is set by the "smp madt" line.
	MADTSeen bool
	// MADTCPUs is the number of enabled Processor Local APIC entries.
	MADTCPUs int
	// APICIDs are their local APIC IDs, in MADT order.
	APICIDs []uint32
	// MADTAddr and LAPICAddr are the MADT's address and its local APIC address.
	MADTAddr, LAPICAddr uint64
	// BSPSeen is set by the "smp bsp" line; BSPAPICID and APICBase are its values.
	BSPSeen   bool
	BSPAPICID uint32
	APICBase  uint64
	// Up are the APIC IDs of the application processors that reported in, in
	// the order their lines arrived (possibly after Done, for a late CPU).
	Up []uint32
	// Timeouts are the APIC IDs the BSP gave up waiting for.
	Timeouts []uint32
	// Errors are the texts after "smp error ", verbatim.
	Errors []string
	// Done is set by the "smp done" line; DoneCPUs and DoneUp are its counts
	// (CPUs in the MADT, CPUs running including the BSP).
	Done     bool
	DoneCPUs int
	DoneUp   int
}

func (o *Output) smp() *SMPReport {
	if o.SMP == nil {
		o.SMP = &SMPReport{}
	}
	return o.SMP
}

// parseSMPLine parses the text after "smp ".
func (o *Output) parseSMPLine(rest string) error {
	kind, args, _ := strings.Cut(rest, " ")
	switch kind {
	case "error":
		s := o.smp()
		if len(s.Errors) < maxSMPEntries {
			s.Errors = append(s.Errors, args)
		}
		return nil
	case "madt":
		kv, err := parseKV(strings.Fields(args))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		cpus := p.num("cpus", 10, 16)
		addr := p.num("addr", 16, 64)
		lapic := p.num("lapic", 16, 32)
		if p.err != nil {
			return p.err
		}
		list, ok := kv["apic_ids"]
		if !ok {
			return fmt.Errorf("%w: missing apic_ids", ErrMalformed)
		}
		var ids []uint32
		if list != "" {
			words := strings.Split(list, ",")
			if len(words) > maxSMPEntries {
				return fmt.Errorf("%w: %d apic ids", ErrMalformed, len(words))
			}
			for _, w := range words {
				id, err := parseNumStr(w, "apic_ids", 10, 32)
				if err != nil {
					return err
				}
				ids = append(ids, uint32(id))
			}
		}
		if int(cpus) != len(ids) {
			return fmt.Errorf("%w: cpus=%d with %d apic ids", ErrMalformed, cpus, len(ids))
		}
		s := o.smp()
		s.MADTSeen, s.MADTCPUs, s.APICIDs, s.MADTAddr, s.LAPICAddr = true, int(cpus), ids, addr, lapic
	case "bsp":
		kv, err := parseKV(strings.Fields(args))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		id := p.num("apic_id", 10, 32)
		base := p.num("apic_base", 16, 64)
		if p.err != nil {
			return p.err
		}
		s := o.smp()
		s.BSPSeen, s.BSPAPICID, s.APICBase = true, uint32(id), base
	case "cpu":
		words := strings.Fields(args)
		if len(words) != 2 {
			return fmt.Errorf("%w: smp cpu line", ErrMalformed)
		}
		kv, err := parseKV(words[:1])
		if err != nil {
			return err
		}
		id, err := parseNum(kv, "apic_id", 10, 32)
		if err != nil {
			return err
		}
		s := o.smp()
		var list *[]uint32
		switch words[1] {
		case "up":
			list = &s.Up
		case "timeout":
			list = &s.Timeouts
		default:
			return fmt.Errorf("%w: smp cpu state %q", ErrMalformed, words[1])
		}
		if len(*list) >= maxSMPEntries {
			return fmt.Errorf("%w: too many smp cpu lines", ErrMalformed)
		}
		*list = append(*list, uint32(id))
	case "done":
		kv, err := parseKV(strings.Fields(args))
		if err != nil {
			return err
		}
		p := numParser{kv: kv}
		cpus := p.num("cpus", 10, 16)
		up := p.num("up", 10, 16)
		if p.err != nil {
			return p.err
		}
		s := o.smp()
		s.Done, s.DoneCPUs, s.DoneUp = true, int(cpus), int(up)
	default:
		return fmt.Errorf("%w: smp line %q", ErrMalformed, kind)
	}
	return nil
}

// IsUp reports whether the application processor with this APIC ID reported in.
func (s *SMPReport) IsUp(apicID uint32) bool {
	for _, id := range s.Up {
		if id == apicID {
			return true
		}
	}
	return false
}
