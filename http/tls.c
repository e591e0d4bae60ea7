/*
 * http_tls: the server's SSL_CTX and the bufferevents it makes for evhttp (contract in tls.h).
 *
 * How a TLS connection is made (libevent 2.1, as in its sample/https-server.c): evhttp accepts the
 * socket, then asks the server's bufferevent callback for a bufferevent with no fd;
 * http_tls_new_bev returns an OpenSSL bufferevent in the accepting state around a fresh SSL from
 * the one SSL_CTX, and evhttp sets the fd on it. The handshake runs inside the bufferevent, under
 * evhttp's client timeout; evhttp only ever sees decrypted bytes. A failed handshake is an error
 * event on the bufferevent, on which evhttp frees the connection (closing the socket and the SSL);
 * no request reaches the server's callback.
 *
 * One trap: a connection can end up on a plain socket bufferevent (when the callback returns
 * NULL, evhttp makes one instead of dropping the connection). http_tls_new_bev returns NULL only
 * when OpenSSL or libevent are out of memory, and the server then makes a plain one;
 * http_tls_is_secure lets it refuse whatever such a connection sends.
 *
 * Threads: the SSL_CTX is built on the main thread before the loop runs and is not changed after;
 * http_tls_new_bev runs on the loop thread. OpenSSL's error queue is per thread and is emptied
 * here after each failure, so a later failure does not report an earlier one's reason.
 */
#include "http/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

struct http_tls {
    SSL_CTX *ctx; /* owned; read-only once http_tls_new returns */
};

/* Write "what: reason" to err with OpenSSL's first queued error as the reason (the last field of
 * "error:CODE:LIB::REASON", plus OpenSSL's detail such as "Expecting: TRUSTED CERTIFICATE"), then
 * empty the queue. */
static void set_openssl_err(char *err, size_t errlen, const char *what)
{
    const char *data = NULL;
    int flags = 0;
    unsigned long e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags);
    char text[256] = "";
    const char *reason = "unknown OpenSSL error";

    if (e) {
        ERR_error_string_n(e, text, sizeof(text));
        const char *colon = strrchr(text, ':');
        reason = colon && colon[1] ? colon + 1 : text;
    }
    /* A system error's detail is only "calling fopen(PATH, r)": the path is in what already. */
    if (e && ERR_GET_LIB(e) != ERR_LIB_SYS && (flags & ERR_TXT_STRING) && data && *data)
        snprintf(err, errlen, "%s: %s (%s)", what, reason, data);
    else
        snprintf(err, errlen, "%s: %s", what, reason);
    ERR_clear_error();
}

/* Refuse to prompt for a passphrase (OpenSSL's default would read the terminal); note that the
 * key asked for one, so the error can say why it failed. userdata: a bool. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(bool *)userdata = true;
    return 0;
}

http_tls *http_tls_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    http_tls *t = NULL;
    bool encrypted = false;
    char what[1200];

    ERR_clear_error();
    if (!(t = calloc(1, sizeof(*t))) || !(t->ctx = SSL_CTX_new(TLS_server_method()))) {
        set_openssl_err(err, errlen, "cannot make the TLS context");
        goto fail;
    }
    if (!SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION)) {
        set_openssl_err(err, errlen, "cannot require TLS 1.2");
        goto fail;
    }
    /* OpenSSL 3 has compression off and refuses insecure renegotiation already; say so anyway,
     * and let the server's cipher order win over the client's. */
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_default_passwd_cb(t->ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(t->ctx, &encrypted);
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
        snprintf(what, sizeof(what), "tls_cert_file %s: cannot load the certificate", cert_file);
        set_openssl_err(err, errlen, what);
        goto fail;
    }
    /* The key must be the certificate's own: "key values mismatch", or
     * "different key types" for an EC key beside an RSA certificate (OpenSSL would file it in
     * another slot and only fail later, with a vaguer reason). */
    X509 *leaf = SSL_CTX_get0_certificate(t->ctx);
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key_file, SSL_FILETYPE_PEM) != 1 || !leaf ||
        X509_check_private_key(leaf, SSL_CTX_get0_privatekey(t->ctx)) != 1) {
        snprintf(what, sizeof(what), "tls_key_file %s: cannot use the private key", key_file);
        set_openssl_err(err, errlen, what);
        if (encrypted)
            snprintf(err, errlen, "%s: the key is encrypted; fanout needs it unencrypted "
                     "(openssl pkey -in KEY -out NEWKEY, then keep NEWKEY private)", what);
        goto fail;
    }
    SSL_CTX_set_default_passwd_cb_userdata(t->ctx, NULL); /* encrypted dies with this call */
    return t;
fail:
    http_tls_free(t);
    return NULL;
}

struct bufferevent *http_tls_new_bev(http_tls *t, struct event_base *base)
{
    struct bufferevent *bev = NULL;
    SSL *ssl = SSL_new(t->ctx);

    if (!ssl)
        goto out;
    /* The bufferevent owns ssl from here, even when it fails: with CLOSE_ON_FREE, libevent 2.1.12
     * frees ssl on its error path too (seen under valgrind with a failing allocator), so freeing
     * it here again would be a double free. On success it frees ssl and the socket with itself. */
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
out:
    ERR_clear_error();
    return bev;
}

bool http_tls_is_secure(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    /* NULL for any bufferevent that is not libevent's OpenSSL one. */
    return bev && bufferevent_openssl_get_ssl(bev) != NULL;
}

void http_tls_free(http_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}
