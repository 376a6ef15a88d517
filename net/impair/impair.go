// Package impair applies deterministic, seeded network impairments — loss,
// duplication, reordering and delay — to a sequence of captured frames.
//
// The kernels rscvm is tested on have no sch_netem, so tests impair traffic
// in userspace: either on a captured frame list (Apply) or frame by frame in
// a forwarder between two TAPs or packet sockets (Impairer.Push / Flush).
// The same Config and seed always produce the same output.
package impair

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rscvm/rscvm/net/pcap"
)

// Config selects the impairments. Probabilities are per input frame, in
// [0, 1]. The zero value passes frames through unchanged.
type Config struct {
	// Seed makes the decisions reproducible.
	Seed uint64
	// Loss is the probability that a frame is dropped.
	Loss float64
	// Duplicate is the probability that a (not dropped) frame is emitted
	// twice; the copy follows the original (and may itself be reordered).
	Duplicate float64
	// Reorder is the probability that a frame (or copy) is held back and
	// emitted after 1 to Window-1 later frames. At most one frame is held
	// at a time (a frame chosen while another is held goes out normally),
	// so no frame moves by more than Window-1 positions.
	Reorder float64
	// Window bounds reordering (frames swap within a window of Window
	// consecutive frames). 0 means 4; 1 disables reordering.
	Window int
	// Delay is added to every frame's timestamp, plus a uniform extra in
	// [0, Jitter). Jitter never reorders: output timestamps are made
	// non-decreasing in output order (a held-back frame takes the time at
	// which it is released).
	Delay, Jitter time.Duration
}

// Validate reports an out-of-range field.
func (c Config) Validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"Loss", c.Loss}, {"Duplicate", c.Duplicate}, {"Reorder", c.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("impair: %s probability %v outside [0, 1]", p.name, p.v)
		}
	}
	if c.Window < 0 {
		return fmt.Errorf("impair: Window %d is negative", c.Window)
	}
	if c.Delay < 0 || c.Jitter < 0 {
		return fmt.Errorf("impair: negative Delay %v or Jitter %v", c.Delay, c.Jitter)
	}
	return nil
}

// Stats counts what an Impairer did.
type Stats struct {
	In, Out    int // frames pushed and emitted
	Dropped    int // frames lost
	Duplicated int // extra copies emitted
	Reordered  int // frames (or copies) held back
}

type held struct {
	p    pcap.Packet
	left int // frames still to pass before release
}

// Impairer impairs a stream of frames. It is not safe for concurrent use.
type Impairer struct {
	cfg    Config
	window int
	rng    *rand.Rand
	held   []held
	last   time.Time
	st     Stats
}

// New returns an Impairer. It panics if cfg does not Validate (a
// programming error in a test).
func New(cfg Config) *Impairer {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	w := cfg.Window
	if w == 0 {
		w = 4
	}
	return &Impairer{cfg: cfg, window: w, rng: rand.New(rand.NewPCG(cfg.Seed, 0x7265_6f72_6465_7221))}
}

// Stats returns the counters so far.
func (im *Impairer) Stats() Stats { return im.st }

// Push impairs one frame and calls emit for every frame that leaves now (in
// order). Frames are not copied: a held-back frame's Data is retained until
// it is emitted, so the caller must not reuse it.
func (im *Impairer) Push(p pcap.Packet, emit func(pcap.Packet)) {
	im.st.In++
	if im.cfg.Loss > 0 && im.rng.Float64() < im.cfg.Loss {
		im.st.Dropped++
		return
	}
	copies := 1
	if im.cfg.Duplicate > 0 && im.rng.Float64() < im.cfg.Duplicate {
		copies = 2
		im.st.Duplicated++
	}
	p.Time = p.Time.Add(im.cfg.Delay)
	if im.cfg.Jitter > 0 {
		p.Time = p.Time.Add(time.Duration(im.rng.Int64N(int64(im.cfg.Jitter))))
	}
	for range copies {
		if im.window > 1 && im.cfg.Reorder > 0 && im.rng.Float64() < im.cfg.Reorder && len(im.held) == 0 {
			im.st.Reordered++
			im.held = append(im.held, held{p: p, left: 1 + im.rng.IntN(im.window-1)})
			continue
		}
		im.emit(p, emit)
		// Release held frames whose turn has come, after this one.
		j := 0
		for _, h := range im.held {
			if h.left--; h.left == 0 {
				im.emit(h.p, emit)
				continue
			}
			im.held[j] = h
			j++
		}
		clear(im.held[j:])
		im.held = im.held[:j]
	}
}

// Flush emits every held-back frame, in the order they were held.
func (im *Impairer) Flush(emit func(pcap.Packet)) {
	for _, h := range im.held {
		im.emit(h.p, emit)
	}
	clear(im.held)
	im.held = im.held[:0]
}

func (im *Impairer) emit(p pcap.Packet, emit func(pcap.Packet)) {
	if p.Time.Before(im.last) {
		p.Time = im.last
	}
	im.last = p.Time
	im.st.Out++
	emit(p)
}

// Apply impairs a whole frame list and returns the new list (sharing Data
// with in) and the counters.
func Apply(cfg Config, in []pcap.Packet) ([]pcap.Packet, Stats, error) {
	if err := cfg.Validate(); err != nil {
		return nil, Stats{}, err
	}
	im := New(cfg)
	out := make([]pcap.Packet, 0, len(in)+len(in)/8)
	emit := func(p pcap.Packet) { out = append(out, p) }
	for _, p := range in {
		im.Push(p, emit)
	}
	im.Flush(emit)
	return out, im.st, nil
}
