/*
 * svc_speed: see speed.h. A slot packs a 40-bit tag (the hash's top bits, never 0 in a used slot)
 * and a 24-bit mean in microseconds (saturating near 16.8 s) into one _Atomic uint64_t, so a
 * reader sees either a whole old entry or a whole new one. The mean moves 1/8 of the way to each
 * new run (a run far above the mean counts as at most 4 x it + 1 ms): quick enough to follow a
 * change, slow enough that one stall does not flip it.
 */
#include "service/speed.h"

#include <stdatomic.h>
#include <stdlib.h>


#define SLOTS 4096 /* a power of two */
#define MEAN_BITS 24
#define MEAN_MAX ((1u << MEAN_BITS) - 1)

struct svc_speed {
    _Atomic uint64_t slot[SLOTS];
};

svc_speed *svc_speed_new(void)
{
    svc_speed *t = malloc(sizeof(*t));
    if (!t)
        return NULL;
    for (int i = 0; i < SLOTS; i++)
        atomic_init(&t->slot[i], 0);
    return t;
}

void svc_speed_free(svc_speed *t)
{
    free(t);
}

static uint64_t tag_of(uint64_t hash)
{
    uint64_t tag = hash >> MEAN_BITS;
    return tag ? tag : 1; /* 0 marks an empty slot */
}

void svc_speed_observe(svc_speed *t, uint64_t hash, uint64_t ns)
{
    _Atomic uint64_t *slot = &t->slot[hash & (SLOTS - 1)];
    uint64_t tag = tag_of(hash), us = ns / 1000;
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed), mean;

    if (us > MEAN_MAX)
        us = MEAN_MAX;
    if (old >> MEAN_BITS == tag) {
        uint64_t prev = old & MEAN_MAX;
        /* A run far above the mean counts as at most 4 x it + 1 ms: a scheduling stall of
         * 100 ms on a 0.3 ms lookup would otherwise make it slow for the next 15 runs (and so
         * not pipelined, not held back by quick_workers: more stalls); a statement that has
         * really slowed down still passes 2 ms within a handful of runs. */
        if (us > prev * 4 + 1000)
            us = prev * 4 + 1000;
        mean = us >= prev ? prev + (us - prev) / 8 : prev - (prev - us) / 8;
    } else {
        mean = us; /* first run, or the slot was another statement's */
    }
    /* A lost race drops one observation: fine for a running mean. */
    atomic_compare_exchange_strong_explicit(slot, &old, tag << MEAN_BITS | mean,
                                            memory_order_relaxed, memory_order_relaxed);
}

bool svc_speed_quick(const svc_speed *t, uint64_t hash)
{
    uint64_t v = atomic_load_explicit(&t->slot[hash & (SLOTS - 1)], memory_order_relaxed);
    return v >> MEAN_BITS == tag_of(hash) && (v & MEAN_MAX) < SVC_SPEED_QUICK_US;
}
