/*
 * db_sql_classify: a lexical look at a statement's first keyword. See exec.h.
 */
#include "db/exec.h"

#include <stdbool.h>
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

/* The keyword at p (letters only): its length, or 0 when a longer identifier starts there. */
static size_t keyword_len(const char *p)
{
    size_t len = 0;
    while ((p[len] >= 'a' && p[len] <= 'z') || (p[len] >= 'A' && p[len] <= 'Z'))
        len++;
    if ((p[len] >= '0' && p[len] <= '9') || p[len] == '_' || p[len] == '$')
        return 0; /* a longer identifier, not a keyword */
    return len;
}

static bool is_word(const char *p, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(p, word, len) == 0;
}

bool db_sql_ends_transaction(const char *sql)
{
    const char *p = skip_blank(sql);
    size_t len = keyword_len(p);

    if (is_word(p, len, "COMMIT") || is_word(p, len, "END"))
        return true;
    if (!is_word(p, len, "ROLLBACK") && !is_word(p, len, "ABORT"))
        return false;
    /* ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name keeps the transaction */
    p = skip_blank(p + len);
    len = keyword_len(p);
    if (is_word(p, len, "WORK") || is_word(p, len, "TRANSACTION")) {
        p = skip_blank(p + len);
        len = keyword_len(p);
    }
    return !is_word(p, len, "TO");
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
    size_t len = keyword_len(p);

    for (size_t i = 0; len && i < sizeof(words) / sizeof(words[0]); i++)
        if (is_word(p, len, words[i].word))
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
