/* QemuOpts-style option groups: see opts.h for the grammar. */
#include "cli/opts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int oom(struct error *err)
{
    return error_setf(err, "out of memory");
}

/* ---- scalar parsers ---- */

int opts_parse_bool(const char *s, bool *out)
{
    static const char *const on[] = {"on", "yes", "true"};
    static const char *const off[] = {"off", "no", "false"};
    for (size_t i = 0; i < 3; i++) {
        if (!strcmp(s, on[i])) {
            *out = true;
            return 0;
        }
        if (!strcmp(s, off[i])) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parse the leading unsigned integer of s (decimal, or hex after 0x); *end gets the rest. */
static int parse_uint_prefix(const char *s, uint64_t *out, const char **end, bool *hex)
{
    unsigned base = 10;
    uint64_t v = 0;
    const char *p = s;
    *hex = false;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
        *hex = true;
    }
    const char *digits = p;
    int overflow = 0;
    for (;; p++) {
        int d = hexval(*p);
        if (d < 0 || (unsigned)d >= base)
            break;
        if (v > (UINT64_MAX - (uint64_t)d) / base)
            overflow = 1;
        else
            v = v * base + (uint64_t)d;
    }
    if (p == digits)
        return -EINVAL;
    *end = p;
    *out = v;
    return overflow ? -ERANGE : 0;
}

bool opts_id_wellformed(const char *id)
{
    if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z')))
        return false;
    for (const char *p = id + 1; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_';
        if (!ok)
            return false;
    }
    return true;
}

int opts_parse_number(const char *s, uint64_t *out)
{
    const char *end;
    bool hex;
    uint64_t v;
    int r = parse_uint_prefix(s, &v, &end, &hex);
    if (r == -EINVAL || *end != '\0')
        return -EINVAL;
    if (r < 0)
        return r;
    *out = v;
    return 0;
}

static uint64_t suffix_mul(char c)
{
    switch (c) {
    case 'b':
    case 'B':
        return 1;
    case 'k':
    case 'K':
        return 1ULL << 10;
    case 'm':
    case 'M':
        return 1ULL << 20;
    case 'g':
    case 'G':
        return 1ULL << 30;
    case 't':
    case 'T':
        return 1ULL << 40;
    case 'p':
    case 'P':
        return 1ULL << 50;
    case 'e':
    case 'E':
        return 1ULL << 60;
    default:
        return 0;
    }
}

int opts_parse_size(const char *s, uint64_t unit, uint64_t *out)
{
    const char *p;
    bool hex;
    uint64_t ival;
    int r = parse_uint_prefix(s, &ival, &p, &hex);
    if (r == -EINVAL)
        return -EINVAL;
    bool range = r == -ERANGE;

    /* Fraction: up to 18 significant digits are kept (more cannot change a 64-bit result). */
    uint64_t fnum = 0, fden = 1;
    bool has_frac = false;
    if (*p == '.') {
        if (hex)
            return -EINVAL;
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (fden < 1000000000000000000ULL) {
                fnum = fnum * 10 + (uint64_t)(*p - '0');
                fden *= 10;
            }
        }
        has_frac = true;
    }
    uint64_t mul = unit;
    bool suffixed = false;
    if (*p) {
        mul = suffix_mul(*p);
        if (!mul || p[1] != '\0')
            return -EINVAL;
        /* "0x1B" is a hex number, not 0x1 bytes: QEMU rejects suffixes that are hex digits. */
        if (hex && hexval(*p) >= 0)
            return -EINVAL;
        suffixed = true;
    }
    if (has_frac && (!suffixed || mul == 1))
        return -EINVAL; /* a fraction of a byte */
    if (range)
        return -ERANGE;
    unsigned __int128 total = (unsigned __int128)ival * mul;
    total += (unsigned __int128)fnum * mul / fden;
    if (total > UINT64_MAX)
        return -ERANGE;
    *out = (uint64_t)total;
    return 0;
}

bool opts_is_help(const char *s)
{
    return !strcmp(s, "help") || !strcmp(s, "?");
}

const char *opt_type_name(enum opt_type t)
{
    switch (t) {
    case OPT_BOOL:
        return "bool (on/off)";
    case OPT_NUMBER:
        return "number";
    case OPT_SIZE:
        return "size";
    case OPT_STRING:
        break;
    }
    return "string";
}

/* ---- descriptions ---- */

const struct opt_desc *opts_find_desc(const struct opts_group *g, const char *key)
{
    if (!g || !g->desc)
        return NULL;
    for (const struct opt_desc *d = g->desc; d->name; d++)
        if (!strcmp(d->name, key))
            return d;
    return NULL;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];
    if (la >= 64 || lb >= 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static int unknown_key(const struct opts_group *g, const char *key, struct error *err)
{
    const char *best = NULL;
    /* Suggest only close matches: one edit for short keys, two for longer ones. */
    size_t best_d = strlen(key) >= 5 ? 3 : 2;
    for (const struct opt_desc *d = g->desc; d && d->name; d++) {
        size_t dist = edit_distance(key, d->name);
        if (dist < best_d && dist < strlen(key)) {
            best_d = dist;
            best = d->name;
        }
    }
    if (best && *key)
        return error_setf(err, "unknown parameter '%s' (did you mean '%s'?)", key, best);
    return error_setf(err, "unknown parameter '%s'", key);
}

/* Check value against the type of d. */
static int check_value(const struct opts_group *g, const struct opt_desc *d, const char *value,
                       struct error *err)
{
    /* Name the key unless it is the implied one, whose value alone identifies it. */
    char what[96] = "";
    if (!g->implied || strcmp(g->implied, d->name))
        snprintf(what, sizeof(what), " for '%s'", d->name);
    uint64_t u;
    bool b;
    int r = 0;
    if (d->type != OPT_STRING && !*value)
        return error_setf(err, "parameter '%s' requires a value", d->name);
    switch (d->type) {
    case OPT_STRING:
        return 0;
    case OPT_BOOL:
        if (opts_parse_bool(value, &b) < 0)
            return error_setf(err, "invalid boolean '%s'%s (use on/off)", value, what);
        return 0;
    case OPT_NUMBER:
        r = opts_parse_number(value, &u);
        if (r == -ERANGE)
            return error_setf(err, "number '%s'%s is out of range", value, what);
        if (r < 0)
            return error_setf(err, "invalid number '%s'%s", value, what);
        return 0;
    case OPT_SIZE:
        r = opts_parse_size(value, 1, &u);
        if (r == -ERANGE)
            return error_setf(err, "size '%s'%s is too large", value, what);
        if (r < 0)
            return error_setf(err, "invalid size '%s'%s", value, what);
        return 0;
    }
    return 0;
}

/* ---- storage ---- */

static struct opt_kv *find_kv(const struct opts *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->kv[i].key, key))
            return &o->kv[i];
    return NULL;
}

/* Takes ownership of key and value (freed on failure). */
static int set_kv(struct opts *o, char *key, char *value, struct error *err)
{
    struct opt_kv *kv = find_kv(o, key);
    if (kv) {
        free(key);
        free(kv->value);
        kv->value = value;
        return 0;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 8;
        struct opt_kv *nkv = realloc(o->kv, cap * sizeof(*nkv));
        if (!nkv) {
            free(key);
            free(value);
            return oom(err);
        }
        o->kv = nkv;
        o->cap = cap;
    }
    o->kv[o->n].key = key;
    o->kv[o->n].value = value;
    o->n++;
    return 0;
}

void opts_free(struct opts *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->n; i++) {
        free(o->kv[i].key);
        free(o->kv[i].value);
    }
    free(o->kv);
    o->kv = NULL;
    o->n = o->cap = 0;
    o->help = false;
}

/* ---- parsing ---- */

/* Copy an escaped value starting at p up to a single ','; ",," becomes ','. *end: after it. */
static char *read_value(const char *p, const char **end)
{
    size_t len = 0;
    const char *q = p;
    while (*q) {
        if (*q == ',') {
            if (q[1] != ',')
                break;
            q++;
        }
        q++;
        len++;
    }
    char *v = malloc(len + 1);
    if (!v)
        return NULL;
    size_t i = 0;
    for (q = p; *q;) {
        if (*q == ',') {
            if (q[1] != ',')
                break;
            q++;
        }
        v[i++] = *q++;
    }
    v[i] = '\0';
    *end = q;
    return v;
}

/* Store key=value after checking key and type; takes ownership of both. */
static int store(struct opts *o, const struct opts_group *g, char *key, char *value,
                 struct error *err)
{
    const struct opt_desc *d = opts_find_desc(g, key);
    if (!*key) {
        free(key);
        free(value);
        return error_setf(err, "empty parameter name");
    }
    if (!d && !g->free_form) {
        unknown_key(g, key, err);
        free(key);
        free(value);
        return -1;
    }
    if (d && check_value(g, d, value, err) < 0) {
        free(key);
        free(value);
        return -1;
    }
    return set_kv(o, key, value, err);
}

static char *dup_range(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

int opts_parse(struct opts *o, const struct opts_group *g, const char *text, struct error *err)
{
    o->group = g;
    const char *p = text;
    bool first = true;
    while (*p) {
        size_t klen = strcspn(p, "=,");
        char *key, *value;
        if (p[klen] == '=') {
            key = dup_range(p, klen);
            value = read_value(p + klen + 1, &p);
            if (!key || !value) {
                free(key);
                free(value);
                return oom(err);
            }
        } else if (first && g->implied) {
            value = read_value(p, &p);
            if (!value)
                return oom(err);
            if (opts_is_help(value)) {
                free(value);
                o->help = true;
                return 0;
            }
            key = strdup(g->implied);
            if (!key) {
                free(value);
                return oom(err);
            }
        } else {
            /* Bare element: a flag, "nokey", or help. */
            key = dup_range(p, klen);
            if (!key)
                return oom(err);
            p += klen;
            if (opts_is_help(key)) {
                free(key);
                o->help = true;
                return 0;
            }
            const struct opt_desc *d = opts_find_desc(g, key);
            const char *v = "on";
            if (!d && !strncmp(key, "no", 2) && key[2]) {
                const struct opt_desc *nd = opts_find_desc(g, key + 2);
                if ((nd && nd->type == OPT_BOOL) || (!nd && g->free_form)) {
                    memmove(key, key + 2, strlen(key + 2) + 1);
                    d = nd;
                    v = "off";
                }
            }
            if (d && d->type != OPT_BOOL) {
                error_setf(err, "parameter '%s' requires a value", key);
                free(key);
                return -1;
            }
            value = strdup(v);
            if (!value) {
                free(key);
                return oom(err);
            }
        }
        if (store(o, g, key, value, err) < 0)
            return -1;
        first = false;
        if (*p == ',')
            p++;
    }
    return 0;
}

int opts_validate(struct opts *o, const struct opts_group *g, struct error *err)
{
    for (size_t i = 0; i < o->n; i++) {
        const struct opt_desc *d = opts_find_desc(g, o->kv[i].key);
        if (!d && !g->free_form)
            return unknown_key(g, o->kv[i].key, err);
        if (d && check_value(g, d, o->kv[i].value, err) < 0)
            return -1;
    }
    o->group = g;
    return 0;
}

int opts_list_add(struct opts **items, size_t *n, struct opts *o, const char *what,
                  struct error *err)
{
    const struct opt_kv *id = find_kv(o, "id");
    for (size_t i = 0; id && i < *n; i++) {
        const struct opt_kv *other = find_kv(&(*items)[i], "id");
        if (other && !strcmp(other->value, id->value))
            return error_setf(err, "duplicate %s id '%s'", what, id->value);
    }
    struct opts *a = realloc(*items, (*n + 1) * sizeof(*a));
    if (!a)
        return oom(err);
    *items = a;
    a[(*n)++] = *o;
    memset(o, 0, sizeof(*o));
    return 0;
}

void opts_list_free(struct opts **items, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        opts_free(&(*items)[i]);
    free(*items);
    *items = NULL;
    *n = 0;
}

/* ---- getters ---- */

bool opts_has(const struct opts *o, const char *key)
{
    return find_kv(o, key) != NULL;
}

const char *opts_get_str(const struct opts *o, const char *key)
{
    const struct opt_kv *kv = find_kv(o, key);
    if (kv)
        return kv->value;
    const struct opt_desc *d = opts_find_desc(o->group, key);
    return d ? d->def : NULL;
}

int opts_get_bool(const struct opts *o, const char *key, bool *out, struct error *err)
{
    const char *v = opts_get_str(o, key);
    if (!v)
        return 0;
    if (opts_parse_bool(v, out) < 0)
        return error_setf(err, "invalid boolean '%s' for '%s' (use on/off)", v, key);
    return 1;
}

int opts_get_number(const struct opts *o, const char *key, uint64_t *out, struct error *err)
{
    const char *v = opts_get_str(o, key);
    if (!v)
        return 0;
    int r = opts_parse_number(v, out);
    if (r == -ERANGE)
        return error_setf(err, "number '%s' for '%s' is out of range", v, key);
    if (r < 0)
        return error_setf(err, "invalid number '%s' for '%s'", v, key);
    return 1;
}

int opts_get_size(const struct opts *o, const char *key, uint64_t *out, struct error *err)
{
    const char *v = opts_get_str(o, key);
    if (!v)
        return 0;
    int r = opts_parse_size(v, 1, out);
    if (r == -ERANGE)
        return error_setf(err, "size '%s' for '%s' is too large", v, key);
    if (r < 0)
        return error_setf(err, "invalid size '%s' for '%s'", v, key);
    return 1;
}

/* ---- help ---- */

static const char *type_placeholder(enum opt_type t)
{
    switch (t) {
    case OPT_BOOL:
        return "on|off";
    case OPT_NUMBER:
        return "<num>";
    case OPT_SIZE:
        return "<size>";
    case OPT_STRING:
        break;
    }
    return "<str>";
}

void opts_print_help(const struct opts_group *g, FILE *f)
{
    fprintf(f, "%s options:\n", g->name);
    for (const struct opt_desc *d = g->desc; d && d->name; d++) {
        char left[64];
        snprintf(left, sizeof(left), "%s=%s", d->name, type_placeholder(d->type));
        fprintf(f, "  %-24s - %s (%s", left, d->help ? d->help : "", opt_type_name(d->type));
        if (d->def)
            fprintf(f, ", default %s", d->def);
        if (g->implied && !strcmp(g->implied, d->name))
            fprintf(f, ", implied first key");
        fprintf(f, ")\n");
    }
    if (g->free_form)
        fprintf(f, "  (further keys depend on the %s)\n", g->implied ? g->implied : "option");
}

char *opts_synopsis(const struct opts_group *g, char *buf, size_t len)
{
    size_t n = 0;
    if (!len)
        return buf;
    buf[0] = '\0';
    const struct opt_desc *imp = g->implied ? opts_find_desc(g, g->implied) : NULL;
    if (imp) {
        int w = snprintf(buf, len, "[%s=]%s", imp->name, type_placeholder(imp->type));
        n = w < 0 ? 0 : (size_t)w;
    }
    for (const struct opt_desc *d = g->desc; d && d->name && n < len; d++) {
        if (d == imp)
            continue;
        int w = snprintf(buf + n, len - n, "%s%s=%s", n ? "[," : "[", d->name,
                         type_placeholder(d->type));
        if (w < 0)
            break;
        n += (size_t)w;
        if (n < len) {
            w = snprintf(buf + n, len - n, "]");
            n += w < 0 ? 0 : (size_t)w;
        }
    }
    if (g->free_form && n < len)
        snprintf(buf + n, len - n, "[,...]");
    return buf;
}
