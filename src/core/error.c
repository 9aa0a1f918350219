#include "core/error.h"

#include <stdio.h>
#include <string.h>

static void verror(struct error *err, const char *fmt, va_list ap)
{
    if (!err || err->set)
        return;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    err->set = true;
}

int error_setf(struct error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(err, fmt, ap);
    va_end(ap);
    return -1;
}

int error_setf_errno(struct error *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    if (!err || err->set)
        return -1;
    va_start(ap, fmt);
    verror(err, fmt, ap);
    va_end(ap);
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(errnum));
    return -1;
}

void error_prefix(struct error *err, const char *fmt, ...)
{
    char prefix[256], tmp[sizeof(err->msg)];
    va_list ap;
    if (!err || !err->set)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    size_t n = strlen(prefix);
    if (n >= sizeof(tmp))
        n = sizeof(tmp) - 1;
    memcpy(tmp, prefix, n);
    size_t m = strnlen(err->msg, sizeof(err->msg) - 1);
    if (m > sizeof(tmp) - 1 - n)
        m = sizeof(tmp) - 1 - n;
    memcpy(tmp + n, err->msg, m);
    tmp[n + m] = '\0';
    memcpy(err->msg, tmp, sizeof(tmp));
}
