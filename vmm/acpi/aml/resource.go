package aml

import (
	"encoding/binary"
	"fmt"
)

// Resource is one resource descriptor (ACPI 6.x section 6.4) for a
// ResourceTemplate.
type Resource struct {
	data []byte
	err  error
}

// Bytes returns the encoded descriptor.
func (r Resource) Bytes() []byte { return r.data }

// Small and large descriptor tags.
const (
	tagIRQNoFlags = 0x22 // small IRQ, 2-byte form
	tagIO         = 0x47
	tagEnd        = 0x79
	tagDWordAddr  = 0x87
	tagWordAddr   = 0x88
	tagQWordAddr  = 0x8A

	addrMem = 0
	addrIO  = 1
	addrBus = 2

	// General flags of address-space descriptors: producer, positive
	// decode, minimum and maximum fixed.
	genMinMaxFixed = 0x0C
	// I/O type-specific flags: EntireRange.
	ioEntireRange = 0x03
	// Memory type-specific flags.
	memReadWrite   = 0x01
	memCacheable   = 0x01 << 1
	memNonCacheble = 0x00
)

// IO is a 16-bit-decode I/O port descriptor: IO(Decode16, min, max, align,
// length).
func IO(minBase, maxBase uint16, align, length uint8) Resource {
	if minBase > maxBase {
		return Resource{err: fmt.Errorf("aml: IO descriptor min %#x > max %#x", minBase, maxBase)}
	}
	b := []byte{tagIO, 0x01, 0, 0, 0, 0, align, length}
	binary.LittleEndian.PutUint16(b[2:], minBase)
	binary.LittleEndian.PutUint16(b[4:], maxBase)
	return Resource{data: b}
}

// IRQNoFlags is an edge-triggered, active-high ISA IRQ descriptor:
// IRQNoFlags() {irqs}.
func IRQNoFlags(irqs ...uint8) Resource {
	var mask uint16
	for _, irq := range irqs {
		if irq > 15 {
			return Resource{err: fmt.Errorf("aml: IRQ %d is not an ISA IRQ", irq)}
		}
		mask |= 1 << irq
	}
	return Resource{data: []byte{tagIRQNoFlags, byte(mask), byte(mask >> 8)}}
}

// address builds an address-space descriptor: tag, the 16-bit length of
// what follows, resource type, general and type-specific flags, then
// granularity, min, max, translation and length as n-byte fields.
func address(tag, rtype, tflags byte, n int, minA, maxA uint64) Resource {
	if minA > maxA {
		return Resource{err: fmt.Errorf("aml: address descriptor min %#x > max %#x", minA, maxA)}
	}
	length := maxA - minA + 1
	if n < 8 && length > 1<<(8*n) || length == 0 {
		return Resource{err: fmt.Errorf("aml: address range [%#x,%#x] too large for %d-byte fields", minA, maxA, n)}
	}
	b := make([]byte, 3+3+5*n)
	b[0] = tag
	binary.LittleEndian.PutUint16(b[1:], uint16(len(b)-3))
	b[3], b[4], b[5] = rtype, genMinMaxFixed, tflags
	put := func(i int, v uint64) {
		for j := 0; j < n; j++ {
			b[6+i*n+j] = byte(v >> (8 * j))
		}
	}
	put(0, 0) // granularity: decode all address bits
	put(1, minA)
	put(2, maxA)
	put(3, 0) // translation offset
	put(4, length)
	return Resource{data: b}
}

// WordBusNumber is a bus-number range produced by a bridge:
// WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len).
func WordBusNumber(minBus, maxBus uint16) Resource {
	return address(tagWordAddr, addrBus, 0, 2, uint64(minBus), uint64(maxBus))
}

// WordIO is an I/O range produced by a bridge:
// WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, len).
func WordIO(minA, maxA uint16) Resource {
	return address(tagWordAddr, addrIO, ioEntireRange, 2, uint64(minA), uint64(maxA))
}

func memFlags(cacheable bool) byte {
	if cacheable {
		return memReadWrite | memCacheable
	}
	return memReadWrite | memNonCacheble
}

// DWordMemory is a 32-bit read/write memory range produced by a bridge:
// DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable or
// NonCacheable, ReadWrite, 0, min, max, 0, len).
func DWordMemory(minA, maxA uint32, cacheable bool) Resource {
	return address(tagDWordAddr, addrMem, memFlags(cacheable), 4, uint64(minA), uint64(maxA))
}

// QWordMemory is a 64-bit read/write memory range produced by a bridge, as
// DWordMemory.
func QWordMemory(minA, maxA uint64, cacheable bool) Resource {
	return address(tagQWordAddr, addrMem, memFlags(cacheable), 8, minA, maxA)
}

type templateTerm []Resource

// ResourceTemplate is a Buffer holding the descriptors followed by an End
// Tag whose checksum makes the bytes of the template sum to zero.
func ResourceTemplate(descs ...Resource) Term { return templateTerm(descs) }

func (t templateTerm) encode(e *encoder) {
	if len(t) == 0 {
		e.fail(ErrEmptyTemplate)
		return
	}
	var b []byte
	for _, d := range t {
		if d.err != nil {
			e.fail(d.err)
			return
		}
		b = append(b, d.data...)
	}
	b = append(b, tagEnd, 0)
	var sum byte
	for _, c := range b {
		sum += c
	}
	b[len(b)-1] = -sum
	bufferTerm(b).encode(e)
}
