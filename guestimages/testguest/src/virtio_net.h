/* virtio_net.h - the polled virtio-net test driver (option net=1). */
#ifndef TESTGUEST_VIRTIO_NET_H
#define TESTGUEST_VIRTIO_NET_H

/*
 * Drives the first virtio-net function through setup, control commands,
 * transmit and receive as the command line asks, printing the "virtio",
 * "ctrl", "ready", "tx", "rx" ... lines. Needs heap_init first. Returns 0, or
 * -1 when setup failed (a "virtio error" line says why).
 */
int net_test(void);

#endif
