/*
 * uart.c - minimal polled 16550 driver for COM1.
 *
 * Every port access is a VM exit (~4.4 us under the emulated KVM), so the
 * transmitter is polled once per FIFO load rather than once per byte when the
 * UART reports a working 16-byte FIFO.
 */
#include <stdint.h>

#include "io.h"
#include "uart.h"

#define UART_THR 0 /* transmit holding register (DLAB=0) */
#define UART_DLL 0 /* divisor latch low (DLAB=1) */
#define UART_IER 1 /* interrupt enable (DLAB=0) */
#define UART_DLM 1 /* divisor latch high (DLAB=1) */
#define UART_FCR 2 /* FIFO control (write) */
#define UART_IIR 2 /* interrupt identification (read) */
#define UART_LCR 3 /* line control */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */

#define LSR_THRE 0x20 /* transmit holding register (or FIFO) empty */
#define FIFO_DEPTH 16

/* Give up on a transmitter that never drains instead of hanging the guest. */
#define POLL_LIMIT 20000

static unsigned int tx_room;   /* bytes we may write before polling again */
static unsigned int tx_burst = 1; /* bytes writable once THRE is seen */
static int tx_dead;            /* THRE never came: drop output */

void uart_init(void)
{
	outb(COM1_BASE + UART_IER, 0x00);  /* no interrupts */
	outb(COM1_BASE + UART_LCR, 0x80);  /* DLAB on */
	outb(COM1_BASE + UART_DLL, 0x01);  /* 115200 baud */
	outb(COM1_BASE + UART_DLM, 0x00);
	outb(COM1_BASE + UART_LCR, 0x03);  /* 8N1, DLAB off */
	outb(COM1_BASE + UART_FCR, 0x07);  /* enable and clear FIFOs */
	outb(COM1_BASE + UART_MCR, 0x03);  /* DTR, RTS */
	/* IIR bits 7:6 read 11 when the FIFOs are enabled (16550A). */
	if ((inb(COM1_BASE + UART_IIR) & 0xc0) == 0xc0)
		tx_burst = FIFO_DEPTH;
	tx_room = 0;
	tx_dead = 0;
}

static void wait_tx(void)
{
	for (unsigned int i = 0; i < POLL_LIMIT; i++) {
		if (inb(COM1_BASE + UART_LSR) & LSR_THRE) {
			tx_room = tx_burst;
			return;
		}
	}
	tx_dead = 1;
}

void uart_putc(char c)
{
	if (tx_dead)
		return;
	if (tx_room == 0) {
		wait_tx();
		if (tx_dead)
			return;
	}
	outb(COM1_BASE + UART_THR, (uint8_t)c);
	tx_room--;
}

void uart_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n')
			uart_putc('\r');
		uart_putc(s[i]);
	}
}
