/* Unit tests for the 16550A UART: Linux-style probing, TX/RX paths, interrupts, reset. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hw/serial.h"

#define FIFO_CHUNK 16

struct fake_chr {
    struct chardev chr;
    uint8_t out[256];
    size_t out_len;
    unsigned accept_calls;
};

static ssize_t fake_write(struct chardev *c, const uint8_t *buf, size_t len)
{
    struct fake_chr *f = (struct fake_chr *)c;
    for (size_t i = 0; i < len; i++)
        f->out[f->out_len++ % sizeof(f->out)] = buf[i];
    return (ssize_t)len;
}

static void fake_accept(struct chardev *c)
{
    __atomic_fetch_add(&((struct fake_chr *)c)->accept_calls, 1, __ATOMIC_RELAXED);
}

static const struct chardev_ops fake_ops = {.write = fake_write, .accept_input = fake_accept};

struct fake_irq {
    int level;
    unsigned changes;
};

static void fake_irq_set(void *opaque, unsigned gsi, int level)
{
    struct fake_irq *i = opaque;
    assert_int_equal(gsi, 4);
    if (level != i->level)
        i->changes++;
    i->level = level;
}

struct fixture {
    struct fake_chr chr;
    struct fake_irq irq;
    struct serial *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->chr.chr.ops = &fake_ops;
    f->s = serial_create(&f->chr.chr, (struct irq_line){fake_irq_set, &f->irq, 4});
    assert_non_null(f->s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    serial_destroy(f->s);
    assert_false(f->chr.chr.has_fe);
    free(f);
    return 0;
}

static uint8_t in(struct fixture *f, unsigned reg)
{
    return (uint8_t)serial_bus_ops.read(f->s, reg, 1);
}

static void out(struct fixture *f, unsigned reg, uint8_t v)
{
    serial_bus_ops.write(f->s, reg, 1, v);
}

static size_t can_receive(struct fixture *f)
{
    return f->chr.chr.fe.can_receive(f->chr.chr.fe.opaque);
}

static void receive(struct fixture *f, const char *s)
{
    f->chr.chr.fe.receive(f->chr.chr.fe.opaque, (const uint8_t *)s, strlen(s));
}

enum { RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

static void test_power_on_state(void **state)
{
    struct fixture *f = *state;
    assert_true(f->chr.chr.has_fe);
    assert_int_equal(in(f, IER), 0);
    assert_int_equal(in(f, IIR), 0x01);
    assert_int_equal(in(f, LCR), 0);
    assert_int_equal(in(f, MCR), 0);
    assert_int_equal(in(f, LSR), 0x60);
    assert_int_equal(in(f, MSR), 0xb0); /* CTS|DSR|DCD, no deltas */
    assert_int_equal(f->irq.level, 0);
}

/* The sequence of drivers/tty/serial/8250 autoconfig(), as far as this model is concerned. */
static void test_linux_probe(void **state)
{
    struct fixture *f = *state;

    /* Scratch register and IER read-back: "is there a UART here?" */
    out(f, SCR, 0xa5);
    assert_int_equal(in(f, SCR), 0xa5);
    out(f, SCR, 0x5a);
    assert_int_equal(in(f, SCR), 0x5a);
    out(f, IER, 0);
    assert_int_equal(in(f, IER) & 0x0f, 0);
    out(f, IER, 0x0f);
    assert_int_equal(in(f, IER) & 0x0f, 0x0f);
    out(f, IER, 0);

    /* Loopback test: RTS->CTS, OUT2->DCD. */
    uint8_t save_mcr = in(f, MCR);
    out(f, MCR, 0x10 | 0x0a);
    assert_int_equal(in(f, MSR) & 0xf0, 0x90);
    out(f, MCR, save_mcr);

    /* EFR probe must fail (reads at offset 2 give IIR whatever LCR holds). */
    out(f, LCR, 0xbf);
    out(f, 2, 0);
    out(f, LCR, 0);
    out(f, FCR, 0x01);
    assert_int_equal(in(f, IIR) >> 6, 3); /* 16550A */
    out(f, LCR, 0x80);
    assert_int_not_equal(in(f, 2), 0);
    out(f, LCR, 0xbf);
    assert_int_not_equal(in(f, 2), 0);
    out(f, LCR, 0);

    /* NS16550 EXCR1 test: offset 2 with LCR=0xE0 must not mirror MCR.LOOP. */
    uint8_t mcr = in(f, MCR);
    out(f, LCR, 0xe0);
    uint8_t s2 = in(f, 2);
    out(f, LCR, 0);
    assert_int_equal((s2 ^ mcr) & 0x10, 0);
    out(f, MCR, mcr ^ 0x10);
    out(f, LCR, 0xe0);
    s2 = in(f, 2);
    out(f, LCR, 0);
    out(f, MCR, mcr);
    assert_int_equal((s2 ^ mcr) & 0x10, 0);

    /* 16750 test: FCR bit 5 must not show as IIR bit 5. */
    out(f, FCR, 0x21);
    assert_int_equal(in(f, IIR) >> 5, 6);
    out(f, LCR, 0x80);
    out(f, FCR, 0x21);
    assert_int_equal(in(f, IIR) >> 5, 6);
    out(f, FCR, 0x01);
    out(f, LCR, 0);

    /* Clear FIFOs, then disable them: IIR bits 7:6 go back to 0. */
    out(f, FCR, 0x07);
    out(f, FCR, 0);
    assert_int_equal(in(f, IIR), 0x01);
    assert_int_equal(in(f, LSR), 0x60);

    /* serial8250_do_startup THRE re-assertion test. */
    out(f, IER, 0x02);
    assert_int_equal(in(f, IIR), 0x02);
    out(f, IER, 0);
    out(f, IER, 0x02);
    assert_int_equal(in(f, IIR), 0x02);
    assert_int_equal(in(f, IIR), 0x01);
    out(f, IER, 0);
    assert_int_equal(f->chr.out_len, 0);
}

static void test_tx_reaches_chardev(void **state)
{
    struct fixture *f = *state;
    out(f, LCR, 0x03);
    for (const char *p = "hello\n"; *p; p++) {
        assert_true(in(f, LSR) & 0x20);
        out(f, RBR, (uint8_t)*p);
        assert_int_equal(in(f, LSR) & 0x60, 0x60); /* THRE and TEMT stay set */
    }
    assert_int_equal(f->chr.out_len, 6);
    assert_memory_equal(f->chr.out, "hello\n", 6);

    /* A 16-bit access splits into RBR/THR then IER. */
    serial_bus_ops.write(f->s, 0, 2, 0x0041);
    assert_int_equal(f->chr.out_len, 7);
    assert_int_equal(f->chr.out[6], 'A');
    assert_int_equal(in(f, IER), 0);

    /* Loopback: THR goes to the receiver, not the chardev. */
    out(f, MCR, 0x10);
    out(f, RBR, 'x');
    assert_int_equal(f->chr.out_len, 7);
    assert_int_equal(in(f, LSR) & 0x01, 1);
    assert_int_equal(in(f, RBR), 'x');
}

static void test_null_chardev(void **state)
{
    struct serial *s = serial_create(NULL, (struct irq_line){0});
    assert_non_null(s);
    serial_bus_ops.write(s, 0, 1, 'z');
    assert_int_equal(serial_bus_ops.read(s, 5, 1), 0x60);
    serial_destroy(s);
}

static void test_rx_fifo_and_interrupts(void **state)
{
    struct fixture *f = *state;
    out(f, FCR, 0x81); /* FIFO on, trigger level 8 */
    out(f, IER, 0x01);
    out(f, MCR, 0x08); /* OUT2 */
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(can_receive(f), 16);

    receive(f, "abc");
    assert_int_equal(in(f, IIR), 0xcc); /* below trigger: character timeout */
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(in(f, LSR) & 0x01, 1);
    assert_int_equal(can_receive(f), 13);

    receive(f, "defgh");
    assert_int_equal(in(f, IIR), 0xc4); /* trigger level reached */

    char got[9] = {0};
    for (int i = 0; in(f, LSR) & 0x01; i++)
        got[i] = (char)in(f, RBR);
    assert_string_equal(got, "abcdefgh");
    assert_int_equal(in(f, IIR), 0xc1);
    assert_int_equal(f->irq.level, 0);

    /* Fill the FIFO: input pauses, and resumes once the guest drains it. */
    receive(f, "0123456789abcdef");
    assert_int_equal(can_receive(f), 0);
    assert_int_equal(f->chr.accept_calls, 0);
    for (int i = 0; i < 15; i++)
        in(f, RBR);
    assert_int_equal(f->chr.accept_calls, 0);
    assert_int_equal(in(f, RBR), 'f');
    assert_int_equal(f->chr.accept_calls, 1);
    assert_int_equal(can_receive(f), 16);

    /* FIFO off: one byte at a time. */
    out(f, FCR, 0);
    assert_int_equal(can_receive(f), 1);
    receive(f, "Q");
    assert_int_equal(can_receive(f), 0);
    assert_int_equal(in(f, IIR), 0x04);
    assert_int_equal(in(f, RBR), 'Q');
    assert_int_equal(f->chr.accept_calls, 2);

    /* Clearing the RX FIFO through FCR. */
    out(f, FCR, 0x01);
    receive(f, "xyz");
    out(f, FCR, 0x03);
    assert_int_equal(in(f, LSR) & 0x01, 0);
    assert_int_equal(in(f, IIR), 0xc1);
}

static void test_rx_paused_in_loopback(void **state)
{
    struct fixture *f = *state;
    out(f, MCR, 0x10);
    assert_int_equal(can_receive(f), 0);
    receive(f, "ignored");
    assert_int_equal(in(f, LSR) & 0x01, 0);
    out(f, MCR, 0x00);
    assert_int_equal(f->chr.accept_calls, 1);
    assert_int_equal(can_receive(f), 1);
}

static void test_thre_interrupt(void **state)
{
    struct fixture *f = *state;
    out(f, FCR, 0x01);
    out(f, MCR, 0x08);
    out(f, IER, 0x02);
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(in(f, IIR), 0xc2);
    assert_int_equal(f->irq.level, 0); /* reading IIR cleared it */
    assert_int_equal(in(f, IIR), 0xc1);

    /* Writing THR: the byte leaves at once, THR is empty again, THRE pending. */
    out(f, RBR, 'a');
    assert_int_equal(f->irq.level, 1);
    out(f, RBR, 'b');
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(in(f, IIR), 0xc2);
    assert_int_equal(f->irq.level, 0);

    /* Re-enabling ETBEI re-raises; disabling it clears. */
    out(f, IER, 0x00);
    out(f, IER, 0x02);
    assert_int_equal(f->irq.level, 1);
    out(f, IER, 0x00);
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(in(f, IIR), 0xc1);

    /* Writing IER with ETBEI already set does not re-raise. */
    out(f, IER, 0x02);
    in(f, IIR);
    out(f, IER, 0x03);
    assert_int_equal(in(f, IIR), 0xc1);

    /* Priority: RX data beats THRE; THRE shows once RX is drained. */
    out(f, IER, 0x00);
    out(f, IER, 0x03);
    receive(f, "r");
    assert_int_equal(in(f, IIR), 0xc4); /* trigger level 1 */
    assert_int_equal(in(f, RBR), 'r');
    assert_int_equal(in(f, IIR), 0xc2);
}

static void test_out2_gating(void **state)
{
    struct fixture *f = *state;
    out(f, IER, 0x02);
    assert_int_equal(f->irq.level, 0);
    out(f, MCR, 0x08);
    assert_int_equal(f->irq.level, 1);
    out(f, MCR, 0x00);
    assert_int_equal(f->irq.level, 0);
    out(f, MCR, 0x18); /* loopback forces the OUT2 pin inactive */
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(in(f, IIR), 0x02); /* but the reason is still there */
}

static void test_divisor_latch(void **state)
{
    struct fixture *f = *state;
    out(f, IER, 0x05);
    out(f, LCR, 0x83);
    assert_int_equal(in(f, 0), 12); /* 9600 baud after reset */
    assert_int_equal(in(f, 1), 0);
    out(f, 0, 0x01);
    out(f, 1, 0x02);
    assert_int_equal(in(f, 0), 0x01);
    assert_int_equal(in(f, 1), 0x02);
    out(f, LCR, 0x03);
    assert_int_equal(in(f, IER), 0x05);
    assert_int_equal(in(f, LCR), 0x03);
    assert_int_equal(f->chr.out_len, 0); /* DLL writes are not data */
    out(f, LCR, 0x83);
    assert_int_equal(in(f, 0), 0x01);
    assert_int_equal(in(f, 1), 0x02);
}

static void test_overrun(void **state)
{
    struct fixture *f = *state;
    out(f, IER, 0x05); /* ERBFI | ELSI */
    out(f, MCR, 0x08);
    /* FIFO off: a second byte overwrites RBR and sets OE. */
    receive(f, "12");
    assert_int_equal(in(f, IIR), 0x06); /* line status beats RX data */
    assert_int_equal(in(f, LSR), 0x63);
    assert_int_equal(in(f, LSR), 0x61); /* reading LSR cleared OE */
    assert_int_equal(in(f, IIR), 0x04);
    assert_int_equal(in(f, RBR), '2');

    /* FIFO on: the 17th byte is lost, the FIFO is kept. */
    out(f, FCR, 0x01);
    receive(f, "ABCDEFGHIJKLMNOPQ");
    assert_int_equal(in(f, LSR) & 0x03, 0x03);
    char got[17] = {0};
    for (int i = 0; in(f, LSR) & 0x01; i++)
        got[i] = (char)in(f, RBR);
    assert_string_equal(got, "ABCDEFGHIJKLMNOP");
}

static void test_modem_status(void **state)
{
    struct fixture *f = *state;
    out(f, IER, 0x08);
    out(f, MCR, 0x08);
    assert_int_equal(in(f, IIR), 0x01);
    out(f, MCR, 0x10 | 0x08 | 0x04 | 0x03); /* loop with DTR RTS OUT1 OUT2 */
    assert_int_equal(in(f, IIR), 0x01);     /* CTS/DSR/DCD stay up, RI rising: no delta */
    assert_int_equal(in(f, MSR), 0xf0);
    out(f, MCR, 0x10);
    assert_int_equal(in(f, MSR), 0x0f); /* all dropped: deltas incl. trailing edge of RI */
    assert_int_equal(in(f, MSR), 0x00);
    assert_int_equal(in(f, IIR), 0x01);
}

static void test_reset(void **state)
{
    struct fixture *f = *state;
    out(f, LCR, 0x80);
    out(f, 0, 0x33);
    out(f, LCR, 0x1b);
    out(f, IER, 0x0f);
    out(f, FCR, 0xc1);
    out(f, MCR, 0x0b);
    out(f, SCR, 0x77);
    receive(f, "data");
    assert_int_equal(f->irq.level, 1);

    serial_reset(f->s);
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(in(f, IER), 0);
    assert_int_equal(in(f, IIR), 0x01);
    assert_int_equal(in(f, LCR), 0);
    assert_int_equal(in(f, MCR), 0);
    assert_int_equal(in(f, LSR), 0x60);
    assert_int_equal(in(f, MSR), 0xb0);
    assert_int_equal(in(f, SCR), 0);
    out(f, LCR, 0x80);
    assert_int_equal(in(f, 0), 12);
    assert_int_equal(can_receive(f), 1);
}

/* Host input on one thread, guest reads on another: no loss, no reordering, no overrun. */
#define STRESS_BYTES 50000

static void *feeder(void *arg)
{
    struct fixture *f = arg;
    unsigned sent = 0;
    while (sent < STRESS_BYTES) {
        size_t room = can_receive(f);
        if (!room) {
            sched_yield();
            continue;
        }
        uint8_t buf[FIFO_CHUNK];
        size_t n = room < sizeof(buf) ? room : sizeof(buf);
        if (n > STRESS_BYTES - sent)
            n = STRESS_BYTES - sent;
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)(sent + i);
        f->chr.chr.fe.receive(f->chr.chr.fe.opaque, buf, n);
        sent += (unsigned)n;
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct fixture *f = *state;
    out(f, FCR, 0x01);
    out(f, IER, 0x07);
    out(f, MCR, 0x08);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, feeder, f), 0);
    unsigned got = 0;
    while (got < STRESS_BYTES) {
        uint8_t lsr = in(f, LSR);
        assert_int_equal(lsr & 0x02, 0);
        if (!(lsr & 0x01)) {
            in(f, IIR);
            out(f, RBR, 'w'); /* transmit in between */
            continue;
        }
        assert_int_equal(in(f, RBR), (uint8_t)got);
        got++;
    }
    pthread_join(t, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_power_on_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_linux_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tx_reaches_chardev, setup, teardown),
        cmocka_unit_test(test_null_chardev),
        cmocka_unit_test_setup_teardown(test_rx_fifo_and_interrupts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rx_paused_in_loopback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thre_interrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out2_gating, setup, teardown),
        cmocka_unit_test_setup_teardown(test_divisor_latch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overrun, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modem_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
