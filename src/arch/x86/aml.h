/*
 * A small builder for ACPI Machine Language (AML) byte code, enough for the DSDT kemu writes:
 * names, integers, strings, packages, scopes, devices, methods that return a value, EISA ids and
 * resource templates (IO, IRQNoFlags, Memory32Fixed).
 *
 * Every emitter appends to one growable buffer. Objects whose encoding starts with a PkgLength
 * (Scope, Device, Method, Package, Buffer) are opened with *_begin() and closed with aml_end(),
 * which inserts the PkgLength (1 to 4 bytes, the shortest that fits) in front of the body. Errors
 * (out of memory, a bad name, more than AML_MAX_DEPTH open objects, a body too large for a
 * PkgLength, aml_end() with nothing open) set a sticky flag instead of being reported at each
 * call; check aml_ok() once at the end, which also fails while an object is still open.
 *
 *   struct aml a;
 *   aml_init(&a);
 *   aml_scope_begin(&a, "\\_SB");
 *   aml_device_begin(&a, "COM1");
 *   aml_name_eisaid(&a, "_HID", "PNP0501");
 *   aml_end(&a);   // Device
 *   aml_end(&a);   // Scope
 *   if (!aml_ok(&a)) ...
 *   use a.buf, a.len; aml_free(&a);
 */
#ifndef KEMU_ARCH_X86_AML_H
#define KEMU_ARCH_X86_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AML_MAX_DEPTH  16
#define AML_MAX_PKGLEN 0x0fffffffu /* 28 bits: the largest value a 4-byte PkgLength holds */

/* Opcodes (ACPI 6.x, section 20.3 "AML Grammar Definition"). */
#define AML_ZERO_OP           0x00
#define AML_ONE_OP            0x01
#define AML_NAME_OP           0x08
#define AML_BYTE_PREFIX       0x0a
#define AML_WORD_PREFIX       0x0b
#define AML_DWORD_PREFIX      0x0c
#define AML_STRING_PREFIX     0x0d
#define AML_QWORD_PREFIX      0x0e
#define AML_SCOPE_OP          0x10
#define AML_BUFFER_OP         0x11
#define AML_PACKAGE_OP        0x12
#define AML_METHOD_OP         0x14
#define AML_DUAL_NAME_PREFIX  0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_EXT_OP_PREFIX     0x5b
#define AML_ROOT_CHAR         0x5c /* '\' */
#define AML_PARENT_PREFIX     0x5e /* '^' */
#define AML_RETURN_OP         0xa4
#define AML_ONES_OP           0xff
#define AML_EXT_DEVICE_OP     0x82 /* after AML_EXT_OP_PREFIX */

/* Resource descriptor tags (ACPI 6.x, section 6.4). */
#define AML_RES_IRQ_NOFLAGS    0x22 /* small, IRQ descriptor with 2 data bytes */
#define AML_RES_IO             0x47 /* small, 7 data bytes */
#define AML_RES_END_TAG        0x79 /* small, 1 data byte (checksum) */
#define AML_RES_MEMORY32_FIXED 0x86 /* large, 9 data bytes */

struct aml {
    uint8_t *buf;
    size_t len, cap;
    bool error;
    unsigned depth;
    struct {
        size_t start; /* offset of the first body byte; the PkgLength is inserted here */
        uint8_t kind; /* what aml_end() closes */
    } open[AML_MAX_DEPTH];
};

void aml_init(struct aml *a);
void aml_free(struct aml *a);
/* True when nothing failed and every begun object has been ended. */
bool aml_ok(const struct aml *a);

/* Raw bytes (an opcode the builder has no helper for yet). */
void aml_byte(struct aml *a, uint8_t b);
void aml_bytes(struct aml *a, const void *p, size_t n);

/*
 * NameString: an optional root '\' or parent prefixes '^', then 0 or more NameSegs separated by
 * '.'. A segment is 1-4 characters [A-Z_][A-Z0-9_]* padded with '_' ("_SB" -> "_SB_"). Zero
 * segments encode as NullName; two as DualNamePrefix; three or more as MultiNamePrefix + count.
 */
void aml_namestring(struct aml *a, const char *path);

/* The encoded size of a PkgLength whose body (everything after it) is body_len bytes; 0 if too big.
 */
unsigned aml_pkglen_size(size_t body_len);
/* Append the PkgLength for a body of body_len bytes (its own bytes are counted in the value). */
void aml_pkglen(struct aml *a, size_t body_len);

/* Integer data: ZeroOp, OneOp or the smallest of Byte/Word/DWord/QWord prefix + value. */
void aml_integer(struct aml *a, uint64_t v);
/* String: StringPrefix, the ASCII bytes (1..0x7f, no NUL), NUL. */
void aml_string(struct aml *a, const char *s);

/* EISA id compression: "PNP0A03" -> 0x030ad041 (the DWord as stored). Returns 0 if malformed. */
uint32_t aml_eisaid_value(const char *id);
/* An EISA id as a DWordConst (what ASL's EISAID() compiles to). Sets the error flag if malformed.
 */
void aml_eisaid(struct aml *a, const char *id);

/* Name(path, <data>): NameOp + NameString; the caller appends exactly one data object next. */
void aml_name(struct aml *a, const char *path);
void aml_name_integer(struct aml *a, const char *path, uint64_t v);
void aml_name_string(struct aml *a, const char *path, const char *s);
void aml_name_eisaid(struct aml *a, const char *path, const char *id);

/* Scope(path) { ... } */
void aml_scope_begin(struct aml *a, const char *path);
/* Device(path) { ... } */
void aml_device_begin(struct aml *a, const char *path);
/* Method(path, nargs (0-7), Serialized or not) { ... }, sync level 0. */
void aml_method_begin(struct aml *a, const char *path, unsigned nargs, bool serialized);
/* Package(n) { ... }: the caller appends n data objects (n < 256). */
void aml_package_begin(struct aml *a, unsigned n);
/*
 * ResourceTemplate() { ... }: a Buffer whose size is filled in by aml_end(), which also appends
 * the EndTag (checksum 0 = "treat as valid").
 */
void aml_resource_template_begin(struct aml *a);
/* Close the innermost open object. */
void aml_end(struct aml *a);

/* Return(<term>): ReturnOp; the caller appends the value next (e.g. aml_integer). */
void aml_return(struct aml *a);

/* Resource descriptors, inside a resource template. */
/* IO(Decode16, min, max, align, len). */
void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align, uint8_t len);
/* IRQNoFlags() { irq } (edge-triggered, active-high, exclusive): irq 0-15. */
void aml_res_irq_noflags(struct aml *a, unsigned irq);
/* Memory32Fixed(ReadWrite or ReadOnly, base, len). */
void aml_res_memory32_fixed(struct aml *a, bool writable, uint32_t base, uint32_t len);
/* Interrupt(ResourceConsumer, Edge or Level, ActiveHigh or ActiveLow, Exclusive or Shared) {gsi}
 * (the Extended Interrupt Descriptor, for GSIs above the ISA IRQs). */
void aml_res_interrupt(struct aml *a, bool edge, bool active_low, bool shared, uint32_t gsi);
/*
 * Address space descriptors of a bridge (ResourceProducer, MinFixed, MaxFixed, PosDecode) for
 * [min, min + len): WordBusNumber, WordIO (EntireRange) and DWordMemory (Cacheable, ReadWrite).
 * len must be >= 1 and the range must fit the descriptor's width.
 */
void aml_res_word_bus(struct aml *a, uint16_t min, uint32_t len);
void aml_res_word_io(struct aml *a, uint16_t min, uint32_t len);
void aml_res_dword_memory(struct aml *a, uint32_t min, uint64_t len);

#endif
