#include "chardev/mux.h"

const char mux_help_text[] = "\r\n"
                             "C-a h    print this help\r\n"
                             "C-a x    exit emulator\r\n"
                             "C-a s    save disk data back to file (if -snapshot)\r\n"
                             "C-a t    toggle console timestamps\r\n"
                             "C-a b    send break (magic sysrq)\r\n"
                             "C-a c    switch between console and monitor\r\n"
                             "C-a C-a  sends C-a\r\n";

enum mux_event mux_input(struct mux_state *m, uint8_t c, uint8_t *out)
{
    if (!m->escape_pending) {
        if (c == MUX_ESCAPE_CHAR) {
            m->escape_pending = true;
            return MUX_SWALLOW;
        }
        *out = c;
        return MUX_DELIVER;
    }
    m->escape_pending = false;
    switch (c) {
    case MUX_ESCAPE_CHAR:
        *out = c;
        return MUX_DELIVER;
    case 'x':
        return MUX_QUIT;
    case 'h':
    case '?':
        return MUX_HELP;
    case 'b':
        return MUX_BREAK;
    case 'c':
        return MUX_SWITCH;
    case 't':
        return MUX_TIMESTAMPS;
    case 's':
        return MUX_SYNC;
    default:
        /* QEMU drops an unknown escape together with its prefix. */
        return MUX_SWALLOW;
    }
}
