/*
 * db_sql_pipelinable, db_sql_reads: a lexical look at a statement's first keyword. See exec.h.
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

/* Whether sql's first keyword is one of words[0..n). */
static bool first_word_in(const char *sql, const char *const *words, size_t n)
{
    const char *p = skip_blank(sql);
    size_t len = 0;

    while ((p[len] >= 'a' && p[len] <= 'z') || (p[len] >= 'A' && p[len] <= 'Z'))
        len++;
    if ((p[len] >= '0' && p[len] <= '9') || p[len] == '_' || p[len] == '$')
        return false; /* a longer identifier, not a keyword */
    for (size_t i = 0; i < n; i++)
        if (strlen(words[i]) == len && strncasecmp(p, words[i], len) == 0)
            return true;
    return false;
}

bool db_sql_pipelinable(const char *sql)
{
    static const char *const words[] = {"SELECT", "WITH", "VALUES", "TABLE",
                                        "INSERT", "UPDATE", "DELETE"};
    return first_word_in(sql, words, sizeof(words) / sizeof(words[0]));
}

bool db_sql_reads(const char *sql)
{
    static const char *const words[] = {"SELECT", "WITH", "VALUES", "TABLE"};
    return first_word_in(sql, words, sizeof(words) / sizeof(words[0]));
}
