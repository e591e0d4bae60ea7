/*
 * svc_speed: how long statements take, remembered by SQL text, so that a batch's statements known
 * to be quick are pipelined on one connection while the others are spread over idle workers (a
 * pipeline runs its statements one after another: right for 0.1 ms lookups, wrong for 10 ms
 * ones).
 *
 * A fixed table of slots, each one atomic word: a tag from the statement's hash and its running
 * mean duration. Any thread reads and writes it without a lock. Two statements whose hashes land
 * in one slot overwrite each other (the loser reads as unknown): the cost is a wrong guess, never
 * a wrong result. Owned by the pool that uses it.
 */
#ifndef FANOUT_SVC_SPEED_H
#define FANOUT_SVC_SPEED_H

#include <stdbool.h>
#include <stdint.h>

/* A statement whose mean duration is below this is quick, microseconds. */
#define SVC_SPEED_QUICK_US 2000

typedef struct svc_speed svc_speed;

svc_speed *svc_speed_new(void); /* NULL when out of memory */
void svc_speed_free(svc_speed *t);

/* A statement's key is its db_sql_hash (db/stmt.h). */

/* Fold one run of the statement, ns nanoseconds, into its mean (any thread). */
void svc_speed_observe(svc_speed *t, uint64_t hash, uint64_t ns);

/* The statement has been seen and its mean is below SVC_SPEED_QUICK_US (any thread). */
bool svc_speed_quick(const svc_speed *t, uint64_t hash);

#endif
