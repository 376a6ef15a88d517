package virtio_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/virtio"
)

func TestKick(t *testing.T) {
	k, err := virtio.NewKick()
	require.NoError(t, err)
	defer k.Close()
	got, err := k.Drain()
	require.NoError(t, err)
	require.False(t, got, "a new kick has nothing pending")
	require.NoError(t, k.Signal())
	require.NoError(t, k.Signal())
	got, err = k.Drain()
	require.NoError(t, err)
	require.True(t, got)
	got, err = k.Drain()
	require.NoError(t, err)
	require.False(t, got, "one Drain consumes every pending signal")
}
