/*
 * HTTPS, from the outside: a self-signed certificate and key made with the `openssl` command at
 * test time; fanout started with them answers `curl --cacert` over TLS 1.2 and 1.3 (probes, a
 * batch, keep-alive), refuses a TLS 1.1 handshake (`openssl s_client`), and drops plain HTTP, cut
 * handshakes and silent connections on its port without a reply, a crash or a leaked descriptor,
 * while it keeps serving. A certificate without a key (or the reverse) stops start-up with exit
 * status 2; a missing, non-PEM, mismatched or encrypted key or certificate with exit status 1 and
 * OpenSSL's reason. On the database side, the conninfo's sslmode reaches libpq untouched.
 *
 * fx_start waits for readiness over plain HTTP, which a TLS port never answers, so this group
 * forks the binary itself ([FANOUT_WRAPPER...] FANOUT_BIN ..., like test_auth.c) and waits with
 * curl; it fills an fx_server so that fx_stop, fx_alive and fx_kill apply as usual.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/groups.h"
#include "tests/integration/harness.h"

#define BATCH "{\"queries\": [{\"sql\": \"SELECT 1 AS one\"}, " \
              "{\"sql\": \"SELECT $1::int + 1 AS two\", \"params\": [41]}]}"

static fx_server srv = {.pid = -1};
/* fanout's client_timeout_ms here, so a silent client goes fast; under valgrind a handshake alone
 * can take most of a second, so it gets more. */
static char client_timeout_ms[16];
static char dir[] = "/tmp/fanout-it-tls-XXXXXX";
static char cert[64], key[64], other_key[64], ec_key[64], enc_key[64], not_pem[64], body_file[64];

/* Run a shell command line (which redirects stderr itself where wanted); its stdout into *out
 * when out is not NULL (caller frees). Returns the exit status, or -1 when it could not run or
 * ended by a signal. */
static int sh(const char *cmd, char **out)
{
    char line[512];
    size_t len = 0;
    char *text = calloc(1, 1);
    FILE *p = popen(cmd, "r");
    int st;

    if (!p || !text) {
        free(text);
        if (p)
            pclose(p);
        return -1;
    }
    while (fgets(line, sizeof(line), p)) {
        size_t n = strlen(line);
        char *grown = realloc(text, len + n + 1);
        if (!grown)
            break;
        text = grown;
        memcpy(text + len, line, n + 1);
        len += n;
    }
    st = pclose(p);
    if (out)
        *out = text;
    else
        free(text);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* curl over HTTPS to path with the test CA; extra: more curl options. Returns the HTTP status
 * curl saw (0 when the request failed), the body in body_file. */
static int curl_status(int port, const char *path, const char *extra)
{
    char cmd[1024], *out = NULL;
    int status = 0;

    snprintf(cmd, sizeof(cmd),
             "curl -sS --max-time %d --cacert %s -o %s -w '%%{http_code}' %s "
             "https://127.0.0.1:%d%s 2>/dev/null",
             5 * fx_scale(), cert, body_file, extra ? extra : "", port, path);
    if (sh(cmd, &out) == 0 && out)
        status = atoi(out);
    free(out);
    return status;
}

/* The body curl_status saved, parsed; NULL (printed) when it is not JSON. */
static json_t *saved_json(void)
{
    json_error_t jerr;
    json_t *doc = json_load_file(body_file, 0, &jerr);
    if (!doc)
        print_error("%s is not JSON: %s\n", body_file, jerr.text);
    return doc;
}

/* Open descriptors of process pid (from /proc), or -1. */
static int open_fds(pid_t pid)
{
    char path[64];
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int connect_local(int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 5 * fx_scale()};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Send data (may be empty) on a fresh connection, then read until fanout closes it. True when it
 * closed within the receive timeout; *got holds how many bytes came first (a TLS alert, perhaps)
 * and reply their start.
 */
static bool sent_then_closed(int port, const char *data, size_t len, char *reply, size_t cap,
                             size_t *got)
{
    int fd = connect_local(port);
    bool closed = false;

    *got = 0;
    if (fd < 0)
        return false;
    if (len > 0 && send(fd, data, len, MSG_NOSIGNAL) != (ssize_t)len)
        goto out;
    for (;;) {
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            closed = true;
            break;
        }
        if (n < 0) /* EAGAIN: the receive timeout passed with the connection still open */
            break;
        for (ssize_t i = 0; i < n && *got + 1 < cap; i++)
            reply[(*got)++] = buf[i];
        reply[*got] = '\0';
    }
out:
    close(fd);
    return closed;
}

/* Start fanout with the given TLS files (and args) and wait until curl --cacert gets 200 from
 * /healthz. On failure prints why with the log tail and leaves no process behind. */
static bool start_tls(fx_server *s, const char *const *args)
{
    char *words = strdup(getenv("FANOUT_WRAPPER") ? getenv("FANOUT_WRAPPER") : "");
    char *argv[48], *save = NULL, listen[32];
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(addr);
    int argc = 0, fd = -1, wstatus = 0, probe = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = false;

    s->pid = -1;
    snprintf(s->log, sizeof(s->log), "/tmp/fanout-it-tls-XXXXXX.log");
    if (!words || probe < 0 || bind(probe, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(probe, (struct sockaddr *)&addr, &alen) != 0) {
        print_error("tls: cannot find a free port: %s\n", strerror(errno));
        goto out;
    }
    s->port = ntohs(addr.sin_port);
    close(probe); /* fanout binds it next; another process could take it first, rarely */
    probe = -1;
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    for (char *w = strtok_r(words, " \t", &save); w && argc < 20; w = strtok_r(NULL, " \t", &save))
        argv[argc++] = w;
    argv[argc++] = getenv("FANOUT_BIN");
    const char *base[] = {"--listen", listen, "--database", getenv("FANOUT_TEST_DATABASE"), NULL};
    for (size_t i = 0; base[i]; i++)
        argv[argc++] = (char *)base[i];
    for (size_t i = 0; args && args[i] && argc < 46; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    if ((fd = mkstemps(s->log, 4)) < 0) {
        print_error("tls: cannot create a log file: %s\n", strerror(errno));
        goto out;
    }
    s->pid = fork();
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        unsetenv("DATABASE_URL");
        execvp(argv[0], argv);
        _exit(127);
    }
    if (s->pid < 0) {
        print_error("tls: fork: %s\n", strerror(errno));
        goto out;
    }
    double deadline = fx_now() + 15.0 * fx_scale();
    while (!ok) {
        if (waitpid(s->pid, &wstatus, WNOHANG) == s->pid) {
            print_error("tls: fanout ended before it was ready (wait status %#x)\n", wstatus);
            s->pid = -1;
            goto out;
        }
        ok = curl_status(s->port, "/healthz", NULL) == 200;
        if (!ok && fx_now() > deadline) {
            print_error("tls: fanout on port %d does not answer HTTPS\n", s->port);
            fx_kill(s);
            goto out;
        }
        if (!ok)
            fx_sleep_ms(50);
    }
out:
    if (!ok && s->log[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "tail -c 3000 %s >&2", s->log);
        if (system(cmd) != 0)
            print_error("  (no log at %s)\n", s->log);
    }
    if (fd >= 0)
        close(fd);
    if (probe >= 0)
        close(probe);
    free(words);
    return ok;
}

static int group_setup(void **state)
{
    static const char *const args[] = {"--workers", "2", "--client-timeout-ms", client_timeout_ms,
                                       "--tls-cert-file", cert, "--tls-key-file", key, NULL};
    char cmd[1024], *out = NULL;
    (void)state;

    snprintf(client_timeout_ms, sizeof(client_timeout_ms), "%d", fx_wrapped() ? 5000 : 1000);

    if (!mkdtemp(dir))
        return -1;
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(other_key, sizeof(other_key), "%s/other-key.pem", dir);
    snprintf(ec_key, sizeof(ec_key), "%s/ec-key.pem", dir);
    snprintf(enc_key, sizeof(enc_key), "%s/encrypted-key.pem", dir);
    snprintf(not_pem, sizeof(not_pem), "%s/not-pem.txt", dir);
    snprintf(body_file, sizeof(body_file), "%s/body", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s -out %s 2>&1 && "
             "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s 2>&1 && "
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s 2>&1 && "
             "openssl pkey -in %s -aes256 -passout pass:it-secret -out %s 2>&1 && "
             "echo 'not a certificate' > %s",
             key, cert, other_key, ec_key, key, enc_key, not_pem);
    if (sh(cmd, &out) != 0) {
        print_error("tls: openssl could not make the test certificate:\n%s\n", out ? out : "");
        free(out);
        return -1;
    }
    free(out);
    return start_tls(&srv, args) ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[128];
    (void)state;
    fx_kill(&srv);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* /healthz and /readyz over HTTPS, the certificate checked against the test CA. */
static void test_https_probes(void **state)
{
    json_t *doc;
    (void)state;
    assert_int_equal(curl_status(srv.port, "/healthz", NULL), 200);
    assert_non_null(doc = saved_json());
    FX_EXPECT_STR(doc, "status", "ok");
    json_decref(doc);
    assert_int_equal(curl_status(srv.port, "/readyz", NULL), 200);
    assert_non_null(doc = saved_json());
    FX_EXPECT_STR(doc, "status", "ready");
    json_decref(doc);
}

/* A batch over HTTPS runs and returns its results. */
static void test_https_batch(void **state)
{
    json_t *doc;
    (void)state;
    assert_int_equal(curl_status(srv.port, "/v1/batch",
                                 "-H 'Content-Type: application/json' --data '" BATCH "'"),
                     200);
    assert_non_null(doc = saved_json());
    FX_EXPECT_LEN(doc, "results", 2);
    FX_EXPECT_INT(doc, "results.0.rows.0.0", 1);
    FX_EXPECT_INT(doc, "results.1.rows.0.0", 42);
    json_decref(doc);
}

/* Several requests on one TLS connection (curl reuses it): keep-alive works over TLS. */
static void test_https_keepalive(void **state)
{
    char cmd[1024], *out = NULL;
    (void)state;
    snprintf(cmd, sizeof(cmd),
             "curl -sS --max-time %d --cacert %s -o /dev/null -o /dev/null -o /dev/null "
             "-w '%%{http_code} %%{num_connects}\\n' https://127.0.0.1:%d/healthz "
             "https://127.0.0.1:%d/readyz https://127.0.0.1:%d/healthz 2>&1",
             5 * fx_scale(), cert, srv.port, srv.port, srv.port);
    assert_int_equal(sh(cmd, &out), 0);
    /* One new connection for the first request, none after. */
    FX_CHECK(strcmp(out, "200 1\n200 0\n200 0\n") == 0, "curl -w said:\n%s", out);
    free(out);
}

/* Without the test CA the self-signed certificate is refused: the handshake really is TLS with
 * this certificate, not some fallback. */
static void test_untrusted_without_cacert(void **state)
{
    char cmd[512], *out = NULL;
    (void)state;
    snprintf(cmd, sizeof(cmd), "curl -sS --max-time %d https://127.0.0.1:%d/healthz 2>&1",
             5 * fx_scale(), srv.port);
    int code = sh(cmd, &out);
    FX_CHECK(code == 60, "curl without --cacert: exit %d, want 60 (certificate problem): %s", code,
             out);
    free(out);
}

/* openssl s_client with exactly one protocol version: what it printed, and its exit status. */
static int s_client(const char *version_flag, char **out)
{
    char cmd[512];
    /* SECLEVEL=0: the client's own OpenSSL would refuse to offer TLS 1.1 otherwise, and the
     * point is to see the server refuse it. */
    snprintf(cmd, sizeof(cmd),
             "timeout %d openssl s_client -connect 127.0.0.1:%d -servername localhost %s "
             "-cipher 'DEFAULT:@SECLEVEL=0' -CAfile %s -verify_return_error -brief </dev/null 2>&1",
             10 * fx_scale(), srv.port, version_flag, cert);
    return sh(cmd, out);
}

/* TLS 1.2 and 1.3 are served; a TLS 1.1 handshake is refused by fanout (a protocol_version
 * alert), with curl refused too. */
static void test_protocol_versions(void **state)
{
    char *out = NULL, cmd[512];
    int code;
    (void)state;

    code = s_client("-tls1_2", &out);
    FX_CHECK(code == 0 && strstr(out, "Protocol version: TLSv1.2"), "TLS 1.2: exit %d:\n%s", code,
             out);
    free(out);
    code = s_client("-tls1_3", &out);
    FX_CHECK(code == 0 && strstr(out, "Protocol version: TLSv1.3"), "TLS 1.3: exit %d:\n%s", code,
             out);
    free(out);
    code = s_client("-tls1_1", &out);
    FX_CHECK(code != 0 && strstr(out, "alert protocol version"),
             "TLS 1.1: exit %d, want a failure with the server's protocol_version alert:\n%s", code,
             out);
    free(out);

    snprintf(cmd, sizeof(cmd),
             "curl -sS --max-time %d --cacert %s --tlsv1.1 --tls-max 1.1 "
             "--ciphers 'DEFAULT:@SECLEVEL=0' https://127.0.0.1:%d/healthz 2>&1",
             5 * fx_scale(), cert, srv.port);
    code = sh(cmd, &out);
    FX_CHECK(code == 35, "curl --tlsv1.1 --tls-max 1.1: exit %d, want 35 (handshake failed): %s",
             code, out);
    free(out);
}

/*
 * Plain HTTP on the TLS port, a TLS record header cut short, and a connection that sends nothing:
 * each is closed by fanout without an HTTP reply (the silent one by client_timeout_ms); afterwards
 * fanout holds no more descriptors than before and still serves HTTPS.
 */
static void test_plain_http_refused(void **state)
{
    static const char plain[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    static const char post[] = "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               "application/json\r\nContent-Length: 2\r\n\r\n{}";
    static const char cut[] = "\x16\x03\x01\x02\x00\x01"; /* a ClientHello header, then nothing */
    char reply[256];
    size_t got = 0;
    (void)state;

    int before = open_fds(srv.pid);
    assert_true(before > 0);
    for (int i = 0; i < 20; i++) {
        const char *data = i % 2 ? post : plain;
        bool closed = sent_then_closed(srv.port, data, strlen(data), reply, sizeof(reply), &got);
        FX_CHECK(closed, "plain HTTP request %d: fanout kept the connection open", i);
        FX_CHECK(strstr(reply, "HTTP/") == NULL || got == 0,
                 "plain HTTP request %d got an HTTP reply: %s", i, reply);
        FX_CHECK(got == 0 || (unsigned char)reply[0] == 0x15,
                 "plain HTTP request %d: %zu bytes back that are not a TLS alert", i, got);
    }
    FX_CHECK(sent_then_closed(srv.port, cut, sizeof(cut) - 1, reply, sizeof(reply), &got),
             "a cut ClientHello was not closed within the timeout");
    double t0 = fx_now();
    FX_CHECK(sent_then_closed(srv.port, "", 0, reply, sizeof(reply), &got) && got == 0,
             "a silent connection was not closed (client_timeout_ms %s)", client_timeout_ms);
    FX_CHECK(fx_now() - t0 < atoi(client_timeout_ms) / 1000.0 + 3.0 * fx_scale(),
             "the silent connection took %.1f s to close (client_timeout_ms %s)", fx_now() - t0,
             client_timeout_ms);

    assert_true(fx_alive(&srv));
    assert_int_equal(curl_status(srv.port, "/healthz", NULL), 200);
    /* Closes happen on fanout's loop: give them a moment to land before counting. */
    int after = open_fds(srv.pid);
    for (double until = fx_now() + 5.0 * fx_scale(); after > before && fx_now() < until;) {
        fx_sleep_ms(50);
        after = open_fds(srv.pid);
    }
    FX_CHECK(after <= before, "fanout holds %d descriptors, %d before the bad clients", after,
             before);
}

/* Run the binary to completion with args after --listen/--database; returns its exit status. */
static int run(const char *const *extra, char **out, char **err)
{
    const char *args[16] = {"--listen", "127.0.0.1:0", "--database",
                            getenv("FANOUT_TEST_DATABASE"), "--workers", "1"};
    size_t n = 6;
    int code = -1;
    for (size_t i = 0; extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    bool finished = fx_run_binary(args, &code, out, err);
    FX_CHECK(finished, "fanout %s ... did not finish", extra[0]);
    return code;
}

/* One of the two settings without the other: a configuration error, before anything starts. */
static void test_half_configured(void **state)
{
    const char *const cert_only[] = {"--tls-cert-file", cert, NULL};
    const char *const key_only[] = {"--tls-key-file", key, NULL};
    char *out = NULL, *err = NULL;
    int code;
    (void)state;

    code = run(cert_only, &out, &err);
    FX_CHECK(code == 2 && strstr(err, "tls_key_file"), "cert without key: exit %d, stderr %s",
             code, err);
    free(out);
    free(err);
    code = run(key_only, &out, &err);
    FX_CHECK(code == 2 && strstr(err, "tls_cert_file"), "key without cert: exit %d, stderr %s",
             code, err);
    free(out);
    free(err);
}

/* Files OpenSSL cannot use: start-up fails with exit status 1 and a line naming the setting, the
 * file and OpenSSL's reason. An encrypted key fails at once instead of asking for a passphrase. */
static void test_bad_files(void **state)
{
    static const char missing[] = "/nonexistent/cert.pem";
    const struct {
        const char *cert, *key, *setting, *reason;
    } cases[] = {
        {missing, key, "tls_cert_file", "No such file or directory"},
        {not_pem, key, "tls_cert_file", "no start line"},
        {cert, other_key, "tls_key_file", "key values mismatch"},
        {cert, ec_key, "tls_key_file", "different key types"},
        {cert, enc_key, "tls_key_file", "the key is encrypted"},
        {cert, not_pem, "tls_key_file", "unsupported"},
        {key, key, "tls_cert_file", "no start line"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *const args[] = {"--tls-cert-file", cases[i].cert, "--tls-key-file",
                                    cases[i].key, NULL};
        char *out = NULL, *err = NULL;
        int code = run(args, &out, &err);
        FX_CHECK(code == 1, "case %zu: exit %d, want 1; stderr %s", i, code, err);
        FX_CHECK(strstr(err, cases[i].setting) && strstr(err, cases[i].reason),
                 "case %zu: stderr does not name %s and \"%s\": %s", i, cases[i].setting,
                 cases[i].reason, err);
        FX_CHECK(!strstr(err, "it-secret"), "case %zu: stderr echoes the passphrase", i);
        free(out);
        free(err);
    }
}

/*
 * The database side: the conninfo's sslmode reaches libpq. The test PostgreSQL listens on a Unix
 * socket only, where libpq ignores sslmode, so a stand-in listener on TCP plays the server: with
 * sslmode=require libpq's first packet must be an SSLRequest, and when the stand-in answers 'N'
 * (no SSL here) libpq refuses to go on, which fanout logs in libpq's words and /readyz reports.
 */
static void test_database_sslmode(void **state)
{
    static const char *const args[] = {"--workers", "1", "--log-format", "text", NULL};
    static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(addr);
    unsigned char first[8] = {0};
    char database[256], *log = NULL, cmd[128];
    fx_server db_srv = {.pid = -1};
    fx_response r;
    /* CLOEXEC: a listener inherited by fanout would keep accepting its retries into a backlog. */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), cfd = -1;
    (void)state;

    assert_true(lfd >= 0 && bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
                listen(lfd, 4) == 0 && getsockname(lfd, (struct sockaddr *)&addr, &alen) == 0);
    snprintf(database, sizeof(database),
             "host=127.0.0.1 port=%d dbname=fanout_test user=fanout sslmode=require",
             ntohs(addr.sin_port));
    const fx_opts opts = {.args = args, .database = database, .not_ready = true};
    if (!fx_start(&db_srv, &opts)) {
        close(lfd);
        fail_msg("fanout did not start");
    }
    struct timeval tv = {.tv_sec = 10 * fx_scale()};
    setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* bounds accept() too */
    cfd = accept(lfd, NULL, NULL);
    if (cfd >= 0) {
        setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        FX_CHECK(recv(cfd, first, sizeof(first), MSG_WAITALL) == (ssize_t)sizeof(first),
                 "libpq sent less than a packet header");
        FX_CHECK(memcmp(first, ssl_request, sizeof(first)) == 0,
                 "libpq's first packet is not an SSLRequest: sslmode did not reach it");
        FX_CHECK(send(cfd, "N", 1, MSG_NOSIGNAL) == 1, "cannot answer the SSLRequest");
    }
    /* Retries are refused from now on, rather than waiting in the backlog until stop. */
    close(lfd);
    FX_CHECK(cfd >= 0, "fanout never connected to the stand-in database");

    snprintf(cmd, sizeof(cmd), "cat %s", db_srv.log);
    for (double until = fx_now() + 5.0 * fx_scale(); fx_now() < until; fx_sleep_ms(50)) {
        free(log);
        log = NULL;
        if (sh(cmd, &log) == 0 && strstr(log, "SSL was required"))
            break;
    }
    FX_CHECK(log && strstr(log, "SSL was required"), "the log does not give libpq's reason:\n%s",
             log ? log : "");
    free(log);
    assert_true(fx_http(db_srv.port, "GET", "/readyz", NULL, NULL, 0, &r));
    FX_CHECK(r.status == 503, "/readyz without a database: %d %s", r.status, r.body);
    fx_response_free(&r);
    if (cfd >= 0)
        close(cfd);
    assert_true(fx_stop(&db_srv));
}

static void test_clean_exit(void **state)
{
    (void)state;
    assert_true(fx_stop(&srv));
}

int it_tls(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_https_probes),
        cmocka_unit_test(test_https_batch),
        cmocka_unit_test(test_https_keepalive),
        cmocka_unit_test(test_untrusted_without_cacert),
        cmocka_unit_test(test_protocol_versions),
        cmocka_unit_test(test_plain_http_refused),
        cmocka_unit_test(test_half_configured),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_database_sslmode),
        cmocka_unit_test(test_clean_exit),
    };
    return cmocka_run_group_tests_name("tls", tests, group_setup, group_teardown);
}
