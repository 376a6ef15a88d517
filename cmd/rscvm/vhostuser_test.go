package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
)

func TestParseVhostUserArgs(t *testing.T) {
	c, err := parseVhostUserArgs([]string{"--socket", "/tmp/x.sock", "-netdev", "tap,id=n0,ifname=tap0,queues=2",
		"-device", "virtio-net,netdev=n0,x-rsc-gso=on,rsc_interval=1000,mac=52:54:00:aa:bb:cc", "--stats", "--stats-file=/tmp/s.json"})
	require.NoError(t, err)
	require.Equal(t, "/tmp/x.sock", c.socket)
	require.Equal(t, "tap0", c.netdev.tap.Name)
	require.Equal(t, 2, c.netdev.tap.Queues)
	require.True(t, c.net.MQ, "queues=2 turns MQ on")
	require.True(t, c.net.RSCGSO)
	require.Equal(t, uint32(1000), c.net.RSCInterval)
	require.Equal(t, "52:54:00:aa:bb:cc", c.net.MAC.String())
	require.True(t, c.stats)
	require.Equal(t, "/tmp/s.json", c.statsFile)
}

func TestParseVhostUserArgsErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-netdev", "tap,id=n0,ifname=t"}, "--socket PATH is required"},
		{[]string{"--socket", "/tmp/s"}, "-netdev tap,id=ID,ifname=NAME is required"},
		{[]string{"--socket"}, "flag -socket needs a value: PATH"},
		{[]string{"--socket", "/tmp/s", "--stats=yes"}, "flag -stats takes no value"},
		{[]string{"--socket", "/tmp/s", "-netdev", "tap,id=n0,ifname=t", "-netdev", "tap,id=n1,ifname=u"}, "flag -netdev: given twice (one TAP per backend)"},
		{[]string{"--socket", "/tmp/s", "--bogus"}, "unknown flag --bogus (accepted: --device, --netdev, --socket, --stats, --stats-file)"},
		{[]string{"--socket", "/tmp/s", "-netdev", "user,id=n0"}, `unsupported type "user" (accepted: tap)`},
		{[]string{"--socket", "/tmp/s", "-netdev", "tap,id=n0,ifname=t,colour=red"}, `unknown option "colour"`},
		{[]string{"--socket", "/tmp/s", "-netdev", "tap,id=n0,ifname=t", "-device", "e1000,netdev=n0"}, `driver "e1000": accepted: virtio-net`},
		{[]string{"--socket", "/tmp/s", "-netdev", "tap,id=n0,ifname=t", "-device", "virtio-net,netdev=n1"}, `netdev="n1" but the -netdev is "n0"`},
		{[]string{"--socket", "/tmp/s", "-netdev", "tap,id=n0,ifname=t", "-device", "virtio-net,rsc_interval=-1"}, "rsc_interval"},
		{[]string{"--socket", "/tmp/s", "-netdev", "tap,id=n0,ifname=t", "-device", "virtio-net,x-rsc-gso=maybe"}, "x-rsc-gso"},
		{[]string{"--socket", "/tmp/s", "stray"}, `unexpected argument "stray": rscvm vhost-user-net takes only flags`},
	} {
		_, err := parseVhostUserArgs(c.args)
		require.Error(t, err, "%q", c.args)
		require.Contains(t, err.Error(), c.want, "%q", c.args)
	}
}

// TestVhostUserCommandServes runs the command on a TAP it creates (root
// only), checks that a frontend can connect and negotiate, and that SIGTERM
// (context cancellation) ends it with the counters printed and written.
func TestVhostUserCommandServes(t *testing.T) {
	testenv.TUN(t)
	dir := t.TempDir()
	sock, stats := filepath.Join(dir, "vu.sock"), filepath.Join(dir, "stats.json")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runVhostUserCommand(ctx, []string{"--socket", sock, "-netdev", "tap,id=n0,ifname=rscvmvu%d",
			"-device", "virtio-net,x-rsc-gso=on", "--stats", "--stats-file", stats}, &out, &out)
	}()
	var c *net.UnixConn
	var err error
	for i := 0; i < 200; i++ {
		if c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"}); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, err)
	// GET_FEATURES (request 1, version 1, no payload).
	_, err = c.Write([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	require.NoError(t, err)
	reply := make([]byte, 20)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(reply)
	require.NoError(t, err)
	require.Equal(t, []byte{1, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0}, reply[:12], "reply header")
	features := uint64(0)
	for i := 7; i >= 0; i-- {
		features = features<<8 | uint64(reply[12+i])
	}
	require.NotZero(t, features&(1<<30), "VHOST_USER_F_PROTOCOL_FEATURES")
	require.NotZero(t, features&(1<<7), "GUEST_TSO4")
	require.Zero(t, features&(1<<17), "CTRL_VQ is the frontend's")
	_ = c.Close()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("command did not stop on cancellation")
	}
	require.Contains(t, out.String(), `"rx_packets"`)
	require.Contains(t, out.String(), `"connections": 1`)
	data, err := os.ReadFile(stats)
	require.NoError(t, err)
	var st struct {
		VhostUser struct{ Connections uint64 } `json:"vhost_user"`
	}
	require.NoError(t, json.Unmarshal(data, &st))
	require.Equal(t, uint64(1), st.VhostUser.Connections)
	_, err = os.Stat(sock)
	require.True(t, os.IsNotExist(err), "socket removed at exit")
	require.False(t, strings.Contains(out.String(), "panic"))
}
