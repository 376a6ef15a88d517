package compat

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Class is how a difference (or a case) is classified.
type Class string

// The classes of a difference and of a case.
const (
	// Identical: no difference (cases only).
	Identical Class = "identical"
	// Expected: a documented QEMU defect (rsc-spec part (b)) or a deliberate
	// rscvm difference.
	Expected Class = "differs as expected"
	// Unexpected: a difference nobody explained: a bug in rscvm until shown otherwise.
	Unexpected Class = "differs unexpectedly"
	// Normalised: a machine-level difference (PCI slot, firmware-set
	// command bits), not device behaviour: kept in JSON, not counted.
	Normalised Class = "normalised"
	// Failed: the case could not be run (VMM did not start, guest failed, ...).
	Failed Class = "error"
)

// Diff is one field that differs between the QEMU and the rscvm report.
type Diff struct {
	// Record is the record key ("rx n=0", "virtio features", ...).
	Record string `json:"record"`
	// Field is the field name; empty when the record is missing on one side.
	Field string `json:"field,omitempty"`
	// QEMU and Rscvm are the values (the whole line when a record is missing;
	// "(absent)" for the missing side).
	QEMU  string `json:"qemu"`
	Rscvm string `json:"rscvm"`
	// Class is Expected or Unexpected.
	Class Class `json:"class"`
	// Reason says why the difference is expected ("QEMU (b)5: ..." or
	// "rscvm: ..."); empty for unexpected ones.
	Reason string `json:"reason,omitempty"`
}

// String renders the difference on one line (long values shortened).
func (d Diff) String() string {
	name := d.Record
	if d.Field != "" {
		name += " " + d.Field
	}
	s := fmt.Sprintf("%s: qemu %s / rscvm %s", name, short(d.QEMU), short(d.Rscvm))
	if d.Reason != "" {
		s += " [" + d.Reason + "]"
	}
	return s
}

func short(s string) string {
	if len(s) > 72 {
		return s[:69] + "..."
	}
	return s
}

const absent = "(absent)"

// Ignored fields: they depend on timing, not on device behaviour.
var ignored = map[string]map[string]bool{
	// Notifications the driver sends depend on when the device set
	// VRING_USED_F_NO_NOTIFY relative to the guest's polling.
	"virtio done": {"kicks": true},
}

// Compare diffs two reports record by record and field by field and
// classifies each difference with rules (see Classify). Records are matched
// by key; rx data is compared byte-wise and shown as the differing offsets.
func Compare(q, r Report, rules []Rule) []Diff {
	var diffs []Diff
	seen := map[string]bool{}
	var keys []string
	for _, rec := range q.Records {
		if !seen[rec.Key] {
			seen[rec.Key] = true
			keys = append(keys, rec.Key)
		}
	}
	for _, rec := range r.Records {
		if !seen[rec.Key] {
			seen[rec.Key] = true
			keys = append(keys, rec.Key)
		}
	}
	for _, k := range keys {
		qr, rr := q.Find(k), r.Find(k)
		switch {
		case qr == nil:
			diffs = append(diffs, Diff{Record: k, QEMU: absent, Rscvm: rr.Line})
			continue
		case rr == nil:
			diffs = append(diffs, Diff{Record: k, QEMU: qr.Line, Rscvm: absent})
			continue
		}
		var fields []string
		fs := map[string]bool{}
		for _, f := range append(append([]Field(nil), qr.Fields...), rr.Fields...) {
			if !fs[f.Key] {
				fs[f.Key] = true
				fields = append(fields, f.Key)
			}
		}
		for _, f := range fields {
			if ignored[k][f] {
				continue
			}
			qv, qok := qr.Get(f)
			rv, rok := rr.Get(f)
			if !qok {
				qv = absent
			}
			if !rok {
				rv = absent
			}
			if qv == rv {
				continue
			}
			if f == "data" && qok && rok {
				qv, rv = dataDiff(qv, rv)
			}
			diffs = append(diffs, Diff{Record: k, Field: f, QEMU: qv, Rscvm: rv})
		}
	}
	Classify(diffs, q, r, rules)
	return diffs
}

// dataDiff renders two differing hex frames as their length and the
// differing byte offsets (ranges), with the bytes there.
func dataDiff(qh, rh string) (string, string) {
	qb, _ := hex.DecodeString(qh)
	rb, _ := hex.DecodeString(rh)
	offs := diffOffsets(qb, rb)
	var qs, rs []string
	for _, rg := range offs {
		qs = append(qs, fmt.Sprintf("@%d:%s", rg[0], hexRange(qb, rg)))
		rs = append(rs, fmt.Sprintf("@%d:%s", rg[0], hexRange(rb, rg)))
	}
	return fmt.Sprintf("len=%d %s", len(qb), strings.Join(qs, " ")), fmt.Sprintf("len=%d %s", len(rb), strings.Join(rs, " "))
}

func hexRange(b []byte, rg [2]int) string {
	if rg[0] >= len(b) {
		return "-"
	}
	return hex.EncodeToString(b[rg[0]:min(rg[1], len(b))])
}

// diffOffsets returns the [start,end) ranges where a and b differ (past the
// shorter one's end counts as different), at most 8 ranges.
func diffOffsets(a, b []byte) [][2]int {
	n := max(len(a), len(b))
	var out [][2]int
	for i := 0; i < n && len(out) < 8; i++ {
		if i < len(a) && i < len(b) && a[i] == b[i] {
			continue
		}
		j := i
		for j < n && !(j < len(a) && j < len(b) && a[j] == b[j]) {
			j++
		}
		out = append(out, [2]int{i, j})
		i = j
	}
	return out
}

// Rule explains a difference. Match returns the reason, or "" if the rule
// does not apply. q and r are the full reports (for context such as the
// other fields of the record). A rule with Normalise set marks the
// difference Normalised instead of Expected.
type Rule struct {
	Name      string
	Normalise bool
	Match     func(d Diff, q, r Report) string
}

// Classify sets Class and Reason of every diff: the first rule that matches
// makes it Expected, otherwise it is Unexpected.
func Classify(diffs []Diff, q, r Report, rules []Rule) {
	for i := range diffs {
		diffs[i].Class, diffs[i].Reason = Unexpected, ""
		for _, rule := range rules {
			if why := rule.Match(diffs[i], q, r); why != "" {
				diffs[i].Class, diffs[i].Reason = Expected, why
				if rule.Normalise {
					diffs[i].Class = Normalised
				}
				break
			}
		}
	}
}

// CaseClass summarises a case's differences.
func CaseClass(diffs []Diff) Class {
	c := Identical
	for _, d := range diffs {
		switch d.Class {
		case Unexpected:
			return Unexpected
		case Expected:
			c = Expected
		}
	}
	return c
}

func hexField(rec *Record, k string) uint64 {
	if rec == nil {
		return 0
	}
	v, ok := rec.Get(k)
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
	if err != nil {
		return 0
	}
	return n
}

func decField(rec *Record, k string) (uint64, bool) {
	if rec == nil {
		return 0, false
	}
	v, ok := rec.Get(k)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}
