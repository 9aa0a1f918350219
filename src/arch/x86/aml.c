/*
 * AML byte-code builder. The encodings follow the ACPI 6.x specification, chapter 20 (AML
 * grammar) and section 6.4 (resource data types).
 *
 * PkgLength: bits 7-6 of the lead byte give how many bytes follow (0-3). With none, bits 5-0
 * hold the length (up to 63). Otherwise bits 3-0 of the lead byte are the low nibble and each
 * following byte adds 8 more bits, so 2, 3 and 4 bytes reach 2^12-1, 2^20-1 and 2^28-1. The
 * value counts the PkgLength bytes themselves plus the body after them.
 */
#include "arch/x86/aml.h"

#include <stdlib.h>
#include <string.h>

enum {
    OPEN_PLAIN,    /* Scope, Device, Method, Package: just the PkgLength */
    OPEN_RESOURCE, /* Buffer: PkgLength, then BufferSize, then the bytes + EndTag */
};

void aml_init(struct aml *a)
{
    memset(a, 0, sizeof(*a));
}

void aml_free(struct aml *a)
{
    free(a->buf);
    memset(a, 0, sizeof(*a));
}

bool aml_ok(const struct aml *a)
{
    return !a->error && a->depth == 0;
}

static bool reserve(struct aml *a, size_t n)
{
    if (a->error)
        return false;
    if (n > AML_MAX_PKGLEN || a->len > AML_MAX_PKGLEN - n) {
        a->error = true;
        return false;
    }
    if (a->len + n <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->len + n)
        cap *= 2;
    uint8_t *p = realloc(a->buf, cap);
    if (!p) {
        a->error = true;
        return false;
    }
    a->buf = p;
    a->cap = cap;
    return true;
}

void aml_byte(struct aml *a, uint8_t b)
{
    if (reserve(a, 1))
        a->buf[a->len++] = b;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
    if (n && reserve(a, n)) {
        memcpy(a->buf + a->len, p, n);
        a->len += n;
    }
}

/* Insert n bytes at offset `at` (at <= len), moving what follows. */
static void insert(struct aml *a, size_t at, const uint8_t *p, size_t n)
{
    if (!reserve(a, n))
        return;
    memmove(a->buf + at + n, a->buf + at, a->len - at);
    memcpy(a->buf + at, p, n);
    a->len += n;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* --- names --------------------------------------------------------------------------------- */

static bool lead_char(char c)
{
    return (c >= 'A' && c <= 'Z') || c == '_';
}

static bool name_char(char c)
{
    return lead_char(c) || (c >= '0' && c <= '9');
}

void aml_namestring(struct aml *a, const char *path)
{
    if (!path) {
        a->error = true;
        return;
    }
    const char *p = path;
    if (*p == '\\') {
        aml_byte(a, AML_ROOT_CHAR);
        p++;
    } else {
        while (*p == '^') {
            aml_byte(a, AML_PARENT_PREFIX);
            p++;
        }
    }

    /* Count and validate the segments first: the prefix depends on how many there are. */
    unsigned nseg = 0;
    if (*p) {
        const char *s = p;
        for (;;) {
            unsigned n = 0;
            if (!lead_char(*s)) {
                a->error = true;
                return;
            }
            while (name_char(*s) && n < 4) {
                s++;
                n++;
            }
            nseg++;
            if (*s == '\0')
                break;
            if (*s != '.' || nseg == 255) {
                a->error = true;
                return;
            }
            s++;
        }
    }

    if (nseg == 0) {
        aml_byte(a, AML_ZERO_OP); /* NullName */
        return;
    }
    if (nseg == 2) {
        aml_byte(a, AML_DUAL_NAME_PREFIX);
    } else if (nseg > 2) {
        aml_byte(a, AML_MULTI_NAME_PREFIX);
        aml_byte(a, (uint8_t)nseg);
    }
    for (unsigned i = 0; i < nseg; i++) {
        uint8_t seg[4] = {'_', '_', '_', '_'};
        for (unsigned n = 0; *p && *p != '.'; n++)
            seg[n] = (uint8_t)*p++;
        if (*p == '.')
            p++;
        aml_bytes(a, seg, 4);
    }
}

/* --- PkgLength ----------------------------------------------------------------------------- */

unsigned aml_pkglen_size(size_t body_len)
{
    if (body_len + 1 <= 0x3f)
        return 1;
    if (body_len + 2 <= 0xfff)
        return 2;
    if (body_len + 3 <= 0xfffff)
        return 3;
    if (body_len + 4 <= AML_MAX_PKGLEN)
        return 4;
    return 0;
}

static unsigned encode_pkglen(uint8_t *out, size_t body_len)
{
    unsigned n = aml_pkglen_size(body_len);
    if (n == 0)
        return 0;
    uint32_t v = (uint32_t)(body_len + n);
    if (n == 1) {
        out[0] = (uint8_t)v;
        return 1;
    }
    out[0] = (uint8_t)(((n - 1) << 6) | (v & 0x0f));
    for (unsigned i = 1; i < n; i++)
        out[i] = (uint8_t)(v >> (4 + 8 * (i - 1)));
    return n;
}

void aml_pkglen(struct aml *a, size_t body_len)
{
    uint8_t b[4];
    unsigned n = encode_pkglen(b, body_len);
    if (n == 0)
        a->error = true;
    else
        aml_bytes(a, b, n);
}

/* --- data ---------------------------------------------------------------------------------- */

static unsigned encode_integer(uint8_t *out, uint64_t v)
{
    if (v == 0) {
        out[0] = AML_ZERO_OP;
        return 1;
    }
    if (v == 1) {
        out[0] = AML_ONE_OP;
        return 1;
    }
    unsigned n;
    if (v <= 0xff) {
        out[0] = AML_BYTE_PREFIX;
        n = 1;
    } else if (v <= 0xffff) {
        out[0] = AML_WORD_PREFIX;
        n = 2;
    } else if (v <= 0xffffffffu) {
        out[0] = AML_DWORD_PREFIX;
        n = 4;
    } else {
        out[0] = AML_QWORD_PREFIX;
        n = 8;
    }
    put_le(out + 1, v, n);
    return n + 1;
}

void aml_integer(struct aml *a, uint64_t v)
{
    uint8_t b[9];
    aml_bytes(a, b, encode_integer(b, v));
}

void aml_string(struct aml *a, const char *s)
{
    if (!s) {
        a->error = true;
        return;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p > 0x7f) {
            a->error = true;
            return;
        }
    }
    aml_byte(a, AML_STRING_PREFIX);
    aml_bytes(a, s, strlen(s) + 1);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Three upper-case letters in 5 bits each ('A' = 1) below a zero bit, then four hex digits:
 * a big-endian 32-bit value, stored in the table byte-swapped (as a little-endian DWord).
 */
uint32_t aml_eisaid_value(const char *id)
{
    if (!id || strlen(id) != 7)
        return 0;
    uint32_t v = 0;
    for (int i = 0; i < 3; i++) {
        if (id[i] < 'A' || id[i] > 'Z')
            return 0;
        v = (v << 5) | (uint32_t)(id[i] - 0x40);
    }
    for (int i = 3; i < 7; i++) {
        int d = hex_digit(id[i]);
        if (d < 0)
            return 0;
        v = (v << 4) | (uint32_t)d;
    }
    return (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
}

void aml_eisaid(struct aml *a, const char *id)
{
    uint32_t v = aml_eisaid_value(id);
    if (v == 0) {
        a->error = true;
        return;
    }
    uint8_t b[5] = {AML_DWORD_PREFIX};
    put_le(b + 1, v, 4);
    aml_bytes(a, b, 5);
}

void aml_name(struct aml *a, const char *path)
{
    aml_byte(a, AML_NAME_OP);
    aml_namestring(a, path);
}

void aml_name_integer(struct aml *a, const char *path, uint64_t v)
{
    aml_name(a, path);
    aml_integer(a, v);
}

void aml_name_string(struct aml *a, const char *path, const char *s)
{
    aml_name(a, path);
    aml_string(a, s);
}

void aml_name_eisaid(struct aml *a, const char *path, const char *id)
{
    aml_name(a, path);
    aml_eisaid(a, id);
}

void aml_return(struct aml *a)
{
    aml_byte(a, AML_RETURN_OP);
}

/* --- nesting ------------------------------------------------------------------------------- */

static void open_object(struct aml *a, uint8_t kind)
{
    if (a->depth == AML_MAX_DEPTH) {
        a->error = true;
        return;
    }
    a->open[a->depth].start = a->len;
    a->open[a->depth].kind = kind;
    a->depth++;
}

void aml_scope_begin(struct aml *a, const char *path)
{
    aml_byte(a, AML_SCOPE_OP);
    open_object(a, OPEN_PLAIN);
    aml_namestring(a, path);
}

void aml_device_begin(struct aml *a, const char *path)
{
    aml_byte(a, AML_EXT_OP_PREFIX);
    aml_byte(a, AML_EXT_DEVICE_OP);
    open_object(a, OPEN_PLAIN);
    aml_namestring(a, path);
}

void aml_method_begin(struct aml *a, const char *path, unsigned nargs, bool serialized)
{
    if (nargs > 7)
        a->error = true;
    aml_byte(a, AML_METHOD_OP);
    open_object(a, OPEN_PLAIN);
    aml_namestring(a, path);
    aml_byte(a, (uint8_t)((nargs & 7) | (serialized ? 0x08 : 0)));
}

void aml_package_begin(struct aml *a, unsigned n)
{
    if (n > 255)
        a->error = true;
    aml_byte(a, AML_PACKAGE_OP);
    open_object(a, OPEN_PLAIN);
    aml_byte(a, (uint8_t)n);
}

void aml_resource_template_begin(struct aml *a)
{
    aml_byte(a, AML_BUFFER_OP);
    open_object(a, OPEN_RESOURCE);
}

void aml_end(struct aml *a)
{
    if (a->error)
        return;
    if (a->depth == 0) {
        a->error = true;
        return;
    }
    a->depth--;
    size_t start = a->open[a->depth].start;
    if (a->open[a->depth].kind == OPEN_RESOURCE) {
        aml_byte(a, AML_RES_END_TAG);
        aml_byte(a, 0); /* checksum 0: no checksum */
        uint8_t size[9];
        insert(a, start, size, encode_integer(size, a->len - start));
    }
    if (a->error)
        return;
    uint8_t pkg[4];
    unsigned n = encode_pkglen(pkg, a->len - start);
    if (n == 0) {
        a->error = true;
        return;
    }
    insert(a, start, pkg, n);
}

/* --- resource descriptors ------------------------------------------------------------------ */

void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align, uint8_t len)
{
    uint8_t d[8] = {AML_RES_IO, 0x01 /* decodes 16 address bits */};
    put_le(d + 2, min, 2);
    put_le(d + 4, max, 2);
    d[6] = align;
    d[7] = len;
    aml_bytes(a, d, sizeof(d));
}

void aml_res_irq_noflags(struct aml *a, unsigned irq)
{
    if (irq > 15) {
        a->error = true;
        return;
    }
    uint8_t d[3] = {AML_RES_IRQ_NOFLAGS};
    put_le(d + 1, 1u << irq, 2);
    aml_bytes(a, d, sizeof(d));
}

void aml_res_memory32_fixed(struct aml *a, bool writable, uint32_t base, uint32_t len)
{
    uint8_t d[12] = {AML_RES_MEMORY32_FIXED, 9, 0, writable ? 1 : 0};
    put_le(d + 4, base, 4);
    put_le(d + 8, len, 4);
    aml_bytes(a, d, sizeof(d));
}

/* ACPI 6.4.3.6 Extended Interrupt Descriptor: large item 0x89, length 6 (flags, a table of one
 * DWord interrupt number, no resource source). Flags: bit 0 consumer, bit 1 edge, bit 2 active
 * low, bit 3 shared. */
void aml_res_interrupt(struct aml *a, bool edge, bool active_low, bool shared, uint32_t gsi)
{
    uint8_t d[9] = {
        0x89, 6, 0,
        (uint8_t)(0x01 | (edge ? 0x02 : 0) | (active_low ? 0x04 : 0) | (shared ? 0x08 : 0)), 1};
    put_le(d + 5, gsi, 4);
    aml_bytes(a, d, sizeof(d));
}

/* ACPI 6.4.3.5: large items 0x88 (Word) and 0x87 (DWord) address space descriptors. */
enum { RES_TYPE_MEM = 0, RES_TYPE_IO = 1, RES_TYPE_BUS = 2 };
#define RES_GFLAGS_PRODUCER_FIXED 0x0c /* _MAF | _MIF, positive decode, producer */

static void res_word(struct aml *a, uint8_t type, uint8_t tflags, uint16_t min, uint32_t len)
{
    if (len == 0 || (uint32_t)min + len - 1 > 0xffff) {
        a->error = true;
        return;
    }
    uint8_t d[16] = {0x88, 13, 0, type, RES_GFLAGS_PRODUCER_FIXED, tflags};
    put_le(d + 6, 0, 2);              /* granularity */
    put_le(d + 8, min, 2);            /* _MIN */
    put_le(d + 10, min + len - 1, 2); /* _MAX */
    put_le(d + 12, 0, 2);             /* translation */
    put_le(d + 14, len, 2);           /* _LEN */
    aml_bytes(a, d, sizeof(d));
}

void aml_res_word_bus(struct aml *a, uint16_t min, uint32_t len)
{
    res_word(a, RES_TYPE_BUS, 0, min, len);
}

void aml_res_word_io(struct aml *a, uint16_t min, uint32_t len)
{
    res_word(a, RES_TYPE_IO, 3 /* _RNG: EntireRange */, min, len);
}

void aml_res_dword_memory(struct aml *a, uint32_t min, uint64_t len)
{
    if (len == 0 || (uint64_t)min + len - 1 > 0xffffffffULL) {
        a->error = true;
        return;
    }
    uint8_t d[26] = {0x87, 23, 0, RES_TYPE_MEM, RES_GFLAGS_PRODUCER_FIXED,
                     0x03 /* cacheable, read-write */};
    put_le(d + 6, 0, 4);
    put_le(d + 10, min, 4);
    put_le(d + 14, (uint32_t)(min + len - 1), 4);
    put_le(d + 18, 0, 4);
    put_le(d + 22, (uint32_t)len, 4);
    aml_bytes(a, d, sizeof(d));
}
