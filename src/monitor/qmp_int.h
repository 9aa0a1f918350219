/* Internals of the QMP server shared by its files, the unit tests and the fuzzer. */
#ifndef KEMU_MONITOR_QMP_INT_H
#define KEMU_MONITOR_QMP_INT_H

#include "monitor/qmp.h"

#define QMP_VERSION_MAJOR 7
#define QMP_VERSION_MINOR 2
#define QMP_VERSION_MICRO 0

/* Unconsumed input beyond this (an object that never ends) drops the client. */
#define QMP_MAX_INPUT (1u << 20)
/* Stop reading commands while this much output waits; a client that lets more pile up (events
 * keep coming) is dropped. */
#define QMP_OUT_HIGH    (64u << 10)
#define QMP_OUT_MAX     (4u << 20)
#define QMP_MAX_CLIENTS 64

struct qmp_client {
    struct qmp_server *s;
    struct qmp_client *next;
    int fd;
    bool pretty;
    bool negotiated;
    bool dead;     /* dropped; freed when the outermost callback on it returns */
    unsigned busy; /* nesting of callbacks working on this client */
    uint32_t watched;

    /* Input: bytes [0, in_len); [0, scan) already scanned by the splitter. */
    char *in;
    size_t in_len, in_cap, scan;
    size_t start;  /* where the value being scanned began */
    int depth;     /* open { and [ of that value */
    bool in_value; /* inside a value */
    bool bare;     /* the value is a bare token (number, keyword, garbage) */
    bool in_string, escape;

    /* Output: bytes [out_off, out_len) still to be written. */
    char *out;
    size_t out_len, out_cap, out_off;
};

struct qmp_listener;

struct qmp_server {
    struct eventloop *loop;
    struct qmp_vm_ops ops;
    struct qmp_client *clients;
    struct qmp_listener *listeners;
    unsigned nr_clients;
    bool quit_pending; /* quit asked: call ops.quit once its reply is out */
};

/* Error to report to a client: class is QEMU's ErrorClass name. */
struct qmp_err {
    bool set;
    const char *cls;
    char desc[512];
};

int qmp_err_set(struct qmp_err *e, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Add a client on a connected socket; NULL on failure (fd closed). */
struct qmp_client *qmp_client_new(struct qmp_server *s, int fd, bool pretty, struct error *err);
/* Append bytes to the client's input and run the complete requests in it. Returns false if the
 * client was dropped (and freed). */
bool qmp_client_input(struct qmp_client *c, const void *buf, size_t len);
/* The socket may take output again: flush, then resume any requests left waiting. Same return. */
bool qmp_client_writable(struct qmp_client *c);
/* Queue a message (a reference is taken); may drop the client when its output overflows. */
void qmp_client_send(struct qmp_client *c, json_t *msg);

/* A JSON string even from bytes that are not UTF-8 (file names, jansson's error text quoting
 * input): bad bytes become '?'. NULL stands for "". */
json_t *qmp_jstr(const char *s);

/* Run one parsed request (any JSON value) and send the reply. */
void qmp_dispatch(struct qmp_client *c, json_t *req);
/* The greeting: {"QMP": {"version": ..., "capabilities": []}} (new reference). */
json_t *qmp_greeting(void);

#endif
