#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "chardev/fdchr.h"
#include "chardev/mux.h"

static void plain_bytes_pass_through(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 'a', &out), MUX_DELIVER);
    assert_int_equal(out, 'a');
    assert_int_equal(mux_input(&m, 0x03, &out), MUX_DELIVER); /* Ctrl-C goes to the guest */
    assert_int_equal(out, 0x03);
}

static void escapes(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'x', &out), MUX_QUIT);
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'h', &out), MUX_HELP);
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'c', &out), MUX_SWITCH);
    /* 'x' without the prefix is ordinary input. */
    assert_int_equal(mux_input(&m, 'x', &out), MUX_DELIVER);
    assert_int_equal(out, 'x');
}

static void double_escape_sends_ctrl_a(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_DELIVER);
    assert_int_equal(out, 0x01);
    assert_int_equal(mux_input(&m, 'x', &out), MUX_DELIVER);
}

static void unknown_escape_is_dropped(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'q', &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'q', &out), MUX_DELIVER);
}

/* ---- C-a c on a console: input goes to the monitor until the next C-a c ---- */

struct sink {
    char got[64];
    size_t len;
    int opened;
    struct eventloop *loop;
};

static size_t sink_room(void *opaque)
{
    return 64;
}

static void sink_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct sink *k = opaque;
    for (size_t i = 0; i < len && k->len < sizeof(k->got) - 1; i++)
        k->got[k->len++] = (char)buf[i];
    eventloop_quit(k->loop); /* everything was written before the loop ran: one read */
}

static void sink_opened(void *opaque)
{
    ((struct sink *)opaque)->opened++;
}

static const struct chardev_ops test_ops = {.write = fdchr_write, .set_monitor = fdchr_set_monitor};

static void run_console(const char *input, bool with_monitor, struct sink *guest, struct sink *mon,
                        char *out, size_t out_size)
{
    struct eventloop loop;
    struct error err = {0};
    int in[2], o[2];
    assert_int_equal(eventloop_init(&loop, &err), 0);
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe2(o, O_NONBLOCK), 0); /* reading back nothing must not block */
    static struct fdchr f;
    memset(&f, 0, sizeof(f));
    assert_int_equal(fdchr_init(&f, &test_ops, &loop, in[0], o[1], &err), 0);
    f.mux = true;
    guest->loop = mon->loop = &loop;
    struct chardev_frontend gfe = {
        .can_receive = sink_room, .receive = sink_receive, .opaque = guest};
    struct chardev_frontend mfe = {
        .can_receive = sink_room, .receive = sink_receive, .opened = sink_opened, .opaque = mon};
    chardev_set_frontend(&f.base, &gfe);
    if (with_monitor)
        assert_true(chardev_set_monitor(&f.base, &mfe));
    assert_int_equal(write(in[1], input, strlen(input)), (ssize_t)strlen(input));
    eventloop_run(&loop);
    ssize_t n = read(o[0], out, out_size - 1);
    out[n > 0 ? n : 0] = '\0';
    fdchr_fini(&f);
    eventloop_destroy(&loop);
    close(in[0]);
    close(in[1]);
    close(o[0]);
    close(o[1]);
}

static void switch_to_monitor_and_back(void **state)
{
    struct sink guest = {0}, mon = {0};
    char out[256];
    run_console("ab\x01"
                "cinfo\n\x01"
                "ccd\x01"
                "c\x01"
                "cq",
                true, &guest, &mon, out, sizeof(out));
    assert_string_equal(guest.got, "abcdq");
    assert_string_equal(mon.got, "info\n");
    assert_int_equal(mon.opened, 2);
    assert_string_equal(out, "");
}

static void switch_without_monitor_says_so(void **state)
{
    struct sink guest = {0}, mon = {0};
    char out[256];
    run_console("a\x01"
                "cb",
                false, &guest, &mon, out, sizeof(out));
    assert_string_equal(guest.got, "ab");
    assert_int_equal(mon.len, 0);
    assert_non_null(strstr(out, "no monitor on this console"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_bytes_pass_through),
        cmocka_unit_test(escapes),
        cmocka_unit_test(double_escape_sends_ctrl_a),
        cmocka_unit_test(unknown_escape_is_dropped),
        cmocka_unit_test(switch_to_monitor_and_back),
        cmocka_unit_test(switch_without_monitor_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
