package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseBootArgsSpellings(t *testing.T) {
	c, err := parseBootArgs([]string{"-kernel", "bz", "--initrd=rd", "-append", "console=ttyS0 x=1", "-m", "1G", "-smp", "2", "-nographic", "-serial", "file:/tmp/log"})
	require.NoError(t, err)
	require.Equal(t, "bz", c.Kernel)
	require.Equal(t, "rd", c.Initrd)
	require.Equal(t, "console=ttyS0 x=1", c.Append)
	require.Equal(t, uint64(1<<30), c.MemBytes)
	require.Equal(t, 2, c.CPUs)
	require.Equal(t, serialSpec{Kind: "file", Path: "/tmp/log"}, c.Serial)

	c, err = parseBootArgs([]string{"--mem", "512", "--cpus=3", "-m", "size=128M"})
	require.NoError(t, err)
	require.Equal(t, uint64(128<<20), c.MemBytes, "last -m wins")
	require.Equal(t, 3, c.CPUs)

	c, err = parseBootArgs(nil)
	require.NoError(t, err)
	require.Equal(t, uint64(defaultMem), c.MemBytes)
	require.Equal(t, 1, c.CPUs)
	require.Equal(t, "stdio", c.Serial.Kind)
}

func TestParseBootArgsErrorsNameTheFlag(t *testing.T) {
	cases := map[string][]string{
		"unknown flag -bogus":                        {"-bogus"},
		"flag -smp: \"0\": want a whole":             {"-smp", "0"},
		"flag -cpus: \"x\"":                          {"--cpus", "x"},
		"flag -m: \"12Q\" is not a size":             {"-m", "12Q"},
		"below the minimum":                          {"-m", "1M"},
		"accepted values are stdio, file:PATH, none": {"-serial", "tcp:1"},
		"flag -kernel needs a value":                 {"-kernel"},
		"unexpected argument \"foo\"":                {"foo"},
		"flag -nographic takes no value":             {"-nographic=1"},
	}
	for want, args := range cases {
		_, err := parseBootArgs(args)
		require.Error(t, err, "%v", args)
		require.Contains(t, err.Error(), want)
	}
	_, err := parseBootArgs([]string{"-bogus"})
	require.Contains(t, err.Error(), "--kernel", "the error lists the accepted flags")
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"128": 128 << 20, "128M": 128 << 20, "2G": 2 << 30, "2g": 2 << 30, "512MiB": 512 << 20, "64k": 64 << 10, "1T": 1 << 40} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "0", "-1", "G", "1.5G", "99999999999999999999T"} {
		_, err := parseSize(in)
		require.Error(t, err, in)
	}
}

func TestOptList(t *testing.T) {
	o, err := parseOptList("-netdev", "tap,id=n0,ifname=tap,,0,script=no", "type")
	require.NoError(t, err)
	require.Equal(t, "tap", o.str("type", ""))
	require.Equal(t, "tap,0", o.str("ifname", ""), ",, escapes a comma")
	require.Equal(t, []string{"id", "script"}, o.untaken())
	b, err := o.boolean("vnet_hdr", true)
	require.NoError(t, err)
	require.True(t, b)

	o, err = parseOptList("-device", "virtio-net-pci,mq=yes,csum=off,vectors=0x10", "driver")
	require.NoError(t, err)
	for key, want := range map[string]bool{"mq": true, "csum": false} {
		got, err := o.boolean(key, !want)
		require.NoError(t, err)
		require.Equal(t, want, got, key)
	}
	n, err := o.uint("vectors", 0, 0, 2048)
	require.NoError(t, err)
	require.Equal(t, uint64(16), n)

	o, err = parseOptList("-device", "virtio-net-pci,mq=maybe", "driver")
	require.NoError(t, err)
	_, err = o.boolean("mq", false)
	require.ErrorContains(t, err, "mq=\"maybe\"")

	for _, bad := range []string{"tap,id=a,id=b", "tap,,id=x,novalue", "tap,=x", "tap,id=n0,"} {
		_, err := parseOptList("-netdev", bad, "type")
		require.Error(t, err, bad)
	}
}
