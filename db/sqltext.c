/*
 * db_sql_classify: a lexical look at a statement's first keyword. See exec.h.
 */
#include "db/exec.h"

#include <string.h>
#include <strings.h>

/* Skip white space and comments (-- to the end of the line, nested block comments). */
static const char *skip_blank(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (p[0] == '-' && p[1] == '-') {
            p += strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 0;
            do {
                if (p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                    depth--;
                    p += 2;
                } else if (*p) {
                    p++;
                }
            } while (depth > 0 && *p);
        } else {
            return p;
        }
    }
}

db_sql_kind db_sql_classify(const char *sql)
{
    static const struct {
        const char *word;
        db_sql_kind kind;
    } words[] = {{"SELECT", DB_SQL_READ},    {"WITH", DB_SQL_READ},     {"VALUES", DB_SQL_READ},
                 {"TABLE", DB_SQL_READ},     {"INSERT", DB_SQL_WRITE},  {"UPDATE", DB_SQL_WRITE},
                 {"DELETE", DB_SQL_WRITE}};
    const char *p = skip_blank(sql);
    size_t len = 0;

    while ((p[len] >= 'a' && p[len] <= 'z') || (p[len] >= 'A' && p[len] <= 'Z'))
        len++;
    if ((p[len] >= '0' && p[len] <= '9') || p[len] == '_' || p[len] == '$')
        return DB_SQL_OTHER; /* a longer identifier, not a keyword */
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i].word) == len && strncasecmp(p, words[i].word, len) == 0)
            return words[i].kind;
    return DB_SQL_OTHER;
}

bool db_sql_pipelinable(const char *sql)
{
    return db_sql_classify(sql) != DB_SQL_OTHER;
}

bool db_sql_reads(const char *sql)
{
    return db_sql_classify(sql) == DB_SQL_READ;
}
