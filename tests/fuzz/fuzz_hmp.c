/* HMP command lines and raw monitor input: nothing a user types may crash the monitor. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/hmp.h"

static const char *f_status(void *opaque, bool *running)
{
    *running = true;
    return "running";
}

static ssize_t sink_write(struct chardev *c, const uint8_t *buf, size_t len)
{
    return (ssize_t)len;
}

static const struct chardev_ops sink_ops = {.write = sink_write};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* No machine behind the ops: x/xp/info registers take their error paths; the parsers and
     * formatters see every byte. */
    static const struct qmp_vm_ops ops = {.status = f_status};
    char *line = malloc(size + 1);
    if (!line)
        return 0;
    memcpy(line, data, size);
    line[size] = '\0';
    bool quit;
    free(hmp_run(&ops, line, &quit));
    struct hmp_xfmt fmt;
    char msg[128];
    hmp_parse_xfmt(line, &fmt, msg, sizeof(msg));
    free(line);

    struct chardev sink = {.ops = &sink_ops};
    struct hmp_monitor *m = hmp_monitor_new(&sink, &ops, false);
    if (m) {
        hmp_monitor_input(m, data, size);
        hmp_monitor_free(m);
    }
    return 0;
}
