// Package aml encodes ACPI Machine Language: the subset of the ACPI
// specification's AML grammar that a static DSDT needs (scopes, devices,
// named objects, integers, strings, packages, buffers, EISA IDs and resource
// templates).
//
// Terms are values that describe AML; Encode turns them into bytes and
// reports the first invalid name, string or descriptor it meets.
package aml

import (
	"errors"
	"fmt"
	"strings"
)

// AML opcodes and prefixes (ACPI 6.x, section 20.3).
const (
	zeroOp          = 0x00
	oneOp           = 0x01
	onesOp          = 0xFF
	nameOp          = 0x08
	bytePrefix      = 0x0A
	wordPrefix      = 0x0B
	dwordPrefix     = 0x0C
	stringPrefix    = 0x0D
	qwordPrefix     = 0x0E
	scopeOp         = 0x10
	bufferOp        = 0x11
	packageOp       = 0x12
	extOpPrefix     = 0x5B
	deviceOp        = 0x82 // after extOpPrefix
	rootChar        = '\\'
	parentPrefix    = '^'
	dualNamePrefix  = 0x2E
	multiNamePrefix = 0x2F
	nullName        = 0x00

	maxPkgLength = 1<<28 - 1
)

// Term is an AML term: an object or a named-object declaration.
type Term interface {
	encode(e *encoder)
}

type encoder struct {
	b   []byte
	err error
}

func (e *encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// Encode encodes terms in sequence (a TermList).
func Encode(terms ...Term) ([]byte, error) {
	e := &encoder{}
	for _, t := range terms {
		t.encode(e)
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.b, nil
}

// PkgLength encodes the PkgLength of an object whose body (after the
// PkgLength itself) is n bytes: the encoded value counts its own bytes.
func PkgLength(n int) ([]byte, error) {
	for size := 1; size <= 4; size++ {
		total := n + size
		switch {
		case size == 1 && total < 0x40:
			return []byte{byte(total)}, nil
		case size > 1 && total < 1<<(4+8*(size-1)):
			b := make([]byte, size)
			b[0] = byte(size-1)<<6 | byte(total&0xF)
			for i := 1; i < size; i++ {
				b[i] = byte(total >> (4 + 8*(i-1)))
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("aml: package of %d bytes exceeds the PkgLength limit %d", n, maxPkgLength)
}

// withPkgLength appends PkgLength(len(body)) and body.
func (e *encoder) withPkgLength(body []byte) {
	pl, err := PkgLength(len(body))
	if err != nil {
		e.fail(err)
		return
	}
	e.b = append(e.b, pl...)
	e.b = append(e.b, body...)
}

// sub encodes terms into a fresh buffer, propagating errors.
func (e *encoder) sub(f func(s *encoder)) []byte {
	s := &encoder{}
	f(s)
	if s.err != nil {
		e.fail(s.err)
	}
	return s.b
}

// NameString encodes an ACPI name path such as "_SB.PCI0", "\\_S5_" or
// "^^FOO": optional root or parent prefixes, then dot-separated segments of
// 1-4 characters from [A-Z0-9_] (not starting with a digit), padded to 4
// with '_'.
func NameString(path string) ([]byte, error) {
	var out []byte
	rest := path
	if strings.HasPrefix(rest, `\`) {
		out = append(out, rootChar)
		rest = rest[1:]
	} else {
		for strings.HasPrefix(rest, "^") {
			out = append(out, parentPrefix)
			rest = rest[1:]
		}
	}
	if rest == "" {
		return append(out, nullName), nil
	}
	segs := strings.Split(rest, ".")
	if len(segs) > 255 {
		return nil, fmt.Errorf("aml: name %q has too many segments", path)
	}
	switch len(segs) {
	case 1:
	case 2:
		out = append(out, dualNamePrefix)
	default:
		out = append(out, multiNamePrefix, byte(len(segs)))
	}
	for _, s := range segs {
		if len(s) == 0 || len(s) > 4 {
			return nil, fmt.Errorf("aml: name %q: segment %q must be 1-4 characters", path, s)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			ok := c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9'
			if !ok {
				return nil, fmt.Errorf("aml: name %q: invalid character %q in segment %q", path, c, s)
			}
		}
		out = append(out, s...)
		for i := len(s); i < 4; i++ {
			out = append(out, '_')
		}
	}
	return out, nil
}

func (e *encoder) name(path string) {
	b, err := NameString(path)
	if err != nil {
		e.fail(err)
		return
	}
	e.b = append(e.b, b...)
}

// Integer is an AML integer constant, encoded in the shortest form: ZeroOp,
// OneOp, or a Byte/Word/DWord/QWord prefix.
type Integer uint64

func (v Integer) encode(e *encoder) {
	switch {
	case v == 0:
		e.b = append(e.b, zeroOp)
	case v == 1:
		e.b = append(e.b, oneOp)
	case v <= 0xFF:
		e.b = append(e.b, bytePrefix, byte(v))
	case v <= 0xFFFF:
		e.b = append(e.b, wordPrefix, byte(v), byte(v>>8))
	case v <= 0xFFFFFFFF:
		e.b = append(e.b, dwordPrefix, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	default:
		e.b = append(e.b, qwordPrefix)
		for i := 0; i < 8; i++ {
			e.b = append(e.b, byte(v>>(8*i)))
		}
	}
}

// Ones is the AML Ones constant (all bits set).
var Ones Term = onesTerm{}

type onesTerm struct{}

func (onesTerm) encode(e *encoder) { e.b = append(e.b, onesOp) }

// String is an AML string constant (ASCII 0x01-0x7F).
type String string

func (s String) encode(e *encoder) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7F {
			e.fail(fmt.Errorf("aml: string %q has a byte %#x outside ASCII 0x01-0x7F", string(s), s[i]))
			return
		}
	}
	e.b = append(e.b, stringPrefix)
	e.b = append(e.b, s...)
	e.b = append(e.b, 0)
}

type nameTerm struct {
	name  string
	value Term
}

// Name declares a named object: Name(name, value).
func Name(name string, value Term) Term { return nameTerm{name, value} }

func (n nameTerm) encode(e *encoder) {
	e.b = append(e.b, nameOp)
	e.name(n.name)
	n.value.encode(e)
}

type scopeTerm struct {
	ext   bool // ExtOpPrefix form (Device)
	op    byte
	name  string
	terms []Term
}

// Scope opens a scope: Scope(name) { terms }.
func Scope(name string, terms ...Term) Term { return scopeTerm{op: scopeOp, name: name, terms: terms} }

// Device declares a device: Device(name) { terms }.
func Device(name string, terms ...Term) Term {
	return scopeTerm{ext: true, op: deviceOp, name: name, terms: terms}
}

func (s scopeTerm) encode(e *encoder) {
	body := e.sub(func(b *encoder) {
		b.name(s.name)
		for _, t := range s.terms {
			t.encode(b)
		}
	})
	if s.ext {
		e.b = append(e.b, extOpPrefix)
	}
	e.b = append(e.b, s.op)
	e.withPkgLength(body)
}

type packageTerm []Term

// Package is a fixed-size package of at most 255 elements: Package() {...}.
func Package(elems ...Term) Term { return packageTerm(elems) }

func (p packageTerm) encode(e *encoder) {
	if len(p) > 255 {
		e.fail(fmt.Errorf("aml: package of %d elements exceeds 255", len(p)))
		return
	}
	body := e.sub(func(b *encoder) {
		b.b = append(b.b, byte(len(p)))
		for _, t := range p {
			t.encode(b)
		}
	})
	e.b = append(e.b, packageOp)
	e.withPkgLength(body)
}

type bufferTerm []byte

// Buffer is a buffer initialized with data: Buffer(len(data)) {data}.
func Buffer(data []byte) Term { return bufferTerm(data) }

func (d bufferTerm) encode(e *encoder) {
	body := e.sub(func(b *encoder) {
		Integer(len(d)).encode(b)
		b.b = append(b.b, d...)
	})
	e.b = append(e.b, bufferOp)
	e.withPkgLength(body)
}

type errTerm struct{ err error }

func (t errTerm) encode(e *encoder) { e.fail(t.err) }

// EISAIDValue compresses a 7-character EISA ID such as "PNP0A03" (three
// upper-case letters, four hex digits) into the 32-bit value AML stores.
func EISAIDValue(id string) (uint32, error) {
	if len(id) != 7 {
		return 0, fmt.Errorf("aml: EISA ID %q is not 7 characters", id)
	}
	var v uint32
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, fmt.Errorf("aml: EISA ID %q: %q is not an upper-case letter", id, c)
		}
		v = v<<5 | uint32(c-'@')
	}
	for i := 3; i < 7; i++ {
		var d byte
		switch c := id[i]; {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("aml: EISA ID %q: %q is not a hex digit", id, c)
		}
		v = v<<4 | uint32(d)
	}
	// The ID is stored big-endian in a little-endian DWORD.
	return v>>24 | v>>8&0xFF00 | v<<8&0xFF0000 | v<<24, nil
}

// EISAID is the integer for an EISA ID, as ASL's EisaId("PNP0A03").
func EISAID(id string) Term {
	v, err := EISAIDValue(id)
	if err != nil {
		return errTerm{err}
	}
	return Integer(v)
}

// ErrEmptyTemplate is returned for a resource template without descriptors.
var ErrEmptyTemplate = errors.New("aml: empty resource template")
