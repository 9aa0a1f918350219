/*
 * libFuzzer harness: arbitrary bytes as a bzImage for x86_load_linux() over a small guest RAM
 * buffer. ASan catches reads past the input and writes past the buffer. The last input byte picks
 * the initrd size and the command line length so those paths are reached too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86/bootparams.h"

#define RAM_SIZE   (4u << 20)
#define INITRD_MAX (64u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *ram, *initrd;
    static char cmdline[4096];
    if (!ram) {
        ram = malloc(RAM_SIZE);
        initrd = calloc(1, INITRD_MAX);
        if (!ram || !initrd)
            abort();
    }
    uint8_t knob = size ? data[size - 1] : 0;
    size_t initrd_len = (size_t)(knob & 0x0f) * (INITRD_MAX / 16);
    size_t cmd_len = (size_t)(knob >> 4) * 256;
    memset(cmdline, 'x', cmd_len);
    cmdline[cmd_len] = '\0';

    /* An exact-size copy so that any over-read of the kernel is caught. */
    uint8_t *k = malloc(size ? size : 1);
    if (!k)
        abort();
    memcpy(k, data, size);
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    struct x86_boot_info bi;
    struct error err = {0};
    int rc = x86_load_linux(&mem, k, size, initrd, initrd_len, cmdline, &bi, &err);
    if (rc == 0 && (bi.kernel_end > RAM_SIZE || bi.initrd_addr + bi.initrd_size > RAM_SIZE))
        abort();
    if (rc != 0 && !err.set)
        abort();
    free(k);
    return 0;
}
