/* Little-endian field access and byte checksums for the tables and headers kemu builds or
 * parses. Callers check bounds first; these only move bytes. */
#ifndef KEMU_CORE_BYTES_H
#define KEMU_CORE_BYTES_H

#include <stddef.h>
#include <stdint.h>

static inline uint16_t le_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t le_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le_get64(const uint8_t *p)
{
    return le_get32(p) | (uint64_t)le_get32(p + 4) << 32;
}

static inline void le_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void le_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void le_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The byte that makes p[0..len) plus itself sum to zero (ACPI, MP tables). */
static inline uint8_t checksum8(const uint8_t *p, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s += p[i];
    return (uint8_t)(0 - s);
}

/* The sum of p[0..len): zero for a table whose checksum is right. */
static inline uint8_t sum8(const uint8_t *p, size_t len)
{
    return (uint8_t)(0 - checksum8(p, len));
}

#endif
