package rsc

import (
	"testing"

	"github.com/rscvm/rscvm/net/header"
	"github.com/stretchr/testify/require"
)

// pseudoSum equals header.PseudoHeaderSum.
func TestPseudoSum(t *testing.T) {
	ip := make([]byte, 40)
	for seed := range 2000 {
		for i := range ip {
			ip[i] = byte(seed*31 + i*i*7 + seed>>3)
		}
		n := uint32(seed * 977)
		if seed%7 == 0 {
			n = 0xffffffff - uint32(seed)
		}
		require.Equal(t, header.PseudoHeaderSum(header.ProtocolTCP, ip[12:16], ip[16:20], n), pseudoSum(ip, false, n))
		require.Equal(t, header.PseudoHeaderSum(header.ProtocolTCP, ip[8:24], ip[24:40], n), pseudoSum(ip, true, n))
	}
}

// ipv4HeaderSum equals header.SumIPv4Header.
func TestIPv4HeaderSum(t *testing.T) {
	ip := make([]byte, 20)
	for seed := range 5000 {
		for i := range ip {
			ip[i] = byte(seed*131 + i*i*13 + seed>>5)
		}
		if seed%3 == 0 {
			for i := range ip {
				ip[i] = 0xff
			}
			ip[seed%20] = byte(seed)
		}
		require.Equal(t, header.SumIPv4Header(ip), ipv4HeaderSum(ip))
	}
}
