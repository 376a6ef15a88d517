package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func parseNICArgs(t *testing.T, args ...string) *bootConfig {
	t.Helper()
	c, err := parseBootArgs(args)
	require.NoError(t, err)
	return c
}

func TestParseNICsQEMUSyntax(t *testing.T) {
	c := parseNICArgs(t,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vnet_hdr=on,queues=2",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,mq=on,guest_rsc_ext=on,rsc_interval=1000000,csum=off,addr=0x5",
		"-netdev", "tap,id=n1,ifname=tap,,odd",
		"-device", "virtio-net-pci-non-transitional,netdev=n1,vectors=0,romfile=,host_mtu=9000",
	)
	nics, err := parseNICs(c.Netdevs, c.Devices)
	require.NoError(t, err)
	require.Len(t, nics, 2, "several NICs per VM")

	a := nics[0]
	require.Equal(t, "tap0", a.Tap.Name)
	require.Equal(t, 2, a.Tap.Queues)
	require.Equal(t, "52:54:00:12:34:56", a.Net.MAC.String())
	require.True(t, a.Net.MQ)
	require.True(t, a.Net.GuestRSCExt)
	require.EqualValues(t, 1000000, a.Net.RSCInterval)
	require.False(t, a.Net.CSUM)
	require.Equal(t, 5, a.Slot)
	require.Equal(t, 2*2+2, a.PCI.Vectors, "QEMU's default: 2*queues+2")
	require.False(t, a.PCI.DisableLegacy)

	b := nics[1]
	require.Equal(t, "tap,odd", b.Tap.Name, ",, escapes a comma")
	require.True(t, b.PCI.DisableLegacy, "-non-transitional is modern-only")
	require.Zero(t, b.PCI.Vectors)
	require.EqualValues(t, 9000, b.Net.HostMTU)
	require.NotEqual(t, a.Net.MAC.String(), b.Net.MAC.String(), "default MACs differ per NIC")
}

func TestParseNICsErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		netdev, device, want string
	}{
		{"tap,id=n0", "virtio-net-pci,netdev=n0,bogus=1", `unknown property "bogus"`},
		{"tap,id=n0,bogus=1", "virtio-net-pci,netdev=n0", `unknown option "bogus"`},
		{"user,id=n0", "virtio-net-pci,netdev=n0", `unsupported type "user" (accepted: tap)`},
		{"tap,id=n0", "e1000,netdev=n0", `unsupported driver "e1000"`},
		{"tap,id=n0", "virtio-net-pci,netdev=n9", `netdev="n9" does not name a -netdev`},
		{"tap,id=n0,script=/etc/qemu-ifup", "virtio-net-pci,netdev=n0", "accepted: script=no"},
		{"tap,id=n0", "virtio-net-pci,netdev=n0,mq=maybe", "mq"},
		{"tap,id=n0", "virtio-net-pci,netdev=n0,rsc_interval=-5", "rsc_interval"},
		{"tap,id=n0", "virtio-net-pci,netdev=n0,rx_queue_size=100", "power of 2"},
		{"tap,id=n0", "virtio-net-pci,netdev=n0,disable-legacy=sometimes", "accepted values are on, off, auto"},
		{"tap,id=n0", "virtio-net-pci,netdev=n0,addr=0x40", "addr="},
		{"tap,id=n0,vnet_hdr=off", "virtio-net-pci,netdev=n0", "vnet_hdr=off is not supported"},
		{"tap,id=n0,queues=0", "virtio-net-pci,netdev=n0", "queues"},
	}
	for _, tc := range cases {
		c := parseNICArgs(t, "-netdev", tc.netdev, "-device", tc.device)
		_, err := parseNICs(c.Netdevs, c.Devices)
		require.Error(t, err, "%s %s", tc.netdev, tc.device)
		require.Contains(t, err.Error(), tc.want, "%s %s", tc.netdev, tc.device)
	}
	// A -netdev nobody uses, and a netdev used twice.
	c := parseNICArgs(t, "-netdev", "tap,id=n0", "-netdev", "tap,id=n1", "-device", "virtio-net-pci,netdev=n0")
	_, err := parseNICs(c.Netdevs, c.Devices)
	require.ErrorContains(t, err, "-netdev n1: no -device")
	c = parseNICArgs(t, "-netdev", "tap,id=n0", "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-net-pci,netdev=n0")
	_, err = parseNICs(c.Netdevs, c.Devices)
	require.ErrorContains(t, err, "used by two devices")
}
