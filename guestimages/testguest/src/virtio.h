/* virtio.h - virtio 1.x constants and layouts used by the test guest's driver. */
#ifndef TESTGUEST_VIRTIO_H
#define TESTGUEST_VIRTIO_H

#include <stdint.h>

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_DEV_NET_TRANSITIONAL 0x1000
#define VIRTIO_DEV_NET_MODERN 0x1041

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* virtio_pci_cap cfg_type values. */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

/* struct virtio_pci_common_cfg offsets. */
#define VPC_DFSELECT 0x00
#define VPC_DF 0x04
#define VPC_GFSELECT 0x08
#define VPC_GF 0x0c
#define VPC_MSIX_CONFIG 0x10
#define VPC_NUM_QUEUES 0x12
#define VPC_STATUS 0x14
#define VPC_CFG_GENERATION 0x15
#define VPC_Q_SELECT 0x16
#define VPC_Q_SIZE 0x18
#define VPC_Q_MSIX 0x1a
#define VPC_Q_ENABLE 0x1c
#define VPC_Q_NOTIFY_OFF 0x1e
#define VPC_Q_DESC 0x20
#define VPC_Q_AVAIL 0x28
#define VPC_Q_USED 0x30

/* Legacy I/O register block (BAR0). */
#define VPL_HOST_FEATURES 0x00
#define VPL_GUEST_FEATURES 0x04
#define VPL_QUEUE_PFN 0x08
#define VPL_QUEUE_NUM 0x0c
#define VPL_QUEUE_SEL 0x0e
#define VPL_QUEUE_NOTIFY 0x10
#define VPL_STATUS 0x12
#define VPL_ISR 0x13
#define VPL_MSIX_CONFIG 0x14
#define VPL_MSIX_QUEUE 0x16
#define VPL_CONFIG 0x14         /* device config without MSI-X enabled */
#define VPL_CONFIG_MSIX 0x18    /* device config with MSI-X enabled */
#define VPL_ALIGN 4096          /* legacy used-ring alignment */

#define VIRTIO_MSI_NO_VECTOR 0xffff

/* Feature bits. */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_CTRL_GUEST_OFFLOADS 2
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_CTRL_RX 18
#define VIRTIO_NET_F_CTRL_VLAN 19
#define VIRTIO_NET_F_MQ 22
#define VIRTIO_NET_F_CTRL_MAC_ADDR 23
#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_NET_F_RSC_EXT 61

#define BIT(n) (1ull << (n))

/* Split virtqueue layout. */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY 1

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[]; /* size entries, then used_event */
};

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[]; /* size entries, then avail_event */
};

/* struct virtio_net_hdr_v1 (12 bytes; the legacy header without MRG_RXBUF stops at 10). */
struct virtio_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
};

#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_F_RSC_INFO 4
#define VIRTIO_NET_HDR_GSO_NONE 0
#define VIRTIO_NET_HDR_GSO_TCPV4 1
#define VIRTIO_NET_HDR_GSO_TCPV6 4

/* Device config (struct virtio_net_config) offsets. */
#define VNC_MAC 0
#define VNC_STATUS 6
#define VNC_MAX_PAIRS 8
#define VNC_MTU 10

/* Control virtqueue classes and commands. */
#define VIRTIO_NET_CTRL_RX 0
#define VIRTIO_NET_CTRL_MAC 1
#define VIRTIO_NET_CTRL_MAC_TABLE_SET 0
#define VIRTIO_NET_CTRL_MAC_ADDR_SET 1
#define VIRTIO_NET_CTRL_VLAN 2
#define VIRTIO_NET_CTRL_ANNOUNCE 3
#define VIRTIO_NET_CTRL_MQ 4
#define VIRTIO_NET_CTRL_GUEST_OFFLOADS 5

#endif
