package main

import (
	"fmt"
	"strconv"
	"strings"
)

// optList is a QemuOpts-style option string: "implied,key=value,key2=value2",
// where a literal comma inside a value is written ",,". The first token may be
// a bare value for the implied key (type for -netdev, driver for -device).
type optList struct {
	flag  string            // the command-line flag it came from, for errors ("-netdev")
	keys  []string          // keys in the order given
	vals  map[string]string // key -> value
	taken map[string]bool   // keys a consumer has read
}

// parseOptList splits s into key=value pairs. implied names the key of a
// leading bare token ("" if none is allowed).
func parseOptList(flag, s, implied string) (*optList, error) {
	o := &optList{flag: flag, vals: map[string]string{}, taken: map[string]bool{}}
	var tokens []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			tokens = append(tokens, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	tokens = append(tokens, cur.String())
	for i, t := range tokens {
		k, v, hasEq := strings.Cut(t, "=")
		if !hasEq {
			if i == 0 && implied != "" && t != "" {
				k, v = implied, t
			} else if t == "" {
				return nil, fmt.Errorf("%s %q: empty option", flag, s)
			} else {
				return nil, fmt.Errorf("%s %q: option %q has no value (write %s=VALUE)", flag, s, t, t)
			}
		}
		if k == "" {
			return nil, fmt.Errorf("%s %q: option with an empty name", flag, s)
		}
		if _, dup := o.vals[k]; dup {
			return nil, fmt.Errorf("%s %q: option %q given twice", flag, s, k)
		}
		o.keys = append(o.keys, k)
		o.vals[k] = v
	}
	return o, nil
}

// has reports whether key was given.
func (o *optList) has(key string) bool { _, ok := o.vals[key]; return ok }

// str returns the value of key, or def when absent.
func (o *optList) str(key, def string) string {
	o.taken[key] = true
	if v, ok := o.vals[key]; ok {
		return v
	}
	return def
}

// boolean parses key as a QEMU boolean (on/yes/true/y, off/no/false/n).
func (o *optList) boolean(key string, def bool) (bool, error) {
	o.taken[key] = true
	v, ok := o.vals[key]
	if !ok {
		return def, nil
	}
	b, err := parseQemuBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: %s=%q: %w", o.flag, key, v, err)
	}
	return b, nil
}

// uint parses key as a decimal or 0x-hex integer in [min, max].
func (o *optList) uint(key string, def, min, max uint64) (uint64, error) {
	o.taken[key] = true
	v, ok := o.vals[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("%s: %s=%q: want an integer from %d to %d", o.flag, key, v, min, max)
	}
	return n, nil
}

// untaken returns the keys no consumer read, in the order given.
func (o *optList) untaken() []string {
	var ks []string
	for _, k := range o.keys {
		if !o.taken[k] {
			ks = append(ks, k)
		}
	}
	return ks
}

func parseQemuBool(v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, fmt.Errorf("want on/off (also yes/no, true/false, y/n)")
}

// parseSize parses a memory size: a plain number is MiB (QEMU's -m), and the
// suffixes K, M, G, T (case-insensitive, optional trailing B/iB) scale by 1024.
func parseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(strings.TrimSuffix(u, "IB"), "B")
	mult := uint64(1 << 20)
	if u != "" {
		switch u[len(u)-1] {
		case 'K':
			mult, u = 1<<10, u[:len(u)-1]
		case 'M':
			mult, u = 1<<20, u[:len(u)-1]
		case 'G':
			mult, u = 1<<30, u[:len(u)-1]
		case 'T':
			mult, u = 1<<40, u[:len(u)-1]
		}
	}
	n, err := strconv.ParseUint(u, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a size: want a number of MiB, or a number with a K/M/G/T suffix (e.g. 512M, 2G)", s)
	}
	if n > (1<<63)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}
