/* The kemu_json_* trampolines that monitor/jansson_dl.h renames jansson's functions to. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "kemu-config.h"
#include "monitor/jansson_dl.h"

#include "core/os.h"

/* Every function resolved: the renamed ones, and json_vpack_ex behind json_pack. */
#define JANSSON_FNS(X)                                                                             \
    X(json_array)                                                                                  \
    X(json_array_append_new)                                                                       \
    X(json_array_get)                                                                              \
    X(json_array_size)                                                                             \
    X(json_delete)                                                                                 \
    X(json_dumps)                                                                                  \
    X(json_equal)                                                                                  \
    X(json_false)                                                                                  \
    X(json_integer)                                                                                \
    X(json_integer_value)                                                                          \
    X(json_loadb)                                                                                  \
    X(json_loads)                                                                                  \
    X(json_object)                                                                                 \
    X(json_object_get)                                                                             \
    X(json_object_iter)                                                                            \
    X(json_object_iter_key)                                                                        \
    X(json_object_iter_next)                                                                       \
    X(json_object_iter_value)                                                                      \
    X(json_object_key_to_iter)                                                                     \
    X(json_object_set_new)                                                                         \
    X(json_object_size)                                                                            \
    X(json_string)                                                                                 \
    X(json_string_value)                                                                           \
    X(json_true)

/* Typed by jansson's header through the renamed declarations (same signatures). The names
 * are pasted, never expanded, so p_json_delete is not turned into p_kemu_json_delete. */
#define JL_FIELD(n) __typeof__(kemu_##n) *p_##n;
static struct {
    JANSSON_FNS(JL_FIELD)
    __typeof__(json_vpack_ex) *p_json_vpack_ex; /* not renamed: only json_pack reaches it */
} jl;

#define JL_ENTRY(n) {#n, (void **)&jl.p_##n},
static const struct os_lib_fn jl_fns[] = {
    JANSSON_FNS(JL_ENTRY){"json_vpack_ex", (void **)&jl.p_json_vpack_ex},
};

static struct os_lib libjansson = {
    .soname = JANSSON_SONAME,
    .what = "QMP",
    .fns = jl_fns,
    .nfns = sizeof(jl_fns) / sizeof(jl_fns[0]),
};

int jansson_dl_open(struct error *err)
{
    return os_lib_open(&libjansson, err);
}

#define FN(n) OS_LIB_FN(libjansson, jl.p_##n, #n)

json_t *kemu_json_array(void)
{
    return FN(json_array)();
}

int kemu_json_array_append_new(json_t *array, json_t *value)
{
    return FN(json_array_append_new)(array, value);
}

json_t *kemu_json_array_get(const json_t *array, size_t index)
{
    return FN(json_array_get)(array, index);
}

size_t kemu_json_array_size(const json_t *array)
{
    return FN(json_array_size)(array);
}

void kemu_json_delete(json_t *json)
{
    FN(json_delete)(json);
}

char *kemu_json_dumps(const json_t *json, size_t flags)
{
    return FN(json_dumps)(json, flags);
}

int kemu_json_equal(const json_t *value1, const json_t *value2)
{
    return FN(json_equal)(value1, value2);
}

json_t *kemu_json_false(void)
{
    return FN(json_false)();
}

json_t *kemu_json_integer(json_int_t value)
{
    return FN(json_integer)(value);
}

json_int_t kemu_json_integer_value(const json_t *integer)
{
    return FN(json_integer_value)(integer);
}

json_t *kemu_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error)
{
    return FN(json_loadb)(buffer, buflen, flags, error);
}

json_t *kemu_json_loads(const char *input, size_t flags, json_error_t *error)
{
    return FN(json_loads)(input, flags, error);
}

json_t *kemu_json_object(void)
{
    return FN(json_object)();
}

json_t *kemu_json_object_get(const json_t *object, const char *key)
{
    return FN(json_object_get)(object, key);
}

void *kemu_json_object_iter(json_t *object)
{
    return FN(json_object_iter)(object);
}

const char *kemu_json_object_iter_key(void *iter)
{
    return FN(json_object_iter_key)(iter);
}

void *kemu_json_object_iter_next(json_t *object, void *iter)
{
    return FN(json_object_iter_next)(object, iter);
}

json_t *kemu_json_object_iter_value(void *iter)
{
    return FN(json_object_iter_value)(iter);
}

void *kemu_json_object_key_to_iter(const char *key)
{
    return FN(json_object_key_to_iter)(key);
}

int kemu_json_object_set_new(json_t *object, const char *key, json_t *value)
{
    return FN(json_object_set_new)(object, key, value);
}

size_t kemu_json_object_size(const json_t *object)
{
    return FN(json_object_size)(object);
}

/* What jansson's own json_pack does: a variadic function cannot pass its arguments on. */
json_t *kemu_json_pack(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    json_t *value = FN(json_vpack_ex)(NULL, 0, fmt, ap);
    va_end(ap);
    return value;
}

json_t *kemu_json_string(const char *value)
{
    return FN(json_string)(value);
}

const char *kemu_json_string_value(const json_t *string)
{
    return FN(json_string_value)(string);
}

json_t *kemu_json_true(void)
{
    return FN(json_true)();
}
