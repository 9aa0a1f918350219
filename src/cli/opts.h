/*
 * QemuOpts-style option groups: "key=value,key=value" with one table of typed keys per group.
 *
 * One description (struct opts_group) drives parsing, type checks, defaults, "help" output and
 * error messages. Grammar, as QEMU's QemuOpts:
 *   - elements are separated by ','; in a value ",," is a literal comma;
 *   - "key=value" sets key; the last occurrence of a key wins;
 *   - a group may name an implied first key: a first element without '=' is its value
 *     ("-smp 4" is "cpus=4", "-device foo" is "driver=foo");
 *   - a bare "key" for a bool key means key=on, a bare "nokey" means key=off (QEMU still
 *     accepts this deprecated short form);
 *   - a bare "help" or "?" element requests help (struct opts.help is set, parsing stops);
 *   - bools: on/off, yes/no, true/false; numbers: decimal or 0x hex, unsigned 64-bit;
 *     sizes: number with an optional B/K/M/G/T/P/E suffix (binary units, case-insensitive),
 *     a decimal fraction needs a suffix ("1.5G"); overflow is an error.
 * Typed values are checked while parsing; the getters re-read them, falling back to the
 * table's default text.
 */
#ifndef KEMU_CLI_OPTS_H
#define KEMU_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

enum opt_type {
    OPT_STRING,
    OPT_BOOL,
    OPT_NUMBER,
    OPT_SIZE,
};

struct opt_desc {
    const char *name;
    enum opt_type type;
    const char *def;  /* default value text, NULL if none */
    const char *help; /* one line */
};

struct opts_group {
    const char *name;            /* "smp", "machine": used for help output */
    const char *implied;         /* implied first key, or NULL */
    bool free_form;              /* keys not in desc are accepted (stored as strings) */
    const struct opt_desc *desc; /* terminated by an entry with name == NULL */
};

struct opt_kv {
    char *key;
    char *value;
};

/* Parsed options, in first-seen key order (a repeated key keeps its place, takes the new value). */
struct opts {
    const struct opts_group *group;
    struct opt_kv *kv;
    size_t n, cap;
    bool help; /* a "help" / "?" element was seen */
};

/*
 * Parse text into o (which must be zeroed or previously parsed with the same group: parsing
 * again merges, as QEMU's merged groups -smp/-m/-machine do). Returns 0 or -1 with err set to
 * one line such as "unknown parameter 'socket' (did you mean 'sockets'?)". On error o keeps
 * whatever was parsed before the bad element; opts_free() it as usual.
 */
int opts_parse(struct opts *o, const struct opts_group *g, const char *text, struct error *err);
void opts_free(struct opts *o);

/* Check every key of o against g (known key, valid typed value) and retarget o to g. */
int opts_validate(struct opts *o, const struct opts_group *g, struct error *err);

const struct opt_desc *opts_find_desc(const struct opts_group *g, const char *key);
/* True if key was given explicitly. */
bool opts_has(const struct opts *o, const char *key);
/* The given value, else the table default, else NULL. */
const char *opts_get_str(const struct opts *o, const char *key);
/*
 * Typed getters: 1 if a value (given or default) was found and stored in *out, 0 if none
 * (*out untouched), -1 with err set if the value does not parse.
 */
int opts_get_bool(const struct opts *o, const char *key, bool *out, struct error *err);
int opts_get_number(const struct opts *o, const char *key, uint64_t *out, struct error *err);
int opts_get_size(const struct opts *o, const char *key, uint64_t *out, struct error *err);

/*
 * For repeatable options kept as parsed lists (-device, later -drive, -netdev, -object):
 * move *o to the end of the array *items (of *n), leaving *o empty. If o has an "id", it must
 * be unique among the items ("duplicate <what> id 'x'"). Returns 0 or -1 (o is then untouched).
 */
int opts_list_add(struct opts **items, size_t *n, struct opts *o, const char *what,
                  struct error *err);
void opts_list_free(struct opts **items, size_t *n);

/* Scalar parsers shared with other option code. Return 0, -EINVAL or -ERANGE. */
int opts_parse_bool(const char *s, bool *out);
int opts_parse_number(const char *s, uint64_t *out);
/* unit: multiplier applied when s has no suffix (1 for bytes, 1 << 20 for -m's MiB). */
int opts_parse_size(const char *s, uint64_t unit, uint64_t *out);

/* QEMU's id rule: a letter, then letters, digits, '-', '.', '_'. */
bool opts_id_wellformed(const char *id);

/* True if s is "help" or "?". */
bool opts_is_help(const char *s);
const char *opt_type_name(enum opt_type t);
/* "cpus=<num>  - number of CPUs (default ...)" lines for every key of g. */
void opts_print_help(const struct opts_group *g, FILE *f);
/* Short synopsis "[cpus=]<num>[,sockets=<num>]..." into buf (truncated); returns buf. */
char *opts_synopsis(const struct opts_group *g, char *buf, size_t len);

#endif
