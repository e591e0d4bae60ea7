/*
 * harness: processes, a tiny HTTP/1.1 client, JSON expectations and libpq helpers for the
 * integration suite. The contract and the threading rule (single test thread, bounded waits) are
 * in harness.h.
 */
#include "tests/integration/harness.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_S 15  /* start-up until ready, times fx_scale() */
#define STOP_TIMEOUT_S 15   /* SIGTERM until exit, times fx_scale() */
#define RUN_TIMEOUT_S 10    /* fx_run_binary, times fx_scale() */
#define HTTP_TIMEOUT_S 30   /* one socket read or write, times fx_scale() */
#define PROBE_TIMEOUT_S 2   /* one readiness probe, times fx_scale() */
#define LOG_TAIL_BYTES 4000 /* how much of a server log a failure prints */
#define JSON_PRINT_MAX 6000 /* how much of a document a failure prints */

/* The settings fanout pins on its connections, so libpq's text matches fanout's. */
#define PINNED_OPTIONS \
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=1 " \
    "-c bytea_output=hex"

/* ---- time ---- */

int fx_scale(void)
{
    const char *w = getenv("FANOUT_WRAPPER");
    return (w != NULL && w[strspn(w, " \t")] != '\0') ? 10 : 1;
}

bool fx_wrapped(void)
{
    return fx_scale() > 1;
}

double fx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void fx_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* ---- processes ---- */

/* An argv of [wrapper words...] FANOUT_BIN args...; the words point into `words`. */
typedef struct fx_argv {
    char *words; /* a copy of FANOUT_WRAPPER, cut into words in place */
    char **v;    /* NULL-terminated */
} fx_argv;

static void argv_free(fx_argv *a)
{
    free(a->words);
    free(a->v);
    a->words = NULL;
    a->v = NULL;
}

static bool argv_build(fx_argv *a, const char *const *args)
{
    const char *bin = getenv("FANOUT_BIN");
    const char *wrapper = getenv("FANOUT_WRAPPER");
    size_t n = 0, cap = 0;
    char *save = NULL;

    a->words = strdup(wrapper != NULL ? wrapper : "");
    for (size_t i = 0; args != NULL && args[i] != NULL; i++)
        cap++;
    cap += strlen(a->words) / 2 + 3;
    a->v = calloc(cap, sizeof(*a->v));
    if (bin == NULL || a->words == NULL || a->v == NULL) {
        print_error("harness: FANOUT_BIN is not set (or out of memory)\n");
        argv_free(a);
        return false;
    }
    for (char *w = strtok_r(a->words, " \t", &save); w != NULL; w = strtok_r(NULL, " \t", &save))
        a->v[n++] = w;
    a->v[n++] = (char *)bin;
    for (size_t i = 0; args != NULL && args[i] != NULL; i++)
        a->v[n++] = (char *)args[i];
    a->v[n] = NULL;
    return true;
}

/* In the child: drop every FANOUT_* variable and DATABASE_URL (the harness's own FANOUT_BIN,
 * FANOUT_TEST_* ... are not fanout settings), so only the command line configures the server. */
static void scrub_environment(void)
{
    extern char **environ;
    char names[64][128];
    int n = 0;

    for (char **e = environ; *e != NULL && n < 64; e++) {
        size_t len = strcspn(*e, "=");
        if ((strncmp(*e, "FANOUT_", 7) == 0 || strncmp(*e, "DATABASE_URL=", 13) == 0) &&
            len < sizeof(names[0])) {
            memcpy(names[n], *e, len);
            names[n++][len] = '\0';
        }
    }
    for (int i = 0; i < n; i++)
        unsetenv(names[i]);
}

/* Fork and exec argv with stdout and stderr on the given descriptors; -1 on failure. */
static pid_t spawn(char **argv, int out_fd, int err_fd)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test binary */
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    scrub_environment();
    execvp(argv[0], argv);
    dprintf(err_fd, "harness: cannot execute %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Wait for pid until deadline (monotonic seconds). True when it exited; *wstatus set. */
static bool wait_until(pid_t pid, double deadline, int *wstatus)
{
    for (;;) {
        pid_t r = waitpid(pid, wstatus, WNOHANG);
        if (r == pid)
            return true;
        if (r == -1 && errno != EINTR)
            return true; /* not our child any more: treat as gone */
        if (fx_now() >= deadline)
            return false;
        fx_sleep_ms(10);
    }
}

static void describe_status(int wstatus, char *buf, size_t len)
{
    if (WIFEXITED(wstatus))
        snprintf(buf, len, "exit status %d%s", WEXITSTATUS(wstatus),
                 WEXITSTATUS(wstatus) == 99 ? " (valgrind found errors or leaks)" : "");
    else if (WIFSIGNALED(wstatus))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
    else
        snprintf(buf, len, "wait status %#x", (unsigned)wstatus);
}

static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0, cap = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            char *grown = realloc(data, cap * 2 + 4096);
            if (grown == NULL)
                break;
            data = grown;
            cap = cap * 2 + 4096;
        }
        size_t got = fread(data + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (data != NULL)
        data[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return data;
}

static void print_log_tail(const fx_server *s)
{
    size_t len = 0;
    char *text = read_file(s->log, &len);
    const char *from = text;

    if (text == NULL) {
        print_error("  (no log at %s)\n", s->log);
        return;
    }
    if (len > LOG_TAIL_BYTES)
        from = text + len - LOG_TAIL_BYTES;
    print_error("  --- tail of %s ---\n%s%s  --- end of log ---\n", s->log, from,
                (len > 0 && text[len - 1] != '\n') ? "\n" : "");
    free(text);
}

static bool probe(int port, const char *path, int *status);

bool fx_start(fx_server *s, const fx_opts *opts)
{
    const char *database = opts->database != NULL ? opts->database : getenv("FANOUT_TEST_DATABASE");
    const char *path = opts->not_ready ? "/healthz" : "/readyz";
    const char *base[] = {"--listen", NULL, "--database", database};
    const char **args = NULL;
    char listen[32];
    size_t nextra = 0;
    fx_argv argv = {0};
    int fd = -1, wstatus = 0, status = 0;
    bool ok = false;
    double deadline;

    s->pid = -1;
    snprintf(s->log, sizeof(s->log), "/tmp/fanout-it-XXXXXX.log");
    if (database == NULL) {
        print_error("harness: FANOUT_TEST_DATABASE is not set\n");
        return false;
    }

    /* A free port: bind port 0, read it back, close. Another process could take it before
     * fanout binds; then start-up fails visibly, which is rare enough on loopback. */
    int probe_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(addr);
    if (probe_fd < 0 || bind(probe_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(probe_fd, (struct sockaddr *)&addr, &alen) != 0) {
        print_error("harness: cannot find a free port: %s\n", strerror(errno));
        if (probe_fd >= 0)
            close(probe_fd);
        return false;
    }
    close(probe_fd);
    s->port = ntohs(addr.sin_port);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    base[1] = listen;

    while (opts->args != NULL && opts->args[nextra] != NULL)
        nextra++;
    args = calloc(4 + nextra + 1, sizeof(*args));
    if (args == NULL)
        goto cleanup;
    memcpy(args, base, sizeof(base));
    for (size_t i = 0; i < nextra; i++)
        args[4 + i] = opts->args[i];
    if (!argv_build(&argv, args))
        goto cleanup;

    fd = mkstemps(s->log, 4);
    if (fd < 0) {
        print_error("harness: cannot create a log file: %s\n", strerror(errno));
        goto cleanup;
    }
    s->pid = spawn(argv.v, fd, fd);
    if (s->pid < 0) {
        print_error("harness: fork: %s\n", strerror(errno));
        goto cleanup;
    }

    deadline = fx_now() + READY_TIMEOUT_S * fx_scale();
    for (;;) {
        if (waitpid(s->pid, &wstatus, WNOHANG) == s->pid) {
            char how[96];
            describe_status(wstatus, how, sizeof(how));
            print_error("harness: fanout on port %d ended before it was ready: %s\n", s->port, how);
            print_log_tail(s);
            s->pid = -1;
            goto cleanup;
        }
        if (probe(s->port, path, &status) && status == 200) {
            ok = true;
            goto cleanup;
        }
        if (fx_now() >= deadline) {
            print_error("harness: fanout on port %d not ready after %d s (last GET %s: %d)\n", s->port,
                        READY_TIMEOUT_S * fx_scale(), path, status);
            print_log_tail(s);
            fx_kill(s);
            goto cleanup;
        }
        fx_sleep_ms(50);
    }

cleanup:
    if (fd >= 0)
        close(fd);
    argv_free(&argv);
    free(args);
    return ok;
}

bool fx_stop(fx_server *s)
{
    int wstatus = 0;
    char how[96];

    if (s->pid <= 0) {
        print_error("harness: fx_stop: no fanout running (it crashed or never started)\n");
        return false;
    }
    kill(s->pid, SIGTERM);
    if (!wait_until(s->pid, fx_now() + STOP_TIMEOUT_S * fx_scale(), &wstatus)) {
        print_error("harness: fanout on port %d still running %d s after SIGTERM; killing it\n", s->port,
                    STOP_TIMEOUT_S * fx_scale());
        print_log_tail(s);
        fx_kill(s);
        return false;
    }
    s->pid = -1;
    if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
        unlink(s->log);
        return true;
    }
    describe_status(wstatus, how, sizeof(how));
    print_error("harness: fanout on port %d stopped with %s, want exit status 0\n", s->port, how);
    print_log_tail(s);
    return false;
}

void fx_kill(fx_server *s)
{
    int wstatus;
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &wstatus, 0);
    print_error("harness: killed fanout on port %d; its log is kept at %s\n", s->port, s->log);
    s->pid = -1;
}

int fx_fd_count(pid_t pid)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int fx_log_count(const fx_server *s, const char *needle)
{
    FILE *f = fopen(s->log, "r");
    char line[4096];
    int n = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

bool fx_log_line(const fx_server *s, const char *needle, char *line, size_t len)
{
    char buf[4096];
    bool found = false;

    for (int tries = 0; tries < 50 && !found; tries++) {
        FILE *f = fopen(s->log, "r");
        if (!f)
            return false;
        while (fgets(buf, sizeof(buf), f))
            if (strstr(buf, needle)) {
                snprintf(line, len, "%s", buf);
                found = true;
            }
        fclose(f);
        if (!found)
            fx_sleep_ms(20);
    }
    return found;
}

bool fx_alive(fx_server *s)
{
    int wstatus = 0;
    char how[96];

    if (s->pid <= 0)
        return false;
    if (waitpid(s->pid, &wstatus, WNOHANG) != s->pid)
        return true;
    describe_status(wstatus, how, sizeof(how));
    print_error("harness: fanout on port %d has ended: %s\n", s->port, how);
    print_log_tail(s);
    s->pid = -1;
    return false;
}

bool fx_run_binary(const char *const *args, int *exit_code, char **out, char **err)
{
    char out_path[] = "/tmp/fanout-it-out-XXXXXX", err_path[] = "/tmp/fanout-it-err-XXXXXX";
    int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path), wstatus = 0;
    fx_argv argv = {0};
    pid_t pid = -1;
    bool ok = false;

    *out = *err = NULL;
    *exit_code = -1;
    if (out_fd < 0 || err_fd < 0 || !argv_build(&argv, args))
        goto cleanup;
    pid = spawn(argv.v, out_fd, err_fd);
    if (pid < 0)
        goto cleanup;
    if (!wait_until(pid, fx_now() + RUN_TIMEOUT_S * fx_scale(), &wstatus)) {
        kill(pid, SIGKILL);
        waitpid(pid, &wstatus, 0);
        print_error("harness: %s did not finish within %d s\n", argv.v[0], RUN_TIMEOUT_S * fx_scale());
        goto cleanup;
    }
    *exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    ok = true;

cleanup:
    if (out_fd >= 0) {
        close(out_fd);
        *out = read_file(out_path, NULL);
        unlink(out_path);
    }
    if (err_fd >= 0) {
        close(err_fd);
        *err = read_file(err_path, NULL);
        unlink(err_path);
    }
    argv_free(&argv);
    return ok;
}

/* ---- HTTP ---- */

static int connect_port(int port, int timeout_s)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = timeout_s};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool fx_raw_header(const char *head, size_t len, const char *name, char *buf, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = head, *end = head + len;

    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = (size_t)(eol - v);
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (vlen >= cap)
                vlen = cap - 1;
            memcpy(buf, v, vlen);
            buf[vlen] = '\0';
            return true;
        }
        p = eol + 2;
    }
    return false;
}

/* Decode a chunked body from p[0..n). 1 when complete (the body in out and out_len, the bytes
 * consumed in used), 0 when more bytes are needed, -1 when malformed. */
static int dechunk(const char *p, size_t n, char **out, size_t *out_len, size_t *used)
{
    size_t pos = 0, len = 0;
    char *body = malloc(1);

    if (body == NULL)
        return -1;
    for (;;) {
        const char *eol = memmem(p + pos, n - pos, "\r\n", 2);
        char *endp = NULL;
        if (eol == NULL)
            goto more;
        unsigned long size = strtoul(p + pos, &endp, 16);
        if (endp == p + pos)
            goto bad;
        pos = (size_t)(eol - p) + 2;
        if (size == 0) {
            /* Trailer lines, then an empty line. */
            for (;;) {
                const char *t = memmem(p + pos, n - pos, "\r\n", 2);
                if (t == NULL)
                    goto more;
                bool empty = (t == p + pos);
                pos = (size_t)(t - p) + 2;
                if (empty)
                    break;
            }
            body[len] = '\0';
            *out = body;
            *out_len = len;
            *used = pos;
            return 1;
        }
        if (n - pos < size + 2)
            goto more;
        char *grown = realloc(body, len + size + 1);
        if (grown == NULL)
            goto bad;
        body = grown;
        memcpy(body + len, p + pos, size);
        len += size;
        pos += size + 2;
    }
more:
    free(body);
    return 0;
bad:
    free(body);
    return -1;
}

/* Parse one response from buf[0..len). 1 when complete (*r filled, *used bytes consumed), 0 when
 * more bytes are needed, -1 when malformed. At eof a body without a length ends at len. */
static int parse_response(const char *buf, size_t len, bool head, bool eof, fx_response *r,
                          size_t *used)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    char value[64];
    char *body = NULL;
    size_t hlen, body_len = 0, total;
    int status;

    if (end == NULL)
        return eof ? -1 : 0;
    hlen = (size_t)(end - buf) + 4;
    if (hlen < 14 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    status = atoi(buf + 9);
    if (status < 100 || status > 599)
        return -1;

    if (head || status == 204 || status == 304 || status < 200) {
        total = hlen;
    } else if (fx_raw_header(buf, hlen, "Transfer-Encoding", value, sizeof(value)) &&
               strcasestr(value, "chunked") != NULL) {
        size_t chunk_used = 0;
        int rc = dechunk(buf + hlen, len - hlen, &body, &body_len, &chunk_used);
        if (rc <= 0)
            return rc == 0 && eof ? -1 : rc;
        total = hlen + chunk_used;
    } else if (fx_raw_header(buf, hlen, "Content-Length", value, sizeof(value))) {
        body_len = strtoul(value, NULL, 10);
        if (len - hlen < body_len)
            return eof ? -1 : 0;
        total = hlen + body_len;
    } else {
        if (!eof)
            return 0;
        body_len = len - hlen;
        total = len;
    }
    if (body == NULL) {
        body = malloc(body_len + 1);
        if (body == NULL)
            return -1;
        memcpy(body, buf + total - body_len, body_len);
        body[body_len] = '\0';
    }

    /* Keep the header lines (not the status line), each NUL-terminated in place. */
    const char *first = (const char *)memmem(buf, hlen, "\r\n", 2) + 2;
    r->head_len = (size_t)(end + 2 - first);
    r->head = malloc(r->head_len + 1);
    if (r->head == NULL) {
        free(body);
        return -1;
    }
    memcpy(r->head, first, r->head_len);
    r->head[r->head_len] = '\0';
    for (size_t i = 0; i + 1 < r->head_len; i++)
        if (r->head[i] == '\r' && r->head[i + 1] == '\n')
            r->head[i] = r->head[i + 1] = '\0';
    r->status = status;
    r->body = body;
    r->body_len = body_len;
    *used = total;
    return 1;
}

const char *fx_header(const fx_response *r, const char *name)
{
    size_t nlen = strlen(name);
    char *p = r->head, *end = r->head + r->head_len;

    while (p != NULL && p < end) {
        size_t llen = strlen(p);
        if (llen > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            char *v = p + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            for (char *t = p + llen; t > v && (t[-1] == ' ' || t[-1] == '\t'); t--)
                t[-1] = '\0';
            return v;
        }
        p += llen + 2;
    }
    return NULL;
}

void fx_response_free(fx_response *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

bool fx_conn_open(fx_conn *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = connect_port(port, HTTP_TIMEOUT_S * fx_scale());
    if (c->fd < 0) {
        print_error("http: cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        return false;
    }
    return true;
}

bool fx_conn_send(fx_conn *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            return true; /* the server closed early (e.g. 413): its reply may be waiting */
        if (n <= 0) {
            print_error("http: send: %s\n", strerror(errno));
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* Read one response. to_eof: the server closes after it (Connection: close): read to EOF first,
 * and refuse bytes after the reply. */
static bool conn_read(fx_conn *c, bool head, fx_response *r, bool to_eof)
{
    bool eof = false;
    size_t used = 0;

    memset(r, 0, sizeof(*r));
    for (;;) {
        int rc = ((to_eof && !eof) || c->len == 0) ? 0 : parse_response(c->buf, c->len, head, eof, r, &used);
        if (rc == 1 && to_eof && used != c->len) {
            print_error("http: %zu unexpected bytes after the reply: %.*s\n", c->len - used,
                        (int)(c->len - used > 200 ? 200 : c->len - used), c->buf + used);
            fx_response_free(r);
            return false;
        }
        if (rc == 1) {
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            return true;
        }
        if (rc < 0 || (rc == 0 && eof)) {
            print_error("http: %s reply from server (%zu bytes): %.*s\n",
                        c->len == 0 ? "no" : "malformed or incomplete", c->len,
                        (int)(c->len > 2000 ? 2000 : c->len), c->buf != NULL ? c->buf : "");
            return false;
        }
        if (c->cap - c->len < 16384) {
            char *grown = realloc(c->buf, c->cap * 2 + 16384);
            if (grown == NULL)
                return false;
            c->buf = grown;
            c->cap = c->cap * 2 + 16384;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            print_error("http: no complete reply within %d s (%zu bytes so far)\n",
                        HTTP_TIMEOUT_S * fx_scale(), c->len);
            return false;
        }
        if (n <= 0) /* EOF, or a reset after the server's reply (413 closes early) */
            eof = true;
        else
            c->len += (size_t)n;
    }
}

bool fx_conn_post_batch(fx_conn *c, int port, const char *body)
{
    char head[256];
    size_t len = strlen(body);
    int n = snprintf(head, sizeof(head),
                     "POST /v1/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n", len);
    if (!fx_conn_open(c, port))
        return false;
    if (!fx_conn_send(c, head, (size_t)n) || !fx_conn_send(c, body, len)) {
        fx_conn_close(c);
        return false;
    }
    return true;
}

bool fx_conn_read(fx_conn *c, bool head, fx_response *r)
{
    return conn_read(c, head, r, false);
}

void fx_conn_close(fx_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* The request text (caller frees). */
static char *format_request(int port, const char *method, const char *path, const char *headers,
                            const char *body, size_t body_len, size_t *len)
{
    char *text = NULL, *req = NULL;
    int n;

    if (body != NULL)
        n = asprintf(&text, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s"
                            "Content-Length: %zu\r\n\r\n",
                     method, path, port, headers != NULL ? headers : "", body_len);
    else
        n = asprintf(&text, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s\r\n",
                     method, path, port, headers != NULL ? headers : "");
    if (n < 0)
        return NULL;
    req = malloc((size_t)n + body_len + 1);
    if (req != NULL) {
        memcpy(req, text, (size_t)n);
        if (body != NULL)
            memcpy(req + n, body, body_len);
        *len = (size_t)n + (body != NULL ? body_len : 0);
        req[*len] = '\0';
    }
    free(text);
    return req;
}

static bool http_once(int port, const char *method, const char *path, const char *headers,
                      const char *body, size_t body_len, fx_response *r, int timeout_s, bool quiet)
{
    fx_conn c = {.fd = -1};
    size_t len = 0;
    char *req = format_request(port, method, path, headers, body, body_len, &len);
    bool ok = false;

    memset(r, 0, sizeof(*r));
    if (req == NULL)
        goto cleanup;
    c.fd = connect_port(port, timeout_s);
    if (c.fd < 0) {
        if (!quiet)
            print_error("http: cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        goto cleanup;
    }
    if (!fx_conn_send(&c, req, len))
        goto cleanup;
    ok = conn_read(&c, strcmp(method, "HEAD") == 0, r, true);

cleanup:
    fx_conn_close(&c);
    free(req);
    return ok;
}

bool fx_http(int port, const char *method, const char *path, const char *headers, const char *body,
             size_t body_len, fx_response *r)
{
    return http_once(port, method, path, headers, body, body_len, r, HTTP_TIMEOUT_S * fx_scale(), false);
}

/* One readiness probe: true when a reply came (its status in *status). Quiet: refusals are
 * expected while the server starts. */
static bool probe(int port, const char *path, int *status)
{
    fx_response r;
    if (!http_once(port, "GET", path, NULL, NULL, 0, &r, PROBE_TIMEOUT_S * fx_scale(), true))
        return false;
    *status = r.status;
    fx_response_free(&r);
    return true;
}

json_t *fx_post_json(int port, const char *body, int *status)
{
    fx_response r;
    json_error_t jerr;
    json_t *doc = NULL;

    *status = 0;
    if (!fx_http(port, "POST", "/v1/batch", "Content-Type: application/json\r\n", body, strlen(body), &r))
        return NULL;
    *status = r.status;
    doc = json_loadb(r.body, r.body_len, 0, &jerr);
    if (doc == NULL)
        print_error("http: reply %d is not JSON (%s at %d): %.*s\n", r.status, jerr.text, jerr.position,
                    (int)(r.body_len > 2000 ? 2000 : r.body_len), r.body);
    fx_response_free(&r);
    return doc;
}

/* POST body; the reply when it is 200 with a JSON object, else NULL after printing why. */
static json_t *batch(int port, const char *body, const char *file, int line)
{
    int status = 0;
    json_t *doc = fx_post_json(port, body, &status);

    if (status == 200 && json_is_object(doc))
        return doc;
    print_error("%s:%d: POST /v1/batch %s\n  want 200 with a JSON object, got %d\n", file, line, body,
                status);
    fx_print_json("reply", doc);
    json_decref(doc);
    return NULL;
}

json_t *fx_batch_(int port, const char *body, const char *file, int line)
{
    json_t *doc = batch(port, body, file, line);
    if (doc == NULL)
        _fail(file, line);
    return doc;
}

json_t *fx_batchj_(int port, json_t *req, const char *file, int line)
{
    char *body = json_dumps(req, JSON_COMPACT);
    json_t *doc = body != NULL ? batch(port, body, file, line) : NULL;

    json_decref(req);
    free(body);
    if (doc == NULL)
        _fail(file, line);
    return doc;
}

/* ---- JSON ---- */

json_t *fx_at(json_t *doc, const char *path)
{
    char key[256];
    const char *p = path;

    while (doc != NULL && *p != '\0') {
        size_t n = strcspn(p, ".");
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        p += n + (p[n] == '.');
        if (json_is_array(doc)) {
            char *endp = NULL;
            unsigned long i = strtoul(key, &endp, 10);
            doc = (n > 0 && *endp == '\0') ? json_array_get(doc, i) : NULL;
        } else {
            doc = json_object_get(doc, key); /* NULL for non-objects */
        }
    }
    return doc;
}

void fx_print_json(const char *label, json_t *doc)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t len = text != NULL ? strlen(text) : 0;

    print_error("  %s: %.*s%s\n", label, (int)(len > JSON_PRINT_MAX ? JSON_PRINT_MAX : len),
                text != NULL ? text : "(none)", len > JSON_PRINT_MAX ? "..." : "");
    free(text);
}

static const char *kind_of(json_t *v)
{
    switch (v == NULL ? -1 : (int)json_typeof(v)) {
    case -1: return "absent";
    case JSON_NULL: return "null";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    default: return "boolean";
    }
}

static void expect_failed(json_t *doc, const char *path, const char *want, json_t *got,
                          const char *file, int line)
{
    char *got_text = got != NULL ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    print_error("%s:%d: at %s: want %s, got %s %s\n", file, line, path, want, kind_of(got),
                got_text != NULL ? got_text : "");
    free(got_text);
    fx_print_json("document", doc);
    _fail(file, line);
}

void fx_expect_str_(json_t *doc, const char *path, const char *want, const char *file, int line)
{
    json_t *v = fx_at(doc, path);
    if (!json_is_string(v) || json_string_length(v) != strlen(want) || strcmp(json_string_value(v), want) != 0) {
        char *quoted = NULL;
        json_t *w = json_string(want);
        quoted = w != NULL ? json_dumps(w, JSON_ENCODE_ANY) : NULL;
        json_decref(w);
        char msg[1024];
        snprintf(msg, sizeof(msg), "string %s", quoted != NULL ? quoted : want);
        free(quoted);
        expect_failed(doc, path, msg, v, file, line);
    }
}

void fx_expect_int_(json_t *doc, const char *path, long long want, const char *file, int line)
{
    json_t *v = fx_at(doc, path);
    if (!json_is_integer(v) || json_integer_value(v) != want) {
        char msg[64];
        snprintf(msg, sizeof(msg), "integer %lld", want);
        expect_failed(doc, path, msg, v, file, line);
    }
}

void fx_expect_bool_(json_t *doc, const char *path, bool want, const char *file, int line)
{
    json_t *v = fx_at(doc, path);
    if (!json_is_boolean(v) || json_is_true(v) != want)
        expect_failed(doc, path, want ? "true" : "false", v, file, line);
}

void fx_expect_kind_(json_t *doc, const char *path, const char *kind, const char *file, int line)
{
    json_t *v = fx_at(doc, path);
    const char *got = kind_of(v);
    bool ok = strcmp(kind, got) == 0 || (strcmp(kind, "present") == 0 && v != NULL) ||
              (strcmp(kind, "number") == 0 && json_is_number(v)) ||
              (strcmp(kind, "boolean") == 0 && json_is_boolean(v));
    if (!ok)
        expect_failed(doc, path, kind, v, file, line);
}

void fx_expect_len_(json_t *doc, const char *path, size_t n, const char *file, int line)
{
    json_t *v = fx_at(doc, path);
    if (!json_is_array(v) || json_array_size(v) != n) {
        char msg[64];
        snprintf(msg, sizeof(msg), "an array of %zu", n);
        expect_failed(doc, path, msg, v, file, line);
    }
}

/* json_equal, but an integer equals a real of the same value. */
static bool same_json(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_is_array(a) && json_is_array(b)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same_json(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a) && json_is_object(b)) {
        const char *key;
        json_t *value;
        if (json_object_size(a) != json_object_size(b))
            return false;
        json_object_foreach (a, key, value)
            if (!same_json(value, json_object_get(b, key)))
                return false;
        return true;
    }
    return json_equal(a, b);
}

void fx_expect_json_(json_t *doc, const char *path, json_t *want, const char *file, int line)
{
    json_t *v = fx_at(doc, path);
    if (v == NULL || want == NULL || !same_json(v, want)) {
        char *text = want != NULL ? json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", text != NULL ? text : "(unparsable expectation)");
        free(text);
        expect_failed(doc, path, msg, v, file, line);
    }
}

/* ---- SQL ---- */

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *pg_connect(bool admin)
{
    const char *conninfo = getenv(admin ? "FANOUT_TEST_ADMIN" : "FANOUT_TEST_DATABASE");
    const char *keys[] = {"dbname", "options", "client_encoding", "application_name", NULL};
    const char *values[] = {conninfo, PINNED_OPTIONS, "UTF8", "fanout-tests", NULL};
    PGconn *conn;

    if (conninfo == NULL) {
        print_error("sql: %s is not set\n", admin ? "FANOUT_TEST_ADMIN" : "FANOUT_TEST_DATABASE");
        return NULL;
    }
    conn = PQconnectdbParams(keys, values, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        print_error("sql: cannot connect (%s): %s", conninfo, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, ignore_notice, NULL); /* "table does not exist, skipping" */
    return conn;
}

PGresult *fx_sql(bool admin, const char *sql, int nparams, const char *const *params)
{
    PGconn *conn = pg_connect(admin);
    PGresult *res;

    if (conn == NULL)
        return NULL;
    res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    PQfinish(conn);
    return res;
}

static bool result_ok(PGresult *res, const char *sql)
{
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return true;
    if (res != NULL)
        print_error("sql: %s\n  failed: %s", sql, PQresultErrorMessage(res));
    return false;
}

bool fx_sql_ok(bool admin, const char *sql)
{
    PGconn *conn = pg_connect(admin);
    PGresult *res = NULL;
    bool ok = false;

    if (conn == NULL)
        return false;
    res = PQexec(conn, sql); /* simple protocol: set-up scripts may hold several statements */
    ok = result_ok(res, sql);
    PQclear(res);
    PQfinish(conn);
    return ok;
}

char *fx_sql_value(bool admin, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = fx_sql(admin, sql, nparams, params);
    char *value = NULL;

    if (res != NULL && result_ok(res, sql) && PQntuples(res) > 0 && PQnfields(res) > 0 &&
        !PQgetisnull(res, 0, 0))
        value = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return value;
}

double fx_metric(int port, const char *series)
{
    fx_response r;
    double v = -1;
    size_t n = strlen(series);
    if (!fx_http(port, "GET", "/metrics", NULL, NULL, 0, &r))
        return -1;
    for (const char *p = r.body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            v = strtod(p + n + 1, NULL);
    fx_response_free(&r);
    return v;
}
