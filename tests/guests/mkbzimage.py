#!/usr/bin/env python3
"""Build a tiny bzImage whose every entry point immediately writes to QEMU's isa-debug-exit port.

It is a valid boot-protocol 2.15 image with a 64-bit entry, so both kemu (64-bit entry) and QEMU
(real-mode entry through its option ROM) boot it. Writing AL=CODE to port PORT makes either VMM
exit with status (CODE << 1) | 1. Used by benchmarks and by system tests that must run on a
/dev/kvm that cannot run Linux.
"""
import struct
import sys


def build(port=0xF4, code=0):
    # mov al, code ; mov dx, port ; out dx, al ; hlt ; jmp $-1. The operand-size prefix that
    # makes "mov dx, imm16" differs between real mode and 32/64-bit mode.
    lo, hi = port & 0xFF, port >> 8
    real_seq = bytes([0xB0, code, 0xBA, lo, hi, 0xEE, 0xF4, 0xEB, 0xFD])
    exit_seq = bytes([0xB0, code, 0x66, 0xBA, lo, hi, 0xEE, 0xF4, 0xEB, 0xFD])
    setup_sects = 1
    setup = bytearray(512 * (setup_sects + 1))
    setup[0x1F1] = setup_sects
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200:0x202] = bytes([0xEB, 0x7E])  # real-mode entry: jump to 0x280
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)  # boot protocol 2.15
    setup[0x210] = 0xFF  # type_of_loader (filled by the loader)
    setup[0x211] = 0x01  # loadflags: LOADED_HIGH
    struct.pack_into("<I", setup, 0x214, 0x100000)  # code32_start
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, 0x200000)  # kernel_alignment
    setup[0x234] = 1  # relocatable_kernel
    setup[0x235] = 21  # min_alignment (2 MiB)
    struct.pack_into("<H", setup, 0x236, 0x3)  # xloadflags: KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
    struct.pack_into("<I", setup, 0x238, 2047)  # cmdline_size
    struct.pack_into("<Q", setup, 0x258, 0x1000000)  # pref_address
    struct.pack_into("<I", setup, 0x260, 0x10000)  # init_size
    setup[0x280 : 0x280 + len(real_seq)] = real_seq
    kernel = bytearray(0x1000)
    kernel[0 : len(exit_seq)] = exit_seq  # 32-bit entry
    kernel[0x200 : 0x200 + len(exit_seq)] = exit_seq  # 64-bit entry
    struct.pack_into("<I", setup, 0x1F4, len(kernel) // 16)  # syssize
    return bytes(setup + kernel)


def build_jump(addr):
    """A guest whose 64-bit entry jumps to addr (below 4 GiB): aimed at unbacked memory, the
    CPU cannot fetch there and KVM reports an emulation failure."""
    image = bytearray(build())
    entry64 = 512 * 2 + 0x200  # setup is 2 sectors; the 64-bit entry is 0x200 into the kernel
    code = bytes([0xB8]) + addr.to_bytes(4, "little") + bytes([0xFF, 0xE0])  # mov eax; jmp rax
    image[entry64 : entry64 + len(code)] = code
    return bytes(image)


def build_halt():
    """A guest that halts forever at its 64-bit entry (hlt; jmp back): it stays running, idle,
    until the host stops it."""
    image = bytearray(build())
    entry64 = 512 * 2 + 0x200
    code = bytes([0xFA, 0xF4, 0xEB, 0xFD])  # cli; hlt; jmp to the hlt
    image[entry64 : entry64 + len(code)] = code
    return bytes(image)


def build_ud2():
    """A guest whose first instruction (ud2 at the 64-bit entry) faults: the boot protocol
    leaves no IDT, so the #UD becomes a double and then a triple fault, which resets the CPU."""
    image = bytearray(build())
    entry64 = 512 * 2 + 0x200
    image[entry64 : entry64 + 2] = bytes([0x0F, 0x0B])  # ud2
    return bytes(image)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: mkbzimage.py OUT [PORT [CODE]]")
    port = int(sys.argv[2], 0) if len(sys.argv) > 2 else 0xF4
    code = int(sys.argv[3], 0) if len(sys.argv) > 3 else 0
    with open(sys.argv[1], "wb") as f:
        f.write(build(port, code))
