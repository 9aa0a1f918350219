/* -smp topology inference: see smp.h for the rules (they follow QEMU's machine-smp.c docs). */
#include "cli/smp.h"

#include <inttypes.h>
#include <stdio.h>

static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    if (a && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

/* "sockets (2) * dies (1) * cores (2) * threads (1)" */
static void hierarchy(char *buf, size_t len, const struct smp_machine *m, uint64_t sockets,
                      uint64_t dies, uint64_t cores, uint64_t threads)
{
    if (m->dies_supported)
        snprintf(buf, len,
                 "sockets (%" PRIu64 ") * dies (%" PRIu64 ") * cores (%" PRIu64
                 ") * threads (%" PRIu64 ")",
                 sockets, dies, cores, threads);
    else
        snprintf(buf, len, "sockets (%" PRIu64 ") * cores (%" PRIu64 ") * threads (%" PRIu64 ")",
                 sockets, cores, threads);
}

int smp_resolve(const struct smp_request *req, const struct smp_machine *m,
                struct smp_topology *topo, struct error *err)
{
    uint64_t cpus = req->has_cpus ? req->cpus : 0;
    uint64_t sockets = req->has_sockets ? req->sockets : 0;
    uint64_t dies = req->has_dies ? req->dies : 0;
    uint64_t cores = req->has_cores ? req->cores : 0;
    uint64_t threads = req->has_threads ? req->threads : 0;
    uint64_t maxcpus = req->has_maxcpus ? req->maxcpus : 0;

    if ((req->has_cpus && !req->cpus) || (req->has_sockets && !req->sockets) ||
        (req->has_dies && !req->dies) || (req->has_cores && !req->cores) ||
        (req->has_threads && !req->threads) || (req->has_maxcpus && !req->maxcpus))
        return error_setf(err, "Invalid CPU topology: "
                               "CPU topology parameters must be greater than zero");
    if (!m->dies_supported && dies > 1)
        return error_setf(err, "dies not supported by this machine's CPU topology");
    dies = dies ? dies : 1;

    if (!cpus && !maxcpus) {
        sockets = sockets ? sockets : 1;
        cores = cores ? cores : 1;
        threads = threads ? threads : 1;
    } else {
        maxcpus = maxcpus ? maxcpus : cpus;
        /* Prefer cores over sockets (QEMU >= 6.2 machine types). */
        if (!cores) {
            sockets = sockets ? sockets : 1;
            threads = threads ? threads : 1;
            cores = maxcpus / mul_sat(mul_sat(sockets, dies), threads);
        } else if (!sockets) {
            threads = threads ? threads : 1;
            sockets = maxcpus / mul_sat(mul_sat(dies, cores), threads);
        }
        /* Threads last; every divisor here was given and is non-zero. */
        if (!threads)
            threads = maxcpus / mul_sat(mul_sat(sockets, dies), cores);
    }
    uint64_t product = mul_sat(mul_sat(mul_sat(sockets, dies), cores), threads);
    maxcpus = maxcpus ? maxcpus : product;
    cpus = cpus ? cpus : maxcpus;

    char h[160];
    if (product != maxcpus) {
        hierarchy(h, sizeof(h), m, sockets, dies, cores, threads);
        return error_setf(err,
                          "Invalid CPU topology: product of the hierarchy must match maxcpus: "
                          "%s != maxcpus (%" PRIu64 ")",
                          h, maxcpus);
    }
    if (maxcpus < cpus) {
        hierarchy(h, sizeof(h), m, sockets, dies, cores, threads);
        return error_setf(err,
                          "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
                          "%s == maxcpus (%" PRIu64 ") < smp_cpus (%" PRIu64 ")",
                          h, maxcpus, cpus);
    }
    if (maxcpus > m->max_cpus)
        return error_setf(err,
                          "Invalid SMP CPUs %" PRIu64 ". The max CPUs supported by machine "
                          "'%s' is %u",
                          maxcpus, m->name, m->max_cpus);
    /* Every factor divides maxcpus <= max_cpus, so all fit in unsigned. */
    topo->cpus = (unsigned)cpus;
    topo->maxcpus = (unsigned)maxcpus;
    topo->sockets = (unsigned)sockets;
    topo->dies = (unsigned)dies;
    topo->cores = (unsigned)cores;
    topo->threads = (unsigned)threads;
    return 0;
}
