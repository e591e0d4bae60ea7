/* svc_healthcheck: GET /readyz on the listen address; see healthcheck.h. */
#include "service/healthcheck.h"

#include <netdb.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define PROBE_TIMEOUT_S 3

int svc_healthcheck(const cfg_settings *s)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    struct timeval tv = {.tv_sec = PROBE_TIMEOUT_S};
    const char *host = s->listen_host;
    char port[8], reply[64] = "";
    int fd = -1, rc = 1, status = 0;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    size_t got = 0;

    /* A wildcard listen address is reached through loopback. */
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    snprintf(port, sizeof(port), "%d", s->listen_port);
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
        fprintf(stderr, "healthcheck: cannot resolve %s\n", host);
        goto out;
    }
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0)
        goto out;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "healthcheck: cannot connect to %s:%s\n", host, port);
        goto out;
    }
    static const char request[] = "GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (s->tls_cert_file) {
        /* Our own server on this machine: encrypt, but there is nothing to verify it against. */
        ctx = SSL_CTX_new(TLS_client_method());
        ssl = ctx ? SSL_new(ctx) : NULL;
        if (!ssl || !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1) {
            fprintf(stderr, "healthcheck: TLS handshake with %s:%s failed\n", host, port);
            goto out;
        }
        if (SSL_write(ssl, request, sizeof(request) - 1) != (int)(sizeof(request) - 1))
            goto out;
    } else if (write(fd, request, sizeof(request) - 1) != (ssize_t)(sizeof(request) - 1)) {
        goto out;
    }
    while (got < sizeof(reply) - 1) {
        ssize_t n = ssl ? SSL_read(ssl, reply + got, (int)(sizeof(reply) - 1 - got))
                        : read(fd, reply + got, sizeof(reply) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    reply[got] = '\0';
    if (sscanf(reply, "HTTP/%*d.%*d %d", &status) == 1 && status == 200)
        rc = 0;
    else
        fprintf(stderr, "healthcheck: /readyz answered %d\n", status);
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    if (ai)
        freeaddrinfo(ai);
    return rc;
}
