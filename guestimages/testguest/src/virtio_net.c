/*
 * virtio_net.c - a minimal, polled virtio-net driver that reports what the
 * device does, one line per fact (see README.md for the line formats).
 *
 * Sequence: find the device, reset, ACKNOWLEDGE|DRIVER, read the offered
 * features (words 0..3), negotiate (features= mask, rsc=1), FEATURES_OK and
 * its read-back, device config, queues (rx 0, tx 1, ctrl 2 or 2N with MQ),
 * MSI-X vectors, DRIVER_OK, rx buffers, control commands (ctrl=), "ready",
 * transmit (tx=), receive (rx=/rxwait=), reset.
 *
 * Everything is polled: the used rings are read from memory, device registers
 * are touched only to configure and to notify.
 */
#include <stdint.h>

#include "cmdline.h"
#include "heap.h"
#include "io.h"
#include "mem.h"
#include "power.h"
#include "printf.h"
#include "ring.h"
#include "virtio.h"
#include "virtio_net.h"
#include "virtio_pci.h"

#define DEFAULT_FEATURES                                                                          \
	(BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_NET_F_MAC) | BIT(VIRTIO_NET_F_STATUS) |             \
	 BIT(VIRTIO_NET_F_CTRL_VQ) | BIT(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) |                      \
	 BIT(VIRTIO_NET_F_CTRL_RX) | BIT(VIRTIO_NET_F_CTRL_MAC_ADDR) |                            \
	 BIT(VIRTIO_NET_F_GUEST_CSUM) | BIT(VIRTIO_NET_F_GUEST_TSO4) |                            \
	 BIT(VIRTIO_NET_F_GUEST_TSO6) | BIT(VIRTIO_NET_F_MRG_RXBUF) | BIT(VIRTIO_NET_F_CSUM) |    \
	 BIT(VIRTIO_NET_F_HOST_TSO4) | BIT(VIRTIO_NET_F_HOST_TSO6))

#define MAX_FRAME 65550u        /* 14 + 4 (VLAN) + 65532: largest frame with GSO */
#define SMALL_FRAME 1518u       /* Ethernet + VLAN tag + 1500 */
#define MAX_DESCS_PER_BUF 64
#define POLL_SPINS 4096         /* memory polls between PM timer reads */
#define FNV_OFFSET 0x811c9dc5u
#define FNV_PRIME 0x01000193u

static struct vpci dev;
static struct vq rxq, txq, ctrlq;
static int have_ctrl;
static uint64_t negotiated;
static uint32_t hdrlen;
static uint8_t mac[6];

static int has(int bit)
{
	return (negotiated >> bit) & 1;
}

/* ---- elapsed time on the ACPI PM timer (24-bit safe: read often) ---- */

struct stopwatch {
	uint32_t last;
	uint64_t ticks;
};

static void sw_start(struct stopwatch *sw)
{
	sw->last = pm_timer_read();
	sw->ticks = 0;
}

/* Milliseconds since sw_start; call at least every ~4 s. */
static uint32_t sw_ms(struct stopwatch *sw)
{
	uint32_t now = pm_timer_read();

	sw->ticks += (now - sw->last) & 0xffffff;
	sw->last = now;
	return (uint32_t)(sw->ticks * 1000u / ACPI_PM_TMR_HZ);
}

/*
 * Waits for a used entry on q for up to ms milliseconds, polling memory and
 * reading the timer every POLL_SPINS polls. Returns vq_poll's result (0 on
 * timeout).
 */
static int wait_used(struct vq *q, uint32_t ms, uint32_t *token, uint32_t *len)
{
	struct stopwatch sw;

	sw_start(&sw);
	for (;;) {
		for (uint32_t i = 0; i < POLL_SPINS; i++) {
			if (vq_pending(q))
				return vq_poll(q, token, len);
		}
		if (sw_ms(&sw) >= ms)
			return vq_poll(q, token, len);
	}
}

/* ---- small parsers for option values ---- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parses a decimal or 0x-hex number at *s, advancing *s. Returns 0 or -1. */
static int parse_num(const char **s, uint64_t *v)
{
	const char *p = *s;
	unsigned int base = 10;
	uint64_t n = 0;
	int digits = 0;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	for (;; p++) {
		int d = hexval(*p);

		if (d < 0 || (unsigned int)d >= base)
			break;
		n = n * base + (unsigned int)d;
		digits++;
	}
	if (!digits)
		return -1;
	*v = n;
	*s = p;
	return 0;
}

/* "aa:bb:cc:dd:ee:ff" at *s. */
static int parse_mac(const char **s, uint8_t out[6])
{
	const char *p = *s;

	for (int i = 0; i < 6; i++) {
		int hi = hexval(p[0]), lo = hexval(p[1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
		p += 2;
		if (i < 5) {
			if (*p != ':' && *p != '-')
				return -1;
			p++;
		}
	}
	*s = p;
	return 0;
}

static int parse_ip(const char *p, uint8_t out[4])
{
	for (int i = 0; i < 4; i++) {
		uint64_t v;

		if (parse_num(&p, &v) || v > 255)
			return -1;
		out[i] = (uint8_t)v;
		if (i < 3 && *p++ != '.')
			return -1;
	}
	return *p ? -1 : 0;
}

static void opt_mac(const char *key, const uint8_t def[6], uint8_t out[6])
{
	const char *v = cmdline_get(key, 0);

	memcpy(out, def, 6);
	if (v && *v && parse_mac(&v, out) == 0 && *v == 0)
		return;
	memcpy(out, def, 6);
}

static void opt_ip(const char *key, const uint8_t def[4], uint8_t out[4])
{
	const char *v = cmdline_get(key, 0);

	if (!v || parse_ip(v, out) != 0)
		memcpy(out, def, 4);
}

/* ---- checksums ---- */

static uint32_t fnv1a(uint32_t h, const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

/* One's-complement sum of big-endian 16-bit words (odd tail padded). */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, uint32_t n)
{
	uint32_t i;

	for (i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

static void put16be(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* ---- hex dump of received frames (rxdump=1) ---- */

struct dumper {
	uint32_t n, off, fill;
	uint8_t buf[32];
};

static void dump_flush(struct dumper *d)
{
	static const char digits[] = "0123456789abcdef";
	char line[2 * sizeof(d->buf) + 1];

	if (!d->fill)
		return;
	for (uint32_t i = 0; i < d->fill; i++) {
		line[2 * i] = digits[d->buf[i] >> 4];
		line[2 * i + 1] = digits[d->buf[i] & 15];
	}
	line[2 * d->fill] = 0;
	kprintf("rxdata n=%u off=%u %s\n", d->n, d->off, line);
	d->off += d->fill;
	d->fill = 0;
}

static void dump_bytes(struct dumper *d, const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		d->buf[d->fill++] = p[i];
		if (d->fill == sizeof(d->buf))
			dump_flush(d);
	}
}

/* ---- receive ---- */

static struct {
	uint8_t *pool;
	uint32_t stride;  /* bytes between buffers */
	uint32_t size;    /* bytes per buffer (header included) */
	uint32_t chunk;   /* max bytes per descriptor */
	uint32_t descs;   /* descriptors per buffer */
	uint32_t nbufs;
	int split;        /* header in its own descriptor */
	int mrg;
	const char *mode;
} rx;

static uint32_t buf_descs(uint32_t size, uint32_t chunk, int split)
{
	uint32_t data = size, n = 0;

	if (split) {
		data = size - hdrlen;
		n = 1;
	}
	return n + (data + chunk - 1) / chunk;
}

static int rx_configure(void)
{
	rx.mrg = has(VIRTIO_NET_F_MRG_RXBUF);
	rx.split = cmdline_get_u64("rxsplit", 0) != 0;
	int big = has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6) ||
		  has(VIRTIO_NET_F_GUEST_UFO);
	uint32_t def_size, def_chunk;

	if (rx.mrg) {
		rx.mode = "mrg";
		def_size = 4096; /* page-sized buffers, frames span several */
		def_chunk = def_size;
	} else if (big) {
		rx.mode = "big";
		def_size = hdrlen + MAX_FRAME; /* 65562: a whole GSO frame per chain */
		def_chunk = 4096;
	} else {
		rx.mode = "small";
		def_size = hdrlen + SMALL_FRAME;
		def_chunk = def_size;
	}
	uint64_t size = cmdline_get_u64("rxbuf", def_size);
	uint64_t chunk = cmdline_get_u64("rxdesc", def_chunk);
	if (size <= hdrlen || size > 1u << 20 || chunk == 0 || chunk > size) {
		kprintf("virtio error rx buffer size=%lu desc=%lu invalid\n", size, chunk);
		return -1;
	}
	rx.size = (uint32_t)size;
	rx.chunk = (uint32_t)chunk;
	rx.descs = buf_descs(rx.size, rx.chunk, rx.split);
	if (rx.descs > MAX_DESCS_PER_BUF || rx.descs > rxq.size) {
		kprintf("virtio error rx buffer needs %u descriptors, queue has %u\n", rx.descs,
			rxq.size);
		return -1;
	}
	rx.nbufs = rxq.size / rx.descs;
	uint64_t want = cmdline_get_u64("rxbufs", rx.nbufs);
	if (want >= 1 && want < rx.nbufs)
		rx.nbufs = (uint32_t)want;
	rx.stride = (rx.size + 63) & ~63u;
	rx.pool = heap_alloc((uint64_t)rx.stride * rx.nbufs, 4096);
	return rx.pool ? 0 : -1;
}

static uint8_t *rx_buf(uint32_t slot)
{
	return rx.pool + (uint64_t)slot * rx.stride;
}

static int rx_post(uint32_t slot)
{
	struct vq_buf b[MAX_DESCS_PER_BUF];
	uint8_t *p = rx_buf(slot);
	uint32_t n = 0, off = 0;

	memset(p, 0, hdrlen); /* num_buffers etc. read back deterministically */
	if (rx.split) {
		b[n++] = (struct vq_buf){ (uint64_t)(uintptr_t)p, hdrlen, 1 };
		off = hdrlen;
	}
	while (off < rx.size) {
		uint32_t len = rx.size - off < rx.chunk ? rx.size - off : rx.chunk;

		b[n++] = (struct vq_buf){ (uint64_t)(uintptr_t)(p + off), len, 1 };
		off += len;
	}
	if (vq_add(&rxq, b, n, slot) < 0) {
		kprintf("virtio error rx queue full reposting buffer %u\n", slot);
		return -1;
	}
	return 0;
}

/* Validates a used rx entry's token and length. */
static int rx_check(uint32_t n, uint32_t slot, uint32_t len, uint32_t min)
{
	if (slot >= rx.nbufs) {
		kprintf("virtio error rx n=%u token=%u unknown\n", n, slot);
		return -1;
	}
	if (len < min || len > rx.size) {
		kprintf("virtio error rx n=%u used len=%u outside [%u,%u]\n", n, len, min, rx.size);
		return -1;
	}
	return 0;
}

/* Handles one received packet whose first used entry is (slot, len). */
static int rx_packet(uint32_t n, uint32_t slot, uint32_t len, int dump, int sum_on,
		     uint32_t wait_ms)
{
	struct virtio_net_hdr h;
	struct dumper d = { .n = n };

	if (rx_check(n, slot, len, hdrlen))
		return -1;
	memset(&h, 0, sizeof(h));
	memcpy(&h, rx_buf(slot), hdrlen);
	uint32_t nb = rx.mrg ? h.num_buffers : 1;
	if (nb == 0 || nb > rx.nbufs) {
		kprintf("virtio error rx n=%u num_buffers=%u invalid (%u buffers posted)\n", n,
			h.num_buffers, rx.nbufs);
		return -1;
	}
	uint32_t frame = len - hdrlen;
	uint32_t sum = FNV_OFFSET;
	if (sum_on)
		sum = fnv1a(sum, rx_buf(slot) + hdrlen, frame);
	if (dump)
		dump_bytes(&d, rx_buf(slot) + hdrlen, frame);
	if (rx_post(slot))
		return -1;
	for (uint32_t k = 1; k < nb; k++) {
		uint32_t s, l;
		int r = wait_used(&rxq, wait_ms, &s, &l);

		if (r == 0)
			kprintf("virtio error rx n=%u buffer %u of %u missing\n", n, k + 1, nb);
		if (r <= 0 || rx_check(n, s, l, 0))
			return -1;
		if (sum_on)
			sum = fnv1a(sum, rx_buf(s), l);
		if (dump)
			dump_bytes(&d, rx_buf(s), l);
		frame += l;
		if (rx_post(s))
			return -1;
	}
	vq_kick(&rxq);
	if (dump)
		dump_flush(&d);
	kprintf("rx n=%u len=%u bufs=%u flags=%02x gso_type=%02x hdr_len=%u gso_size=%u"
		" csum_start=%u csum_offset=%u num_buffers=%u sum=%08x\n",
		n, frame, nb, h.flags, h.gso_type, h.hdr_len, h.gso_size, h.csum_start,
		h.csum_offset, h.num_buffers, sum);
	if (h.flags & VIRTIO_NET_HDR_F_RSC_INFO)
		kprintf("rsc n=%u segs=%u dupacks=%u\n", n, h.csum_start, h.csum_offset);
	return 0;
}

static void rx_loop(void)
{
	uint64_t target = cmdline_get_u64("rx", 0);
	uint64_t idle_ms = cmdline_get_u64("rxwait", 10000);
	uint64_t first_ms = cmdline_get_u64("rxfirst", idle_ms);
	int dump = cmdline_get_u64("rxdump", 0) != 0;
	int sum_on = cmdline_get_u64("rxsum", 1) != 0;
	uint32_t n = 0;
	const char *reason = "count";
	struct stopwatch sw;

	sw_start(&sw);
	while (target == 0 || n < target) {
		uint32_t slot, len;
		int r = 0;

		for (uint32_t i = 0; i < POLL_SPINS; i++) {
			if (vq_pending(&rxq)) {
				r = vq_poll(&rxq, &slot, &len);
				break;
			}
		}
		if (r < 0) {
			reason = "error";
			break;
		}
		if (r > 0) {
			if (rx_packet(n, slot, len, dump, sum_on, 1000)) {
				reason = "error";
				break;
			}
			n++;
			sw_start(&sw);
			continue;
		}
		if (sw_ms(&sw) >= (n ? idle_ms : first_ms)) {
			reason = "idle";
			break;
		}
	}
	kprintf("rxend packets=%u reason=%s\n", n, reason);
}

/* ---- transmit ---- */

static struct {
	uint8_t *pool;
	uint32_t stride, nslots;
	uint32_t *seq, *len, *sum; /* per slot: frame number, length, checksum */
} tx;

/* Builds UDP frame number seq (len bytes) after a virtio header at p. */
static uint32_t tx_build(uint8_t *p, uint32_t seq, uint32_t len, const uint8_t dst[6],
			 const uint8_t sip[4], const uint8_t dip[4], uint16_t port, int partial)
{
	static const char tag[] = "rscvm-testguest";
	struct virtio_net_hdr *h = (struct virtio_net_hdr *)p;
	uint8_t *f = p + hdrlen;
	uint32_t iplen = len - 14, udplen = len - 34;

	memset(p, 0, hdrlen);
	memcpy(f, dst, 6);
	memcpy(f + 6, mac, 6);
	put16be(f + 12, 0x0800);
	uint8_t *ip = f + 14;
	ip[0] = 0x45;
	ip[1] = 0;
	put16be(ip + 2, (uint16_t)iplen);
	put16be(ip + 4, (uint16_t)seq);
	put16be(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = 17;
	put16be(ip + 10, 0);
	memcpy(ip + 12, sip, 4);
	memcpy(ip + 16, dip, 4);
	put16be(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, 20)));
	uint8_t *udp = ip + 20;
	put16be(udp, 40000);
	put16be(udp + 2, port);
	put16be(udp + 4, (uint16_t)udplen);
	put16be(udp + 6, 0);
	uint8_t *pl = udp + 8;
	uint32_t plen = udplen - 8;
	for (uint32_t i = 0; i < plen; i++) {
		if (i < sizeof(tag) - 1)
			pl[i] = (uint8_t)tag[i];
		else if (i == sizeof(tag) - 1)
			pl[i] = (uint8_t)seq;
		else
			pl[i] = (uint8_t)(i * 7 + seq);
	}
	uint32_t pseudo = csum_add(0, ip + 12, 8) + 17 + udplen;
	if (partial) {
		put16be(udp + 6, csum_fold(pseudo));
		h->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
		h->csum_start = 34;
		h->csum_offset = 6;
	} else {
		uint16_t c = (uint16_t)~csum_fold(csum_add(pseudo, udp, udplen));
		put16be(udp + 6, c ? c : 0xffff);
	}
	return fnv1a(FNV_OFFSET, f, len);
}

static void tx_run(void)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t def_sip[4] = { 10, 0, 2, 15 }, def_dip[4] = { 10, 0, 2, 2 };
	uint64_t count = cmdline_get_u64("tx", 0);
	uint64_t len = cmdline_get_u64("txlen", 128);
	uint64_t wait_ms = cmdline_get_u64("txwait", 2000);
	uint16_t port = (uint16_t)cmdline_get_u64("txport", 9);
	int partial = cmdline_get_u64("txcsum", 0) && has(VIRTIO_NET_F_CSUM);
	int split = cmdline_get_u64("txsplit", 0) != 0;
	uint8_t dst[6], sip[4], dip[4];
	uint32_t sent = 0, done = 0;
	const char *reason = "count";

	if (count == 0)
		return;
	if (len < 42 || len > 65535) {
		kprintf("virtio error txlen=%lu outside [42,65535]\n", len);
		return;
	}
	opt_mac("txdst", bcast, dst);
	opt_ip("txsrcip", def_sip, sip);
	opt_ip("txip", def_dip, dip);

	uint32_t per = split ? 2 : 1;
	tx.nslots = txq.size / per;
	if (tx.nslots > 32)
		tx.nslots = 32;
	if (tx.nslots > count)
		tx.nslots = (uint32_t)count;
	tx.stride = (uint32_t)((hdrlen + len + 63) & ~63ull);
	tx.pool = heap_alloc((uint64_t)tx.stride * tx.nslots, 4096);
	tx.seq = heap_alloc(4ull * tx.nslots, 8);
	tx.len = heap_alloc(4ull * tx.nslots, 8);
	tx.sum = heap_alloc(4ull * tx.nslots, 8);
	if (!tx.pool || !tx.seq || !tx.len || !tx.sum)
		return;

	uint32_t free_slots = tx.nslots;
	uint32_t *stack = heap_alloc(4ull * tx.nslots, 8);
	if (!stack)
		return;
	for (uint32_t i = 0; i < tx.nslots; i++)
		stack[i] = tx.nslots - 1 - i;

	while (done < count) {
		while (sent < count && free_slots) {
			uint32_t slot = stack[--free_slots];
			uint8_t *p = tx.pool + (uint64_t)slot * tx.stride;
			struct vq_buf b[2];

			tx.seq[slot] = sent;
			tx.len[slot] = (uint32_t)len;
			tx.sum[slot] = tx_build(p, sent, (uint32_t)len, dst, sip, dip, port, partial);
			if (split) {
				b[0] = (struct vq_buf){ (uint64_t)(uintptr_t)p, hdrlen, 0 };
				b[1] = (struct vq_buf){ (uint64_t)(uintptr_t)(p + hdrlen), (uint32_t)len, 0 };
			} else {
				b[0] = (struct vq_buf){ (uint64_t)(uintptr_t)p, hdrlen + (uint32_t)len, 0 };
			}
			if (vq_add(&txq, b, per, slot) < 0) {
				free_slots++;
				break;
			}
			sent++;
		}
		vq_kick(&txq);
		uint32_t slot, used_len;
		int r = wait_used(&txq, (uint32_t)wait_ms, &slot, &used_len);
		if (r == 0) {
			reason = "timeout";
			break;
		}
		if (r < 0 || slot >= tx.nslots) {
			if (r > 0)
				kprintf("virtio error tx token=%u unknown\n", slot);
			reason = "error";
			break;
		}
		kprintf("tx n=%u len=%u sum=%08x ok\n", tx.seq[slot], tx.len[slot], tx.sum[slot]);
		stack[free_slots++] = slot;
		done++;
	}
	kprintf("txend sent=%u done=%u reason=%s\n", sent, done, reason);
}

/* ---- control queue ---- */

#define CTRL_NORMAL 0
#define CTRL_BROKEN_HDR 1 /* only one byte of class/cmd: a device must fail it */
#define CTRL_BROKEN_ACK 2 /* no device-writable ack byte */

static uint8_t *ctrl_mem;
static uint32_t ctrl_n;

static void ctrl_send(uint8_t cls, uint8_t cmd, const uint8_t *data, uint32_t len, int variant)
{
	uint8_t *hdr = ctrl_mem, *payload = ctrl_mem + 64, *ack = ctrl_mem + 4000;
	struct vq_buf b[3];
	unsigned int n = 0;
	uint32_t num = ctrl_n++;

	if (!have_ctrl) {
		kprintf("ctrl n=%u class=%u cmd=%u len=%u ack=none\n", num, cls, cmd, len);
		return;
	}
	if (len > 3900)
		len = 3900;
	hdr[0] = cls;
	hdr[1] = cmd;
	memcpy(payload, data, len);
	*(volatile uint8_t *)ack = 0xff;
	b[n++] = (struct vq_buf){ (uint64_t)(uintptr_t)hdr, variant == CTRL_BROKEN_HDR ? 1u : 2u, 0 };
	if (variant == CTRL_BROKEN_HDR)
		len = 0; /* the whole device-readable part is one byte */
	if (len)
		b[n++] = (struct vq_buf){ (uint64_t)(uintptr_t)payload, len, 0 };
	if (variant != CTRL_BROKEN_ACK)
		b[n++] = (struct vq_buf){ (uint64_t)(uintptr_t)ack, 1, 1 };
	if (vq_add(&ctrlq, b, n, num) < 0) {
		kprintf("ctrl n=%u class=%u cmd=%u len=%u ack=none\n", num, cls, cmd, len);
		return;
	}
	vq_kick(&ctrlq);
	uint32_t token, used_len;
	int r = wait_used(&ctrlq, (uint32_t)cmdline_get_u64("ctrlwait", 1000), &token, &used_len);
	if (r <= 0) {
		kprintf("ctrl n=%u class=%u cmd=%u len=%u ack=%s\n", num, cls, cmd, len,
			r == 0 ? "timeout" : "error");
		return;
	}
	kprintf("ctrl n=%u class=%u cmd=%u len=%u ack=%u used_len=%u\n", num, cls, cmd, len,
		*(volatile uint8_t *)ack, used_len);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* The deliberately malformed commands of ctrl=bad (each must be answered ERR). */
static void ctrl_bad(void)
{
	uint8_t z[16] = { 0 };

	ctrl_send(VIRTIO_NET_CTRL_RX, 0, z, 0, CTRL_NORMAL);          /* promisc, no payload */
	ctrl_send(VIRTIO_NET_CTRL_RX, 0, z, 2, CTRL_NORMAL);          /* promisc, 2 bytes */
	ctrl_send(VIRTIO_NET_CTRL_RX, 9, z, 1, CTRL_NORMAL);          /* unknown rx command */
	ctrl_send(200, 0, z, 1, CTRL_NORMAL);                         /* unknown class */
	ctrl_send(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, z, 5, CTRL_NORMAL);
	ctrl_send(VIRTIO_NET_CTRL_MAC, 7, z, 6, CTRL_NORMAL);         /* unknown mac command */
	ctrl_send(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, z, 4, CTRL_NORMAL); /* short mask */
	put_le(z, BIT(VIRTIO_NET_F_MRG_RXBUF), 8);                      /* not an offload */
	ctrl_send(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, z, 8, CTRL_NORMAL);
	put_le(z, 4096, 2);
	ctrl_send(VIRTIO_NET_CTRL_VLAN, 0, z, 2, CTRL_NORMAL);        /* vid out of range */
	put_le(z, 0, 8);
	ctrl_send(VIRTIO_NET_CTRL_MQ, 0, z, 2, CTRL_NORMAL);          /* 0 pairs */
	ctrl_send(VIRTIO_NET_CTRL_ANNOUNCE, 0, z, 0, CTRL_NORMAL);    /* nothing announced */
}

/* Runs the comma-separated commands of option key (ctrl=, ctrl2=; see README.md). */
static void ctrl_run(const char *key)
{
	static const char *const rx_cmds[] = { "promisc", "allmulti", "alluni", "nomulti", "nouni",
					       "nobcast" };
	const char *p = cmdline_get(key, "");
	uint8_t buf[3900];

	while (*p) {
		const char *tok = p;
		uint64_t v, v2;
		uint32_t klen = 0;
		int ok = 0;

		while (tok[klen] && tok[klen] != ':' && tok[klen] != ',')
			klen++;
		const char *arg = tok + klen + (tok[klen] == ':');

		for (unsigned int i = 0; i < sizeof(rx_cmds) / sizeof(rx_cmds[0]); i++) {
			if (strlen(rx_cmds[i]) == klen && strncmp(tok, rx_cmds[i], klen) == 0 &&
			    parse_num(&arg, &v) == 0) {
				buf[0] = (uint8_t)v;
				ctrl_send(VIRTIO_NET_CTRL_RX, (uint8_t)i, buf, 1, CTRL_NORMAL);
				ok = 1;
			}
		}
		if (ok) {
			/* done */
		} else if (klen == 3 && strncmp(tok, "mac", 3) == 0 && parse_mac(&arg, buf) == 0) {
			ctrl_send(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, buf, 6, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 8 && strncmp(tok, "mactable", 8) == 0 && parse_num(&arg, &v) == 0 &&
			   *arg++ == ':' && parse_num(&arg, &v2) == 0 && v <= 100 && v2 <= 100) {
			/* v unicast entries 52:54:00:00:01:ii, v2 multicast 01:00:5e:00:00:ii */
			uint32_t o = 0;
			put_le(buf, v, 4);
			o = 4;
			for (uint32_t i = 0; i < v; i++, o += 6) {
				static const uint8_t u[6] = { 0x52, 0x54, 0, 0, 1, 0 };
				memcpy(buf + o, u, 6);
				buf[o + 5] = (uint8_t)i;
			}
			put_le(buf + o, v2, 4);
			o += 4;
			for (uint32_t i = 0; i < v2; i++, o += 6) {
				static const uint8_t m[6] = { 0x01, 0x00, 0x5e, 0, 0, 0 };
				memcpy(buf + o, m, 6);
				buf[o + 5] = (uint8_t)i;
			}
			ctrl_send(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, buf, o, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 7 && strncmp(tok, "vlanadd", 7) == 0 && parse_num(&arg, &v) == 0) {
			put_le(buf, v, 2);
			ctrl_send(VIRTIO_NET_CTRL_VLAN, 0, buf, 2, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 7 && strncmp(tok, "vlandel", 7) == 0 && parse_num(&arg, &v) == 0) {
			put_le(buf, v, 2);
			ctrl_send(VIRTIO_NET_CTRL_VLAN, 1, buf, 2, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 8 && strncmp(tok, "announce", 8) == 0) {
			ctrl_send(VIRTIO_NET_CTRL_ANNOUNCE, 0, buf, 0, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 2 && strncmp(tok, "mq", 2) == 0 && parse_num(&arg, &v) == 0) {
			put_le(buf, v, 2);
			ctrl_send(VIRTIO_NET_CTRL_MQ, 0, buf, 2, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 8 && strncmp(tok, "offloads", 8) == 0 && parse_num(&arg, &v) == 0) {
			put_le(buf, v, 8);
			ctrl_send(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, buf, 8, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 3 && strncmp(tok, "raw", 3) == 0 && parse_num(&arg, &v) == 0 &&
			   *arg++ == ':' && parse_num(&arg, &v2) == 0) {
			/* raw:CLASS:CMD[:HEX] */
			uint32_t n = 0;
			if (*arg == ':') {
				arg++;
				while (n < sizeof(buf) && hexval(arg[0]) >= 0 && hexval(arg[1]) >= 0) {
					buf[n++] = (uint8_t)(hexval(arg[0]) << 4 | hexval(arg[1]));
					arg += 2;
				}
			}
			ctrl_send((uint8_t)v, (uint8_t)v2, buf, n, CTRL_NORMAL);
			ok = 1;
		} else if (klen == 3 && strncmp(tok, "bad", 3) == 0) {
			ctrl_bad();
			ok = 1;
		} else if (klen == 6 && strncmp(tok, "broken", 6) == 0) {
			buf[0] = 1;
			if (strncmp(arg, "hdr", 3) == 0) {
				ctrl_send(VIRTIO_NET_CTRL_RX, 0, buf, 1, CTRL_BROKEN_HDR);
				arg += 3;
				ok = 1;
			} else if (strncmp(arg, "ack", 3) == 0) {
				ctrl_send(VIRTIO_NET_CTRL_RX, 0, buf, 1, CTRL_BROKEN_ACK);
				arg += 3;
				ok = 1;
			}
		}
		/* Skip to the next command. */
		p = ok ? arg : tok;
		if (!ok) {
			uint32_t i = 0;
			while (p[i] && p[i] != ',')
				i++;
			kprintf("ctrl unknown command \"");
			for (uint32_t k = 0; k < i; k++)
				kprintf("%c", p[k]);
			kprintf("\"\n");
		}
		while (*p && *p != ',')
			p++;
		if (*p == ',')
			p++;
	}
}

/* ---- setup ---- */

static void print_config(void)
{
	uint8_t gen, gen2, m[6];
	uint16_t st, pairs, mtu;
	int tries = 0;

	do {
		gen = vpci_cfg_generation(&dev);
		for (int i = 0; i < 6; i++)
			m[i] = vpci_cfg8(&dev, VNC_MAC + i);
		st = vpci_cfg16(&dev, VNC_STATUS);
		pairs = vpci_cfg16(&dev, VNC_MAX_PAIRS);
		mtu = vpci_cfg16(&dev, VNC_MTU);
		gen2 = vpci_cfg_generation(&dev);
	} while (gen != gen2 && ++tries < 4);
	memcpy(mac, m, 6);
	kprintf("virtio config mac=%02x:%02x:%02x:%02x:%02x:%02x status=%04x max_pairs=%u mtu=%u"
		" generation=%u\n",
		m[0], m[1], m[2], m[3], m[4], m[5], st, pairs, mtu, gen2);
}

/* Busy-waits ms milliseconds on the PM timer (the device is not touched). */
static void sleep_ms(uint64_t ms)
{
	struct stopwatch sw;

	sw_start(&sw);
	while (sw_ms(&sw) < ms) {
		for (volatile uint32_t i = 0; i < POLL_SPINS; i++)
			;
	}
}

/* Queue sizes, control queue index, MSI-X vectors: kept for reinit=1. */
static struct qlayout {
	uint16_t rxs, txs, cts, ctrl_idx, vec_rx, vec_tx, vec_ctrl;
	int event_idx;
} layout;

static int queues_init(void)
{
	return vq_init(&rxq, &dev, 0, layout.rxs, layout.vec_rx, layout.event_idx) ||
	       vq_init(&txq, &dev, 1, layout.txs, layout.vec_tx, layout.event_idx) ||
	       (have_ctrl && vq_init(&ctrlq, &dev, layout.ctrl_idx, layout.cts, layout.vec_ctrl,
				     layout.event_idx));
}

static void fail(const char *what)
{
	kprintf("virtio error %s status=%02x\n", what, vpci_status(&dev));
	vpci_set_status(&dev, (uint8_t)(vpci_status(&dev) | VIRTIO_STATUS_FAILED));
}

/*
 * reinit=1: resets the device while whatever it holds (e.g. packets it is
 * coalescing) is pending, then sets it up again as before: same features,
 * fresh rings, the rx buffers posted again (frames received before the reset
 * and not yet taken are dropped with the old rings), the ctrl= commands
 * again. Prints "reinit status=%02x negotiated=0x%016lx rxbufs=%u".
 */
static int reinit(int legacy, uint8_t features_status)
{
	vpci_reset(&dev);
	vpci_set_status(&dev, VIRTIO_STATUS_ACKNOWLEDGE);
	vpci_set_status(&dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	vpci_set_driver_features(&dev, negotiated);
	vpci_set_status(&dev, features_status);
	uint8_t status = vpci_status(&dev);
	if (!legacy && !(status & VIRTIO_STATUS_FEATURES_OK)) {
		fail("reinit: features_ok not accepted");
		return -1;
	}
	if (queues_init()) {
		fail("reinit: queue setup failed");
		return -1;
	}
	vpci_set_status(&dev, (uint8_t)(status | VIRTIO_STATUS_DRIVER_OK));
	for (uint32_t i = 0; i < rx.nbufs; i++)
		if (rx_post(i))
			return -1;
	vq_kick(&rxq);
	ctrl_run("ctrl");
	kprintf("reinit status=%02x negotiated=0x%016lx rxbufs=%u\n", vpci_status(&dev), negotiated,
		rx.nbufs);
	return 0;
}

int net_test(void)
{
	int legacy = cmdline_get_u64("legacy", 0) != 0;

	if (vpci_find_net(&dev)) {
		kprintf("virtio error no virtio-net device\n");
		return -1;
	}
	if (vpci_setup(&dev, legacy))
		return -1;

	vpci_reset(&dev);
	vpci_set_status(&dev, VIRTIO_STATUS_ACKNOWLEDGE);
	vpci_set_status(&dev, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);

	uint32_t f[4];
	for (uint32_t i = 0; i < 4; i++)
		f[i] = vpci_device_features(&dev, i);
	uint64_t offered = (uint64_t)f[1] << 32 | f[0];
	uint64_t offered_hi = (uint64_t)f[3] << 32 | f[2];
	uint64_t wanted = cmdline_get_u64("features", DEFAULT_FEATURES);
	if (cmdline_get_u64("rsc", 0))
		wanted |= BIT(VIRTIO_NET_F_RSC_EXT);
	if (legacy)
		wanted &= 0xffffffffull;
	negotiated = offered & wanted;
	vpci_set_driver_features(&dev, negotiated);
	uint8_t status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
	if (!legacy)
		status |= VIRTIO_STATUS_FEATURES_OK;
	vpci_set_status(&dev, status);
	status = vpci_status(&dev);
	kprintf("virtio features offered=0x%016lx offered_hi=0x%016lx wanted=0x%016lx"
		" negotiated=0x%016lx status=%02x\n",
		offered, offered_hi, wanted, negotiated, status);
	if (!legacy && !(status & VIRTIO_STATUS_FEATURES_OK)) {
		fail("features_ok not accepted");
		return -1;
	}

	print_config();
	hdrlen = (!legacy || has(VIRTIO_NET_F_MRG_RXBUF)) ? 12 : 10;

	uint16_t nq = vpci_num_queues(&dev);
	uint16_t sizes[VPCI_MAX_QUEUES];
	uint16_t shown = nq < VPCI_MAX_QUEUES ? nq : VPCI_MAX_QUEUES;
	kprintf("virtio queues num=%u sizes=", nq);
	for (uint16_t i = 0; i < shown; i++) {
		sizes[i] = vpci_queue_max(&dev, i);
		kprintf("%s%u", i ? "," : "", sizes[i]);
	}
	kprintf("\n");

	uint16_t ctrl_idx = 2;
	if (has(VIRTIO_NET_F_MQ)) {
		uint16_t pairs = vpci_cfg16(&dev, VNC_MAX_PAIRS);
		if (pairs < 1 || pairs > 0x8000) {
			fail("max_virtqueue_pairs invalid");
			return -1;
		}
		ctrl_idx = (uint16_t)(2 * pairs);
	}
	have_ctrl = has(VIRTIO_NET_F_CTRL_VQ);
	if (shown < 2 || (have_ctrl && ctrl_idx >= shown)) {
		fail("too few queues");
		return -1;
	}

	int msix = cmdline_get_u64("msix", 0) != 0;
	if (msix && vpci_msix_enable(&dev) != 0) {
		fail("msix enable failed");
		return -1;
	}
	uint16_t cfg_vec = vpci_set_config_vector(&dev, msix ? 0 : VIRTIO_MSI_NO_VECTOR);
	uint16_t ts = dev.msix_size ? dev.msix_size : 1;
	uint16_t vec_rx = msix ? 1 % ts : VIRTIO_MSI_NO_VECTOR;
	uint16_t vec_tx = msix ? 2 % ts : VIRTIO_MSI_NO_VECTOR;
	uint16_t vec_ctrl = msix ? 3 % ts : VIRTIO_MSI_NO_VECTOR;

	uint64_t qsize = cmdline_get_u64("qsize", 0);
	uint16_t rxs = sizes[0], txs = sizes[1], cts = have_ctrl ? sizes[ctrl_idx] : 0;
	if (!legacy && qsize) {
		if (qsize < rxs)
			rxs = (uint16_t)qsize;
		if (qsize < txs)
			txs = (uint16_t)qsize;
		if (qsize < cts)
			cts = (uint16_t)qsize;
	}
	int event_idx = has(VIRTIO_F_RING_EVENT_IDX);
	layout = (struct qlayout){ rxs, txs, cts, ctrl_idx, vec_rx, vec_tx, vec_ctrl, event_idx };
	if (queues_init()) {
		fail("queue setup failed");
		return -1;
	}
	kprintf("virtio msix table_size=%u enabled=%u config=%04x rx=%04x tx=%04x ctrl=%04x\n",
		dev.msix_size, dev.msix_enabled, cfg_vec, rxq.msix_vector, txq.msix_vector,
		have_ctrl ? ctrlq.msix_vector : VIRTIO_MSI_NO_VECTOR);
	kprintf("virtio rings rx=0:%u tx=1:%u ctrl=%u:%u hdr_len=%u event_idx=%u\n", rxs, txs,
		have_ctrl ? ctrl_idx : 0, cts, hdrlen, event_idx);

	if (rx_configure())
		return -1;
	int early = cmdline_get_u64("rxearly", 0) != 0;
	if (early) {
		for (uint32_t i = 0; i < rx.nbufs; i++)
			if (rx_post(i))
				return -1;
	}
	vpci_set_status(&dev, (uint8_t)(status | VIRTIO_STATUS_DRIVER_OK));
	if (!early) {
		for (uint32_t i = 0; i < rx.nbufs; i++)
			if (rx_post(i))
				return -1;
	}
	vq_kick(&rxq);

	if (have_ctrl) {
		ctrl_mem = heap_alloc(4096, 4096);
		if (!ctrl_mem)
			return -1;
	}
	ctrl_run("ctrl");

	kprintf("ready status=%02x rxbufs=%u bufsize=%u descs=%u mode=%s heap=%lu\n",
		vpci_status(&dev), rx.nbufs, rx.size, rx.descs, rx.mode, heap_used());

	tx_run();
	uint64_t pause = cmdline_get_u64("pause", 0);
	if (pause)
		sleep_ms(pause);
	if (cmdline_get_u64("reinit", 0) && reinit(legacy, status))
		return -1;
	ctrl_run("ctrl2");
	if (cmdline_get("rx", 0) || cmdline_get("rxwait", 0))
		rx_loop();

	uint8_t end = vpci_status(&dev);
	vpci_reset(&dev);
	kprintf("virtio done status=%02x reset=%02x kicks=%u,%u,%u\n", end, vpci_status(&dev),
		rxq.kicks, txq.kicks, have_ctrl ? ctrlq.kicks : 0);
	return 0;
}
