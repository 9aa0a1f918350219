/* An interrupt line as a device sees it: a level it raises and lowers. The VM routes it to KVM. */
#ifndef KEMU_CORE_IRQ_H
#define KEMU_CORE_IRQ_H

struct irq_line {
    void (*set)(void *opaque, unsigned gsi, int level);
    void *opaque;
    unsigned gsi;
};

static inline void irq_set_level(const struct irq_line *irq, int level)
{
    if (irq && irq->set)
        irq->set(irq->opaque, irq->gsi, level);
}

#endif
