package impair

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/rscvm/rscvm/net/pcap"
	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1700000000, 0)

// frames returns n frames whose data is their index, 10 µs apart.
func frames(n int) []pcap.Packet {
	out := make([]pcap.Packet, n)
	for i := range out {
		out[i] = pcap.Packet{Time: t0.Add(time.Duration(i) * 10 * time.Microsecond), Data: binary.BigEndian.AppendUint32(nil, uint32(i))}
	}
	return out
}

func index(p pcap.Packet) int { return int(binary.BigEndian.Uint32(p.Data)) }

func TestZeroConfigIsIdentity(t *testing.T) {
	in := frames(100)
	out, st, err := Apply(Config{Seed: 42}, in)
	require.NoError(t, err)
	require.Equal(t, in, out)
	require.Equal(t, Stats{In: 100, Out: 100}, st)
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 7, Loss: 0.05, Duplicate: 0.05, Reorder: 0.1, Window: 4, Delay: time.Millisecond, Jitter: 5 * time.Microsecond}
	a, sa, err := Apply(cfg, frames(5000))
	require.NoError(t, err)
	b, sb, err := Apply(cfg, frames(5000))
	require.NoError(t, err)
	require.Equal(t, a, b)
	require.Equal(t, sa, sb)
	cfg.Seed = 8
	c, _, err := Apply(cfg, frames(5000))
	require.NoError(t, err)
	require.NotEqual(t, a, c)
}

func TestImpairments(t *testing.T) {
	const n = 20000
	cfg := Config{Seed: 1, Loss: 0.01, Duplicate: 0.01, Reorder: 0.02, Window: 4, Delay: 3 * time.Millisecond, Jitter: 20 * time.Microsecond}
	out, st, err := Apply(cfg, frames(n))
	require.NoError(t, err)
	require.Equal(t, n, st.In)
	require.Equal(t, len(out), st.Out)
	require.Equal(t, n-st.Dropped+st.Duplicated, st.Out)
	// Rates are near what was asked (binomial, n = 20000).
	require.InDelta(t, 200, st.Dropped, 60)
	require.InDelta(t, 200, st.Duplicated, 60)
	require.InDelta(t, 400, st.Reordered, 100)

	seen := make(map[int]int)
	prevIdx, prevTime := -1, time.Time{}
	inversions := 0
	for pos, p := range out {
		i := index(p)
		seen[i]++
		require.False(t, p.Time.Before(prevTime), "timestamps non-decreasing at %d", pos)
		require.False(t, p.Time.Before(t0.Add(time.Duration(i)*10*time.Microsecond+cfg.Delay)), "delay applied at %d", pos)
		if i < prevIdx {
			inversions++
			// Count the later frames emitted before this one (they lie
			// within the last few positions).
			passed := 0
			for _, q := range out[max(pos-32, 0):pos] {
				if index(q) > i {
					passed++
				}
			}
			require.LessOrEqual(t, passed, cfg.Window-1, "frame %d moved too far", i)
		}
		prevIdx, prevTime = max(prevIdx, i), p.Time
	}
	require.Positive(t, inversions)
	dups, lost := 0, 0
	for i := range n {
		switch seen[i] {
		case 0:
			lost++
		case 2:
			dups++
		case 1:
		default:
			t.Fatalf("frame %d emitted %d times", i, seen[i])
		}
	}
	require.Equal(t, st.Dropped, lost)
	require.Equal(t, st.Duplicated, dups)
}

func TestStreamingMatchesApply(t *testing.T) {
	cfg := Config{Seed: 99, Loss: 0.1, Duplicate: 0.1, Reorder: 0.3, Window: 3}
	in := frames(1000)
	want, _, err := Apply(cfg, in)
	require.NoError(t, err)
	im := New(cfg)
	var got []pcap.Packet
	emit := func(p pcap.Packet) { got = append(got, p) }
	for _, p := range in {
		im.Push(p, emit)
	}
	im.Flush(emit)
	require.Equal(t, want, got)
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{Loss: -0.1}, {Duplicate: 1.5}, {Reorder: 2}, {Window: -1}, {Delay: -1}, {Jitter: -1}} {
		_, _, err := Apply(c, nil)
		require.Error(t, err, "%+v", c)
	}
	require.Panics(t, func() { New(Config{Loss: 3}) })
	out, st, err := Apply(Config{Loss: 1}, frames(10))
	require.NoError(t, err)
	require.Empty(t, out)
	require.Equal(t, 10, st.Dropped)
}
