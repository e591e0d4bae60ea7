/*
 * db_stmts: see stmt.h. A small array searched by hash then text: a few hundred entries at most.
 * The hashes sit in an array of their own, so a lookup scans a few KiB of them (0 marks a free
 * entry), not the entries.
 */
#include "db/stmt.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *sql;                   /* owned; NULL: a free entry */
    uint64_t used;               /* clock value of its last use */
    char name[DB_STMT_NAME_MAX]; /* its server-side name */
    bool writes;                 /* it failed in a read-only transaction (db_stmts_mark_writes) */
} entry;

struct db_stmts {
    entry *entries;   /* capacity of them */
    uint64_t *hashes; /* hashes[i]: entries[i].sql's db_sql_hash (never 0), 0 when it is free */
    int capacity;
    size_t count;     /* entries in use */
    uint64_t clock;   /* ticks on every find and add */
    uint64_t next_id; /* the next name's number */
};

uint64_t db_sql_hash(const char *sql)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h ? h : 1; /* 0 marks a free entry */
}

/* Make entry i free. */
static void drop(db_stmts *s, int i)
{
    free(s->entries[i].sql);
    s->entries[i].sql = NULL;
    s->hashes[i] = 0;
    s->count--;
}

db_stmts *db_stmts_new(int capacity)
{
    if (capacity <= 0)
        return NULL;
    db_stmts *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->entries = calloc((size_t)capacity, sizeof(*s->entries));
    s->hashes = calloc((size_t)capacity, sizeof(*s->hashes));
    if (!s->entries || !s->hashes) {
        free(s->entries);
        free(s->hashes);
        free(s);
        return NULL;
    }
    s->capacity = capacity;
    return s;
}

void db_stmts_clear(db_stmts *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->capacity; i++)
        if (s->hashes[i])
            drop(s, i);
}

void db_stmts_free(db_stmts *s)
{
    if (!s)
        return;
    db_stmts_clear(s);
    free(s->entries);
    free(s->hashes);
    free(s);
}

const char *db_stmts_find(db_stmts *s, const char *sql, uint64_t hash, bool *writes)
{
    if (!s)
        return NULL;
    for (int i = 0; i < s->capacity; i++) {
        if (s->hashes[i] == hash && strcmp(s->entries[i].sql, sql) == 0) {
            s->entries[i].used = ++s->clock;
            if (writes)
                *writes = s->entries[i].writes;
            return s->entries[i].name;
        }
    }
    return NULL;
}

const char *db_stmts_add(db_stmts *s, const char *sql, uint64_t hash,
                         char evicted[DB_STMT_NAME_MAX])
{
    int slot = -1;

    evicted[0] = '\0';
    if (!s)
        return NULL;
    for (int i = 0; i < s->capacity && slot < 0; i++)
        if (!s->hashes[i])
            slot = i;
    if (slot < 0) { /* full: the least recently used one goes */
        slot = 0;
        for (int i = 1; i < s->capacity; i++)
            if (s->entries[i].used < s->entries[slot].used)
                slot = i;
        snprintf(evicted, DB_STMT_NAME_MAX, "%s", s->entries[slot].name);
        drop(s, slot);
    }
    char *copy = strdup(sql);
    if (!copy)
        return NULL;
    entry *e = &s->entries[slot];
    *e = (entry){.sql = copy, .used = ++s->clock};
    snprintf(e->name, sizeof(e->name), "fanout_%llu", (unsigned long long)++s->next_id);
    s->hashes[slot] = hash;
    s->count++;
    return e->name;
}

/* The entry named name, -1 for none. */
static int by_name(const db_stmts *s, const char *name)
{
    for (int i = 0; s && i < s->capacity; i++)
        if (s->hashes[i] && strcmp(s->entries[i].name, name) == 0)
            return i;
    return -1;
}

void db_stmts_forget(db_stmts *s, const char *name)
{
    int i = by_name(s, name);
    if (i >= 0)
        drop(s, i);
}

void db_stmts_mark_writes(db_stmts *s, const char *name)
{
    int i = by_name(s, name);
    if (i >= 0)
        s->entries[i].writes = true;
}

size_t db_stmts_count(const db_stmts *s)
{
    return s ? s->count : 0;
}
