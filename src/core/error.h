/* Error reporting: library code fills a struct error and returns -1; only main() prints and exits.
 */
#ifndef KEMU_CORE_ERROR_H
#define KEMU_CORE_ERROR_H

#include <stdarg.h>
#include <stdbool.h>

struct error {
    bool set;
    char msg[512];
};

/* Set the message (first setter wins, so the innermost, most precise reason survives). Returns -1.
 */
int error_setf(struct error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like error_setf, with ": strerror(errnum)" appended. Returns -1. */
int error_setf_errno(struct error *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix an existing message with context ("-drive file=x: " + msg). */
void error_prefix(struct error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
