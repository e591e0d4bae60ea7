/*
 * db_buf: growable byte buffer and the JSON string writer that every result value goes through.
 *
 * Growth doubles from 256 bytes, so appending n bytes costs O(n) amortised. Once an allocation
 * fails, `oom` is set and every later append is a no-op: the contents stay a valid C string (a
 * truncated one), and the owner checks `oom` once when done.
 */
#include "db/buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_BUF_MIN_CAP 256

/* Make room for `extra` more bytes plus the NUL; false (and oom set) when that is impossible. */
static bool reserve(db_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (b->oom)
        return false;
    if (extra > SIZE_MAX - 1 - b->len)
        goto fail;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : DB_BUF_MIN_CAP;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    p = realloc(b->data, cap);
    if (!p)
        goto fail;
    p[b->len] = '\0'; /* a first allocation must hold "" before anything is appended */
    b->data = p;
    b->cap = cap;
    return true;

fail:
    b->oom = true;
    return false;
}

void db_buf_init(db_buf *b)
{
    *b = (db_buf)DB_BUF_INIT;
}

void db_buf_free(db_buf *b)
{
    free(b->data);
    db_buf_init(b);
}

void db_buf_reset(db_buf *b)
{
    b->len = 0;
    b->oom = false;
    if (b->data)
        b->data[0] = '\0';
}

void db_buf_append(db_buf *b, const void *p, size_t n)
{
    if (n == 0 || !reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void db_buf_puts(db_buf *b, const char *s)
{
    db_buf_append(b, s, strlen(s));
}

void db_buf_putc(db_buf *b, char c)
{
    if (!reserve(b, 1))
        return;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void db_buf_printf(db_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    size_t room;
    int n;

    /* Format straight into the spare capacity; only a too-long result needs a second pass. */
    va_start(ap, fmt);
    va_copy(ap2, ap);
    room = b->cap > b->len ? b->cap - b->len : 0;
    n = b->oom ? -1 : vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    if (n < 0)
        goto out;
    if ((size_t)n >= room) {
        if (!reserve(b, (size_t)n)) {
            if (b->data)
                b->data[b->len] = '\0'; /* undo the truncated first attempt */
            goto out;
        }
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    }
    b->len += (size_t)n;

out:
    va_end(ap2);
    va_end(ap);
}

void db_buf_long(db_buf *b, long long v)
{
    /* Two digits per division halves the number of (slow) 64-bit divisions. */
    static const char pairs[] = "0001020304050607080910111213141516171819"
                                "2021222324252627282930313233343536373839"
                                "4041424344454647484950515253545556575859"
                                "6061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char tmp[24];
    char *end = tmp + sizeof tmp, *p = end;
    /* Negate in unsigned arithmetic so LLONG_MIN does not overflow. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        *--p = pairs[d + 1];
        *--p = pairs[d];
    }
    if (u >= 10) {
        *--p = pairs[u * 2 + 1];
        *--p = pairs[u * 2];
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0)
        *--p = '-';
    db_buf_append(b, p, (size_t)(end - p));
}

void db_buf_double(db_buf *b, double v, int decimals)
{
    /* The buffer holds JSON, and "nan"/"inf" are not JSON numbers. */
    if (!isfinite(v)) {
        db_buf_puts(b, "null");
        return;
    }
    db_buf_printf(b, "%.*f", decimals < 0 ? 0 : decimals > 17 ? 17 : decimals, v);
}

/*
 * Length of the well-formed UTF-8 sequence at s[0..n), or, when there is none, minus the length
 * of its maximal ill-formed subpart (Unicode 15, section 3.9, Table 3-7): a truncated but
 * otherwise valid prefix is replaced by one U+FFFD, any other bad byte by one each.
 */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    int need;

    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4) /* continuation byte, overlong C0/C1 lead, or above U+10FFFF */
        return -1;
    if (c < 0xE0) {
        need = 1;
    } else if (c < 0xF0) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates D800..DFFF */
    } else {
        need = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n || s[i] < lo || s[i] > hi)
            return -i;
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

bool db_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        int k;

        if (p[i] < 0x80) {
            i++;
            continue;
        }
        k = utf8_seq(p + i, n - i);
        if (k < 0)
            return false;
        i += (size_t)k;
    }
    return true;
}

/* Escape letter of each ASCII byte JSON forbids in a string ('u': \u00XX); 0 copies as is. */
static const char json_esc[128] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    ['"'] = '"', ['\\'] = '\\',
};

void db_buf_json_string(db_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* p[run..i) is pending output that needs no change */

    /* One reservation covers the common case of nothing to escape. */
    if (!reserve(b, n + 2))
        return;
    db_buf_putc(b, '"');
    while (i < n) {
        unsigned char c = p[i];

        if (c < 0x80 && !json_esc[c]) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            int k = utf8_seq(p + i, n - i);

            if (k > 0) {
                i += (size_t)k; /* valid multibyte UTF-8 is copied, not \u-escaped */
                continue;
            }
            db_buf_append(b, p + run, i - run);
            db_buf_append(b, "\xEF\xBF\xBD", 3);
            i += (size_t)-k;
        } else {
            char esc[6] = {'\\', json_esc[c], '0', '0', hex[c >> 4], hex[c & 0xf]};

            db_buf_append(b, p + run, i - run);
            db_buf_append(b, esc, esc[1] == 'u' ? 6 : 2);
            i++;
        }
        run = i;
    }
    db_buf_append(b, p + run, i - run);
    db_buf_putc(b, '"');
}

void db_buf_json_string_or_null(db_buf *b, const char *s)
{
    if (s)
        db_buf_json_string(b, s, strlen(s));
    else
        db_buf_puts(b, "null");
}

char *db_buf_steal(db_buf *b, size_t *len)
{
    char *data = NULL;

    /* Incomplete contents are worth nothing to the caller; keep oom set so it still shows. */
    if (b->oom) {
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
        goto out;
    }
    if (!reserve(b, 0)) /* nothing written yet: still hand over an empty string */
        goto out;
    data = b->data;
    if (len)
        *len = b->len;
    db_buf_init(b);

out:
    if (!data && len)
        *len = 0;
    return data;
}
