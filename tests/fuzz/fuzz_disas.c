/* x /i on guest memory: whatever bytes a guest leaves at an address, the monitor's disassembly
 * (capstone, QEMU's layout) prints without crashing or reading past them. Byte 0 picks the mode
 * and the address's top bit, byte 1 the address within a 1 KiB window (reads must not cross
 * it), byte 2 the count; the rest are the instructions. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "monitor/disas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    if (size < 3)
        return 0;
    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        abort();
    int mode = data[0] % 3 == 0 ? 16 : data[0] % 3 == 1 ? 32 : 64;
    uint64_t addr = 0x3f0 + data[1] * 4ull + ((uint64_t)(data[0] & 0x80) << 56);
    disas_x86_buf(devnull, data + 3, size - 3, addr, data[2], mode);
    return 0;
}
