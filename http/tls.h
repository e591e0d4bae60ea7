/*
 * http_tls: HTTPS for the HTTP server, through libevent's OpenSSL bufferevents.
 *
 * With tls_cert_file and tls_key_file set, the server makes one http_tls at start-up (one SSL_CTX:
 * TLS 1.2 and newer, OpenSSL 3's default ciphers, the server's cipher preference, no compression,
 * no renegotiation), and its bufferevent callback takes each accepted connection's bufferevent
 * from http_tls_new_bev: every connection gets its own SSL, and a client that does not complete a
 * TLS handshake (plain HTTP, TLS 1.1 or older, garbage) is closed by libevent without a reply. The certificate and key are
 * read once, at start-up; changing them needs a restart.
 *
 * Ownership and threads: the server owns its http_tls and frees it after its evhttp (the SSL of
 * each open connection holds its own reference to the SSL_CTX, so the order is only tidiness).
 * http_tls_new runs on the main thread before the loop starts; the bufferevent callback and
 * http_tls_is_secure run on the loop thread.
 */
#ifndef FANOUT_HTTP_TLS_H
#define FANOUT_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;
struct evhttp_connection;
typedef struct http_tls http_tls;

/*
 * Load the PEM certificate (chain: the server's certificate first, then intermediates) and the
 * unencrypted PEM private key, check that they belong together, and make the SSL_CTX. Returns a
 * new http_tls (free with http_tls_free) or NULL with one line in err naming the setting, the file
 * and OpenSSL's reason, e.g. "tls_key_file /etc/fanout/key.pem: cannot use the private key: key
 * values mismatch". An encrypted key is refused (fanout never prompts for a passphrase).
 */
http_tls *http_tls_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* A bufferevent that speaks TLS with t, for evhttp's bufferevent callback (evhttp_set_bevcb; its
 * fd is set by evhttp), or NULL when out of memory. t must outlive the evhttp's connections: free
 * the evhttp first. Loop thread. */
struct bufferevent *http_tls_new_bev(http_tls *t, struct event_base *base);

/* Whether evcon runs over TLS. False only when the bufferevent callback could not make an SSL
 * (out of memory) and the connection went on a plain bufferevent, which must not be served. */
bool http_tls_is_secure(struct evhttp_connection *evcon);

/* Free the SSL_CTX (NULL is fine). */
void http_tls_free(http_tls *t);

#endif
