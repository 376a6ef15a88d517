package virtionet

import (
	"fmt"

	"github.com/rscvm/rscvm/virtio"
)

// frontendFeatures are the features a vhost-user frontend implements itself
// for a virtio-net backend: the control queue and what it carries, and the
// configuration space (MAC, link status, speed and duplex, announcements).
const frontendFeatures = 1<<FeatureCtrlGuestOffloads | 1<<FeatureMAC | 1<<FeatureStatus |
	1<<FeatureCtrlVQ | 1<<FeatureCtrlRx | 1<<FeatureCtrlVLAN | 1<<FeatureCtrlRxExtra |
	1<<FeatureGuestAnnounce | 1<<FeatureCtrlMACAddr | 1<<FeatureSpeedDuplex

// VhostUserFeatureMask is the mask of this device's features a vhost-user
// backend offers: the datapath features (checksum and segmentation
// offloads, mergeable buffers, MQ, RSC_EXT, ring features), not the ones
// the frontend serves (see frontendFeatures), nor RING_RESET (vhost-user
// has no per-queue reset message; QEMU 7.2 resets vhost-user queues only
// by stopping the device).
func VhostUserFeatureMask() uint64 {
	return ^uint64(frontendFeatures | 1<<virtio.FeatureRingReset)
}

// VhostUserAck adjusts the features a vhost-user frontend acknowledged for
// this device: QEMU negotiates MQ with the guest but keeps it out of
// SET_FEATURES when it handles the control queue, so a device with more
// than one queue pair gets MQ (its queues are the frontend's rings 0..2N-1).
// The control-queue features never arrive: VhostUserFeatureMask keeps them
// out of the offer and the backend refuses bits it did not offer.
func (d *Device) VhostUserAck(acked uint64) uint64 {
	if d.maxPairs > 1 {
		acked |= 1 << FeatureMQ
	}
	return acked
}

// SetQueuePairs attaches the backend queues of the first n queue pairs and
// detaches the others: what VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET does, for a
// transport whose frontend handles the control queue (vhost-user, where
// the pairs in use are the ones whose rings the frontend enabled).
func (d *Device) SetQueuePairs(n int) error {
	if n < 1 || n > d.maxPairs {
		return fmt.Errorf("virtio-net: %d queue pairs (1 to %d)", n, d.maxPairs)
	}
	d.mu.Lock()
	d.pairsInUse = n
	d.mu.Unlock()
	if d.be.NumQueues() > 1 {
		if err := d.be.SetActiveQueues(min(n, d.be.NumQueues())); err != nil {
			return fmt.Errorf("virtio-net: attaching %d backend queues: %w", n, err)
		}
	}
	return nil
}
