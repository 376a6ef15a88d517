/* uart.h - polled output on the COM1 16550. */
#ifndef TESTGUEST_UART_H
#define TESTGUEST_UART_H

#include <stddef.h>

#define COM1_BASE 0x3f8

void uart_init(void);
void uart_putc(char c);
void uart_write(const char *s, size_t n);

#endif
