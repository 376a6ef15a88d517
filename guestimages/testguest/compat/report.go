// Package compat compares the freestanding test guest's reports under QEMU
// and under rscvm: the same guest command line, NIC properties and injected
// frames, each VMM on its own TAP in its own network namespace. Differences
// are classified as known QEMU defects (rsc-spec part (b), by number),
// deliberate rscvm behaviour, or unexpected (a bug in rscvm until shown
// otherwise). Nothing about timing is compared.
package compat

import (
	"encoding/hex"
	"strings"
)

// Field is one key=value token of a report line.
type Field struct {
	Key, Value string
}

// Record is one fact the guest reported: a line kind plus its index
// ("rx n=3"), with its fields in order. rxdata lines are folded into their
// rx record as the field "data" (hex).
type Record struct {
	Key    string
	Fields []Field
	Line   string // the line as printed
}

// Get returns the value of field k.
func (r *Record) Get(k string) (string, bool) {
	for _, f := range r.Fields {
		if f.Key == k {
			return f.Value, true
		}
	}
	return "", false
}

// Report is the comparable part of one guest run, in output order.
type Report struct {
	Records []Record
}

// Find returns the record with the given key, or nil.
func (r *Report) Find(key string) *Record {
	for i := range r.Records {
		if r.Records[i].Key == key {
			return &r.Records[i]
		}
	}
	return nil
}

// compared are the line prefixes that make up a report; everything else
// (start_info, memmap, pci, elapsed, ...) is not compared.
var compared = []string{
	"virtio dev ", "virtio features ", "virtio config ", "virtio queues ", "virtio msix ", "virtio rings ",
	"virtio done ", "virtio error", "ctrl ", "ready ", "tx ", "txend ", "rx ", "rsc ", "rxend ", "trap ",
	"rscvm-testguest: halted", "rscvm-testguest: done", "opt ", "reinit ",
}

// ParseReport builds a Report from serial lines (without line endings).
// Lines it does not know are ignored; it never fails.
func ParseReport(lines []string) Report {
	var rep Report
	data := map[string][]byte{}
	for _, raw := range lines {
		l := strings.TrimRight(raw, "\r\n")
		if strings.HasPrefix(l, "rxdata ") {
			words := strings.Fields(l)
			if len(words) == 4 {
				if b, err := hex.DecodeString(words[3]); err == nil {
					data[words[1]] = append(data[words[1]], b...)
				}
			}
			continue
		}
		keep := false
		for _, p := range compared {
			if strings.HasPrefix(l, p) {
				keep = true
				break
			}
		}
		if !keep {
			continue
		}
		rec := parseRecord(l)
		if strings.HasPrefix(l, "rx ") {
			n, _ := rec.Get("n")
			if d, ok := data["n="+n]; ok {
				rec.Fields = append(rec.Fields, Field{"data", hex.EncodeToString(d)})
			}
		}
		rep.Records = append(rep.Records, rec)
	}
	return rep
}

// parseRecord splits a line into its key and key=value fields. Words
// without "=" become fields with an empty key in position order ("pos1", ...).
func parseRecord(l string) Record {
	words := strings.Fields(l)
	rec := Record{Line: l}
	var keyWords []string
	rest := words
	switch {
	case len(words) >= 2 && (words[0] == "virtio" || words[0] == "rscvm-testguest:"):
		keyWords, rest = words[:2], words[2:]
	case len(words) >= 2 && strings.HasPrefix(words[1], "n="):
		keyWords, rest = words[:2], words[1:]
	case len(words) == 2 && words[0] == "opt":
		k, _, _ := strings.Cut(words[1], "=")
		keyWords, rest = []string{"opt", k}, words[1:]
	case len(words) >= 1:
		keyWords, rest = words[:1], words[1:]
	}
	rec.Key = strings.Join(keyWords, " ")
	for i, w := range rest {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			k, v = "pos"+itoa(i), w
		}
		rec.Fields = append(rec.Fields, Field{k, v})
	}
	return rec
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
