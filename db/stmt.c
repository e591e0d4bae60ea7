/*
 * db_stmts: see stmt.h. A small array searched by hash then text: a few hundred entries at most,
 * and a lookup costs less than the round trip it saves by far.
 */
#include "db/stmt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint64_t hash;               /* of sql */
    char *sql;                   /* owned; NULL: a free entry */
    uint64_t used;               /* clock value of its last use */
    char name[DB_STMT_NAME_MAX]; /* its server-side name */
} entry;

struct db_stmts {
    entry *entries;   /* capacity of them */
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
    return h;
}

db_stmts *db_stmts_new(int capacity)
{
    if (capacity <= 0)
        return NULL;
    db_stmts *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->entries = calloc((size_t)capacity, sizeof(*s->entries));
    if (!s->entries) {
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
    for (int i = 0; i < s->capacity; i++) {
        free(s->entries[i].sql);
        s->entries[i].sql = NULL;
    }
    s->count = 0;
}

void db_stmts_free(db_stmts *s)
{
    if (!s)
        return;
    db_stmts_clear(s);
    free(s->entries);
    free(s);
}

const char *db_stmts_find(db_stmts *s, const char *sql)
{
    if (!s)
        return NULL;
    uint64_t h = db_sql_hash(sql);
    for (int i = 0; i < s->capacity; i++) {
        entry *e = &s->entries[i];
        if (e->sql && e->hash == h && strcmp(e->sql, sql) == 0) {
            e->used = ++s->clock;
            return e->name;
        }
    }
    return NULL;
}

const char *db_stmts_add(db_stmts *s, const char *sql, char evicted[DB_STMT_NAME_MAX])
{
    entry *slot = NULL;

    evicted[0] = '\0';
    if (!s)
        return NULL;
    for (int i = 0; i < s->capacity && !slot; i++)
        if (!s->entries[i].sql)
            slot = &s->entries[i];
    if (!slot) { /* full: the least recently used one goes */
        slot = &s->entries[0];
        for (int i = 1; i < s->capacity; i++)
            if (s->entries[i].used < slot->used)
                slot = &s->entries[i];
        snprintf(evicted, DB_STMT_NAME_MAX, "%s", slot->name);
        free(slot->sql);
        slot->sql = NULL;
        s->count--;
    }
    char *copy = strdup(sql);
    if (!copy)
        return NULL;
    *slot = (entry){.hash = db_sql_hash(sql), .sql = copy, .used = ++s->clock};
    snprintf(slot->name, sizeof(slot->name), "fanout_%llu", (unsigned long long)++s->next_id);
    s->count++;
    return slot->name;
}

void db_stmts_forget(db_stmts *s, const char *name)
{
    if (!s)
        return;
    for (int i = 0; i < s->capacity; i++) {
        entry *e = &s->entries[i];
        if (e->sql && strcmp(e->name, name) == 0) {
            free(e->sql);
            e->sql = NULL;
            s->count--;
            return;
        }
    }
}

size_t db_stmts_count(const db_stmts *s)
{
    return s ? s->count : 0;
}
