/*
 * Shared by the harnesses of option parsers (fuzz_drive.c, fuzz_netdev.c): the input is one
 * option argument, and a refused one must leave a one-line message. Include it once per harness.
 */
#ifndef KEMU_FUZZ_OPTION_H
#define KEMU_FUZZ_OPTION_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* "help" inputs print key tables: keep the fuzzer's output readable */
    if (!freopen("/dev/null", "w", stdout))
        abort();
    return 0;
}

/* The input up to the first NUL or newline (a shell word holds no NUL; a newline would only
 * trip the one-line check), to be freed; NULL if out of memory. */
static inline char *fuzz_option_text(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    return strndup((const char *)data, nl ? (size_t)(nl - data) : size);
}

static inline void fuzz_check_error(const struct error *err)
{
    if (!err->set || !memchr(err->msg, '\0', sizeof(err->msg)) || strchr(err->msg, '\n'))
        abort();
}

#endif
