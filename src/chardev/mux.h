/*
 * QEMU's console escapes (Ctrl-A then a key), which a multiplexed stdio console interprets before
 * the guest sees the input. Kept separate from the terminal code so it can be tested alone.
 */
#ifndef KEMU_CHARDEV_MUX_H
#define KEMU_CHARDEV_MUX_H

#include <stdbool.h>
#include <stdint.h>

#define MUX_ESCAPE_CHAR 0x01 /* Ctrl-A */

enum mux_event {
    MUX_SWALLOW,    /* byte consumed (the escape prefix) */
    MUX_DELIVER,    /* *out goes to the guest */
    MUX_QUIT,       /* C-a x */
    MUX_HELP,       /* C-a h or C-a ? */
    MUX_BREAK,      /* C-a b */
    MUX_SWITCH,     /* C-a c: console <-> monitor */
    MUX_TIMESTAMPS, /* C-a t */
    MUX_SYNC,       /* C-a s */
};

struct mux_state {
    bool escape_pending;
};

enum mux_event mux_input(struct mux_state *m, uint8_t c, uint8_t *out);
extern const char mux_help_text[];

#endif
