/*
 * libFuzzer harness for the command line: the input is split into arguments on NUL and
 * newline bytes and parsed as argv[1..]; the config is then freed. Any crash, sanitizer report
 * or leak is a bug. The printers for help actions run into a memory stream too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmdline.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    argv[argc++] = (char *)"kemu";
    char *start = buf;
    for (size_t i = 0; i <= size && argc <= MAX_ARGS; i++) {
        if (i == size || buf[i] == '\0' || buf[i] == '\n') {
            buf[i] = '\0';
            argv[argc++] = start;
            start = buf + i + 1;
        }
    }
    argv[argc] = NULL;

    struct kemu_config cfg;
    struct error err = {0};
    if (cmdline_parse(argc, argv, &cfg, &err) < 0) {
        /* The message is one line, NUL-terminated inside the buffer. */
        if (!err.set || memchr(err.msg, '\0', sizeof(err.msg)) == NULL || strchr(err.msg, '\n'))
            abort();
    } else if (cfg.action != KEMU_ACTION_RUN) {
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        if (f) {
            cmdline_print_action(&cfg, f);
            fclose(f);
        }
        free(out);
    }
    kemu_config_free(&cfg);
    free(buf);
    return 0;
}
