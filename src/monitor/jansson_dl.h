/*
 * jansson, opened with dlopen() when the first QMP client or listener needs it: linked, it costs
 * every run ~52 KiB of resident memory though most never start a QMP monitor.
 *
 * Include this instead of <jansson.h>. jansson's own inline functions and macros (json_decref,
 * json_boolean, json_object_foreach...) call the library's functions by name, so every function
 * that kemu or those inlines reach is renamed here to a kemu_json_* trampoline (jansson_dl.c)
 * before the header is read. A function missing from this list fails the link of kemu (which
 * no longer links jansson) rather than reaching the library behind the loader's back: add it
 * here and in jansson_dl.c.
 */
#ifndef KEMU_MONITOR_JANSSON_DL_H
#define KEMU_MONITOR_JANSSON_DL_H

#ifdef JANSSON_H
#error "monitor/jansson_dl.h must be included before any <jansson.h>"
#endif

#define json_array              kemu_json_array
#define json_array_append_new   kemu_json_array_append_new
#define json_array_get          kemu_json_array_get
#define json_array_size         kemu_json_array_size
#define json_delete             kemu_json_delete
#define json_dumps              kemu_json_dumps
#define json_equal              kemu_json_equal
#define json_false              kemu_json_false
#define json_integer            kemu_json_integer
#define json_integer_value      kemu_json_integer_value
#define json_loadb              kemu_json_loadb
#define json_loads              kemu_json_loads
#define json_object             kemu_json_object
#define json_object_get         kemu_json_object_get
#define json_object_iter        kemu_json_object_iter
#define json_object_iter_key    kemu_json_object_iter_key
#define json_object_iter_next   kemu_json_object_iter_next
#define json_object_iter_value  kemu_json_object_iter_value
#define json_object_key_to_iter kemu_json_object_key_to_iter
#define json_object_set_new     kemu_json_object_set_new
#define json_object_size        kemu_json_object_size
#define json_pack               kemu_json_pack
#define json_string             kemu_json_string
#define json_string_value       kemu_json_string_value
#define json_true               kemu_json_true

#include <jansson.h>

#include "core/error.h"

/*
 * Open libjansson and resolve the functions above; 0, or -1 with "QMP needs libjansson.so.4:
 * <why>". Once per run (later calls repeat the first outcome, cheaply). Calling a kemu_json_*
 * function before a successful open is a programming error: it aborts with the function's name.
 */
int jansson_dl_open(struct error *err);

#endif
