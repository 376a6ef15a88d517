package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rscvm/rscvm/net/tap"
	virtionet "github.com/rscvm/rscvm/virtio/net"
	"github.com/rscvm/rscvm/virtio/vhostuser"
)

func vhostUserUsage() string {
	return `usage: rscvm vhost-user-net --socket PATH -netdev tap,id=ID,ifname=NAME[,queues=N] [-device virtio-net,PROPS] [--stats] [--stats-file FILE]

Serves a virtio-net datapath (rscvm's virtqueues, receive path, RSC engine and
TAP backend) to a vhost-user frontend such as QEMU:

  rscvm vhost-user-net --socket /tmp/vu.sock -netdev tap,id=n0,ifname=tap0 \
      -device virtio-net,x-rsc-gso=on
  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=512M,share=on \
      -machine pc,memory-backend=mem \
      -chardev socket,id=c0,path=/tmp/vu.sock,reconnect=1 \
      -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0

rscvm listens on --socket; one frontend at a time. When the frontend goes away
(QEMU stopped or killed) the device is reset and rscvm waits for the next one,
keeping the TAP. SIGINT/SIGTERM end it (exit status 0).

flags:
  --socket PATH       Unix socket to listen on (a stale socket file is replaced)
  -netdev tap,...     the TAP: id=, ifname=, queues=, fd=/fds=, sndbuf= as for rscvm boot
  -device virtio-net,PROPS
                      device properties, as QEMU's virtio-net (rsc_interval=NS,
                      guest_rsc_ext=on, x-rsc-gso=on, mrg_rxbuf=off, csum=off, mq=on,
                      mac=..., host_tso4=off, ...). The frontend serves the
                      control queue and config space: their properties go on its
                      own -device.
  --stats             print negotiated features and counters at exit
  --stats-file FILE   keep FILE updated (every second and at exit) with the
                      counters as JSON: {"negotiated": ..., "device": {...}, "vhost_user": {...}}

QEMU 7.2 passes only the datapath feature bits to a vhost-user backend and
keeps VIRTIO_NET_F_RSC_EXT (and the control queue, so GUEST_OFFLOADS_SET) to
itself: guests behind QEMU get rscvm's coalescing with x-rsc-gso=on (standard
GSO packets, what Linux guests take), not RSC_EXT.
`
}

type vhostUserConfig struct {
	socket    string
	netdev    *tapNetdev
	devOpts   *optList // -device, applied to net once the -netdev is known
	net       virtionet.Config
	stats     bool
	statsFile string
}

var vhostUserFlags = []flagSpec[vhostUserConfig]{
	{[]string{"socket"}, "PATH", "Unix socket to listen on",
		func(c *vhostUserConfig, v string) error { c.socket = v; return nil }},
	{[]string{"netdev"}, "tap,id=ID,ifname=NAME,...", "the TAP",
		func(c *vhostUserConfig, v string) error {
			if c.netdev != nil {
				return errors.New("given twice (one TAP per backend)")
			}
			o, err := parseOptList("-netdev", v, "type")
			if err != nil {
				return err
			}
			if c.netdev, err = parseNetdev(o); err != nil {
				return err
			}
			if k := o.untaken(); len(k) > 0 {
				return fmt.Errorf("-netdev %s: unknown option %q (accepted: id, ifname, queues, fd, fds, sndbuf, vnet_hdr, script, downscript)", c.netdev.id, k[0])
			}
			return nil
		}},
	{[]string{"device"}, "virtio-net,PROPS", "device properties",
		func(c *vhostUserConfig, v string) error {
			if c.devOpts != nil {
				return errors.New("given twice (one device per backend)")
			}
			var err error
			c.devOpts, err = parseOptList("-device", v, "driver")
			return err
		}},
	{[]string{"stats"}, "", "print negotiated features and counters at exit",
		func(c *vhostUserConfig, v string) error { c.stats = true; return nil }},
	{[]string{"stats-file"}, "FILE", "keep FILE updated with the counters as JSON",
		func(c *vhostUserConfig, v string) error { c.statsFile = v; return nil }},
}

func parseVhostUserArgs(args []string) (*vhostUserConfig, error) {
	cfg := &vhostUserConfig{net: virtionet.DefaultConfig()}
	if err := parseFlags("vhost-user-net", vhostUserFlags, args, cfg); err != nil {
		return nil, err
	}
	devOpts := cfg.devOpts
	if cfg.socket == "" {
		return nil, errors.New("--socket PATH is required (the Unix socket the frontend connects to)")
	}
	if cfg.netdev == nil {
		return nil, errors.New("-netdev tap,id=ID,ifname=NAME is required")
	}
	cfg.net.MAC = virtionet.NewDefaultMAC(0)
	if devOpts != nil {
		switch d := devOpts.str("driver", "virtio-net"); d {
		case "virtio-net", "virtio-net-pci", "vhost-user-net":
		default:
			return nil, fmt.Errorf("-device: driver %q: accepted: virtio-net (or virtio-net-pci, vhost-user-net)", d)
		}
		if id := devOpts.str("netdev", cfg.netdev.id); id != cfg.netdev.id {
			return nil, fmt.Errorf("-device: netdev=%q but the -netdev is %q", id, cfg.netdev.id)
		}
		devOpts.str("id", "")
		for _, k := range devOpts.untaken() {
			if virtionet.IsIgnored(k) {
				slog.Warn("ignoring -device property", "property", k)
				continue
			}
			if err := cfg.net.Set(k, devOpts.vals[k]); err != nil {
				return nil, fmt.Errorf("-device: %w", err)
			}
		}
	}
	if cfg.netdev.tap.Queues > 1 {
		cfg.net.MQ = true
	}
	if err := cfg.net.Validate(); err != nil {
		return nil, fmt.Errorf("-device: %w", err)
	}
	return cfg, nil
}

func runVhostUserCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseVhostUserArgs(args)
	if err != nil {
		return fmt.Errorf("vhost-user-net: %w", err)
	}
	t, err := tap.Open(cfg.netdev.tap)
	if err != nil {
		return fmt.Errorf("vhost-user-net: %w", err)
	}
	defer t.Close()
	be, err := virtionet.NewTapBackend(t)
	if err != nil {
		return fmt.Errorf("vhost-user-net: %w", err)
	}
	dev, err := virtionet.New(cfg.net, be, virtionet.Options{})
	if err != nil {
		return fmt.Errorf("vhost-user-net: %w", err)
	}
	pairs := dev.MaxQueuePairs()
	b, err := vhostuser.New(vhostuser.Config{
		Device: dev, Rings: 2 * pairs, QueueNum: uint64(pairs),
		FeatureMask: virtionet.VhostUserFeatureMask(), AckHook: dev.VhostUserAck,
		RingsHook: func(running []bool) {
			n := 0
			for p := 0; 2*p < len(running); p++ {
				if running[2*p] || (2*p+1 < len(running) && running[2*p+1]) {
					n = p + 1
				}
			}
			if err := dev.SetQueuePairs(max(n, 1)); err != nil {
				slog.Warn("vhost-user-net: queue pairs", "err", err)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("vhost-user-net: %w", err)
	}
	if fi, err := os.Lstat(cfg.socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(cfg.socket)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("vhost-user-net: listen on %s: %w", cfg.socket, err)
	}
	ln.SetUnlinkOnClose(true)
	slog.Info("vhost-user-net: listening", "socket", cfg.socket, "tap", t.Name(), "queue_pairs", pairs,
		"features", fmt.Sprintf("%#x", b.Features()))

	snapshot := func() ([]byte, error) {
		return json.MarshalIndent(struct {
			Socket     string          `json:"socket"`
			Tap        string          `json:"tap"`
			Negotiated string          `json:"negotiated"`
			Device     virtionet.Stats `json:"device"`
			VhostUser  vhostuser.Stats `json:"vhost_user"`
		}{cfg.socket, t.Name(), fmt.Sprintf("%#016x", dev.Negotiated()), dev.Stats(), b.Stats()}, "", "  ")
	}
	var wg sync.WaitGroup
	stopStats := make(chan struct{})
	writeStats := func() {
		if cfg.statsFile == "" {
			return
		}
		js, err := snapshot()
		if err == nil {
			err = writeFileAtomic(cfg.statsFile, append(js, '\n'))
		}
		if err != nil {
			slog.Warn("vhost-user-net: stats file", "err", err)
		}
	}
	if cfg.statsFile != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stopStats:
					return
				case <-tick.C:
					writeStats()
				}
			}
		}()
	}
	err = b.Serve(ctx, ln)
	close(stopStats)
	wg.Wait()
	writeStats()
	if cfg.stats {
		js, jerr := snapshot()
		if jerr == nil {
			fmt.Fprintf(stdout, "rscvm: vhost-user-net %s on %s: stats:\n%s\n", cfg.socket, t.Name(), js)
		}
	}
	if err != nil {
		return fmt.Errorf("vhost-user-net: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with data (a reader never sees half a file).
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".rscvm-stats-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
