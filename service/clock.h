/*
 * svc_clock: the few time calculations the service makes, in one place. Header-only, any thread.
 * Deadlines for pthread_cond_timedwait are on CLOCK_REALTIME (its default clock); durations are
 * on CLOCK_MONOTONIC.
 */
#ifndef FANOUT_SVC_CLOCK_H
#define FANOUT_SVC_CLOCK_H

#include <stdint.h>
#include <time.h>

/* The CLOCK_REALTIME instant ms milliseconds from now, for pthread_cond_timedwait. */
static inline struct timespec svc_clock_deadline(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Now on CLOCK_MONOTONIC, in nanoseconds. */
static inline long long svc_clock_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Nanoseconds elapsed since t0 (CLOCK_MONOTONIC); 0 if the clock seems to go back. */
static inline uint64_t svc_clock_ns_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (int64_t)(now.tv_sec - t0->tv_sec) * 1000000000 + (now.tv_nsec - t0->tv_nsec);
    return ns > 0 ? (uint64_t)ns : 0;
}

/* Milliseconds elapsed since t0 (CLOCK_MONOTONIC). */
static inline double svc_clock_ms_since(const struct timespec *t0)
{
    return (double)svc_clock_ns_since(t0) / 1e6;
}

#endif
