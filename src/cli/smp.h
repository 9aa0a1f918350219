/*
 * -smp: CPU topology inference with QEMU's rules (QEMU >= 6.2, modern machine types):
 *   - every given value must be > 0;
 *   - dies > 1 only where the machine supports dies (pc yes, microvm no);
 *   - with neither cpus nor maxcpus: missing sockets/cores/threads are 1, maxcpus is their
 *     product and cpus = maxcpus;
 *   - otherwise maxcpus defaults to cpus, then missing values are computed preferring cores
 *     over sockets (cores first, sockets next, threads last; the others default to 1);
 *   - sockets * dies * cores * threads must equal maxcpus, cpus <= maxcpus, and maxcpus must
 *     not exceed the machine's limit.
 */
#ifndef KEMU_CLI_SMP_H
#define KEMU_CLI_SMP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

/* What the user gave: has_x says whether x was given. */
struct smp_request {
    bool has_cpus, has_sockets, has_dies, has_cores, has_threads, has_maxcpus;
    uint64_t cpus, sockets, dies, cores, threads, maxcpus;
};

struct smp_machine {
    const char *name;    /* for messages: "pc" */
    bool dies_supported; /* shows "dies (n)" in messages, allows dies > 1 */
    unsigned max_cpus;   /* limit on maxcpus */
};

struct smp_topology {
    unsigned cpus;    /* vCPUs present at start */
    unsigned maxcpus; /* sockets * dies * cores * threads */
    unsigned sockets, dies, cores, threads;
};

/* Pure function: fill topo from req, or return -1 with err set to QEMU's message. */
int smp_resolve(const struct smp_request *req, const struct smp_machine *m,
                struct smp_topology *topo, struct error *err);

#endif
