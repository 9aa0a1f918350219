/*
 * CPUID for one vCPU: KVM_GET_SUPPORTED_CPUID's table with the topology leaves rewritten so the
 * guest sees `-smp sockets=S,dies=D,cores=C,threads=T` (and each vCPU its own APIC ID).
 */
#ifndef KEMU_ARCH_X86_CPUID_H
#define KEMU_ARCH_X86_CPUID_H

#include <linux/kvm.h>
#include <stdint.h>

struct x86_topology {
    unsigned sockets, dies, cores, threads; /* all >= 1; cores per die, threads per core */
};

/* Bits of the APIC ID per level: ceil(log2(count)), threads lowest. */
unsigned x86_topo_thread_bits(const struct x86_topology *topo);
unsigned x86_topo_core_bits(const struct x86_topology *topo);
unsigned x86_topo_die_bits(const struct x86_topology *topo);

/*
 * Initial APIC ID of vCPU `cpu_index` (numbered threads first, then cores, dies, sockets):
 * socket | die | core | thread packed with the widths above.
 */
uint32_t x86_apic_id(const struct x86_topology *topo, unsigned cpu_index);

/*
 * Rewrite `entries` (*nent valid, room for max_nent) - a copy of KVM_GET_SUPPORTED_CPUID's output
 * - for vCPU `cpu_index` of `nr_cpus`. Leaves 1, 4 (Intel), 0xB, 0x1F (dies > 1),
 * 0x80000001/0x80000008/0x8000001D/0x8000001E (AMD/Hygon) get the topology; leaves may be added
 * when within the advertised maximum. Everything else is kept as KVM reports it. Returns 0, or -1
 * if the topology is invalid, cpu_index >= nr_cpus, nr_cpus exceeds the topology, or max_nent is
 * too small (the table may then be partly rewritten: start again from KVM's copy).
 */
int x86_cpuid_setup(struct kvm_cpuid_entry2 *entries, unsigned *nent, unsigned max_nent,
                    const struct x86_topology *topo, unsigned cpu_index, unsigned nr_cpus);

#endif
