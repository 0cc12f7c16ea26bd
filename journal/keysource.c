/*
 * keysource.c — key sources (keysource.h): a key file, an environment
 * variable, or the dstack guest agent.
 *
 * The dstack agent speaks HTTP/1.1 with JSON bodies over a Unix socket
 * (or, for its simulator, possibly TCP): POST /GetKey with
 * {"path": P, "purpose": "", "algorithm": "secp256k1"} answers 200 with
 * {"key": "<64 hex>", "signature_chain": [...]}, or 400 with
 * {"error": "..."}. libcurl makes the connection (Unix socket, TCP or TLS)
 * with CURLOPT_CONNECT_ONLY and we exchange the bytes with
 * curl_easy_send/recv: a normal transfer would pass the answer, which
 * carries the key, through libcurl's own receive buffer, which it frees
 * without wiping. This way the answer only ever lands in one
 * sodium_malloc'd buffer (wiped on release), and the JSON strings cJSON
 * copies out of it are wiped before they are freed. Over https the TLS
 * library keeps its own record buffers; that form is for a simulator
 * outside a TEE.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <sodium.h>

#include "keysource.h"

/* An answer larger than this is not the agent's: a key and a signature
 * chain of a few signatures fit many times over. */
#define ANSWER_MAX (64u * 1024u)

static void msg(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void msg(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int tally_keysource_is_spec(const char *spec)
{
    return spec && (strncmp(spec, "file:", 5) == 0 ||
                    strncmp(spec, "env:", 4) == 0 ||
                    strncmp(spec, "dstack:", 7) == 0);
}

/* 0 and out filled if s is exactly 64 hex digits; else -1, out wiped. */
static int hex_key(const char *s, size_t len, uint8_t out[TALLY_KEY_BYTES])
{
    size_t got = 0;
    const char *end = NULL;
    if (len != 2 * TALLY_KEY_BYTES ||
        sodium_hex2bin(out, TALLY_KEY_BYTES, s, len, NULL, &got, &end) != 0 ||
        got != TALLY_KEY_BYTES || end != s + len) {
        sodium_memzero(out, TALLY_KEY_BYTES);
        return -1;
    }
    return 0;
}

/* ---- file: ---------------------------------------------------------------- */

static int load_file(const char *path, uint8_t out[TALLY_KEY_BYTES], char *err,
                     size_t errlen)
{
    if (path[0] == '\0') {
        msg(err, errlen, "file: needs a path");
        return -EINVAL;
    }
    int rc = tally_key_load(path, out);
    if (rc < 0)
        msg(err, errlen, "key file %s: %s", path,
            rc == TALLY_EKEY ? "not 32 bytes or 64 hex digits"
                             : tally_strerror(rc));
    return rc;
}

/* ---- env: ----------------------------------------------------------------- */

extern char **environ;

/* Overwrites the value of NAME in the environment block in place (the
 * bytes /proc/PID/environ shows, for the variables the process started
 * with) and removes the variable. */
static void scrub_env(const char *name)
{
    size_t n = strlen(name);
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') {
            char *v = *e + n + 1;
            sodium_memzero(v, strlen(v));
        }
    }
    (void)unsetenv(name);
}

static int load_env(const char *name, unsigned flags,
                    uint8_t out[TALLY_KEY_BYTES], char *err, size_t errlen)
{
    if (name[0] == '\0' || strchr(name, '=')) {
        msg(err, errlen, "env: needs a variable name");
        return -EINVAL;
    }
    const char *v = getenv(name);
    if (!v) {
        msg(err, errlen, "environment variable %s is not set", name);
        sodium_memzero(out, TALLY_KEY_BYTES);
        return TALLY_EKEY;
    }
    int rc = 0;
    if (hex_key(v, strlen(v), out) < 0) {
        msg(err, errlen, "environment variable %s does not hold 64 hex digits",
            name);
        rc = TALLY_EKEY;
    }
    if (flags & TALLY_KEYSOURCE_SCRUB_ENV)
        scrub_env(name);
    return rc;
}

/* ---- dstack: the answer ---------------------------------------------------- */

/* The answer buffer, sodium_malloc'd: it holds the key in hex. */
typedef struct answer {
    uint8_t *p;
    size_t len;
} answer;

static const char *find_crlf2(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i + 3 < len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' &&
            p[i + 3] == '\n')
            return (const char *)p + i;
    return NULL;
}

/* Case-insensitive: does the header block [h, end) have a header NAME, and
 * what is its value (trimmed, up to the line end)? */
static bool header_value(const char *h, const char *end, const char *name,
                         const char **ret_v, size_t *ret_len)
{
    size_t n = strlen(name);
    while (h < end) {
        const char *eol = memchr(h, '\n', (size_t)(end - h));
        if (!eol)
            eol = end;
        if ((size_t)(eol - h) > n && strncasecmp(h, name, n) == 0 &&
            h[n] == ':') {
            const char *v = h + n + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' ||
                              ve[-1] == '\t'))
                ve--;
            *ret_v = v;
            *ret_len = (size_t)(ve - v);
            return true;
        }
        h = eol + 1;
    }
    return false;
}

/* Walks a chunked body at [p, p + len): 1 complete (the decoded body
 * written at out, which may be p: it never overtakes the reading), 0 more
 * bytes needed, -1 malformed. out = NULL only checks. */
static int dechunk(uint8_t *p, size_t len, uint8_t *out, size_t *ret_len)
{
    size_t i = 0, o = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (i < len && isxdigit(p[i])) {
            if (size > ANSWER_MAX)
                return -1;
            size = size * 16 + (size_t)(isdigit(p[i]) ? p[i] - '0'
                                                      : (p[i] | 0x20) - 'a' + 10);
            i++;
            digits++;
        }
        if (i >= len)
            return 0;
        if (digits == 0)
            return -1;
        /* chunk extensions, then CRLF */
        while (i < len && p[i] != '\n')
            i++;
        if (i >= len)
            return 0;
        i++;
        if (size == 0)
            break;
        if (len - i < size + 2)
            return 0;
        if (out)
            memmove(out + o, p + i, size);
        o += size;
        i += size;
        if (p[i] != '\r' || p[i + 1] != '\n')
            return -1;
        i += 2;
    }
    /* trailers, up to an empty line */
    for (;;) {
        const uint8_t *eol = memchr(p + i, '\n', len - i);
        if (!eol)
            return 0;
        size_t l = (size_t)(eol - (p + i));
        i += l + 1;
        if (l == 0 || (l == 1 && p[i - 2] == '\r'))
            break;
    }
    *ret_len = o;
    return 1;
}

/* Is the answer in a[0, len) complete? 1 with status and body set, 0 more
 * needed, -1 malformed. eof: the agent closed the connection. */
static int answer_parse(answer *a, bool eof, int *ret_status,
                        uint8_t **ret_body, size_t *ret_body_len)
{
    const char *hend = find_crlf2(a->p, a->len);
    if (!hend)
        return eof ? -1 : 0;
    const char *s = (const char *)a->p;
    if (a->len < 12 || strncmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ' ||
        !isdigit((unsigned char)s[9]) || !isdigit((unsigned char)s[10]) ||
        !isdigit((unsigned char)s[11]))
        return -1;
    int status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    const char *h = memchr(s, '\n', (size_t)(hend - s));
    if (!h)
        return -1;
    h++;
    uint8_t *body = (uint8_t *)hend + 4;
    size_t have = a->len - (size_t)(body - a->p);
    const char *v;
    size_t vl;
    if (header_value(h, hend + 2, "Transfer-Encoding", &v, &vl)) {
        if (vl != 7 || strncasecmp(v, "chunked", 7) != 0)
            return -1;
        size_t n;
        int rc = dechunk(body, have, NULL, &n);
        if (rc <= 0)
            return rc < 0 || eof ? -1 : 0;
        (void)dechunk(body, have, body, &n);
        *ret_status = status;
        *ret_body = body;
        *ret_body_len = n;
        return 1;
    }
    if (header_value(h, hend + 2, "Content-Length", &v, &vl)) {
        size_t n = 0;
        if (vl == 0 || vl > 6)
            return -1;
        for (size_t i = 0; i < vl; i++) {
            if (!isdigit((unsigned char)v[i]))
                return -1;
            n = n * 10 + (size_t)(v[i] - '0');
        }
        if (have < n)
            return eof ? -1 : 0;
        *ret_status = status;
        *ret_body = body;
        *ret_body_len = n;
        return 1;
    }
    if (!eof)
        return 0; /* the body ends when the agent closes */
    *ret_status = status;
    *ret_body = body;
    *ret_body_len = have;
    return 1;
}

/* Wipes every string of a cJSON tree (the key, or something near it,
 * may be any of them) before it is freed. */
static void json_wipe(cJSON *j)
{
    for (; j; j = j->next) {
        if (j->valuestring)
            sodium_memzero(j->valuestring, strlen(j->valuestring));
        if (j->string)
            sodium_memzero(j->string, strlen(j->string));
        json_wipe(j->child);
    }
}

/* The agent's error message, made printable and short. */
static void agent_text(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    for (; s && *s && o + 1 < outlen && o < 200; s++)
        out[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    out[o] = '\0';
}

static int answer_key(const char *where, int status, const uint8_t *body,
                      size_t body_len, uint8_t out[TALLY_KEY_BYTES], char *err,
                      size_t errlen)
{
    cJSON *j = cJSON_ParseWithLength((const char *)body, body_len);
    int rc = TALLY_EKEY;
    if (status != 200) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (cJSON_IsString(e)) {
            char t[256];
            agent_text(e->valuestring, t, sizeof t);
            msg(err, errlen, "dstack agent at %s refused (HTTP %d): %s", where,
                status, t);
        } else {
            msg(err, errlen, "dstack agent at %s answered HTTP %d", where,
                status);
        }
        goto out;
    }
    if (!j || !cJSON_IsObject(j)) {
        msg(err, errlen, "dstack agent at %s answered with something that is "
            "not a JSON object", where);
        goto out;
    }
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "key");
    if (!cJSON_IsString(k)) {
        msg(err, errlen, "dstack agent at %s answered without a \"key\" string",
            where);
        goto out;
    }
    size_t kl = strlen(k->valuestring);
    if (kl != 2 * TALLY_KEY_BYTES) {
        msg(err, errlen, "dstack agent at %s answered with a key of %zu "
            "characters, not 64 hex digits", where, kl);
        goto out;
    }
    if (hex_key(k->valuestring, kl, out) < 0) {
        msg(err, errlen, "dstack agent at %s answered with a key that is not "
            "hex", where);
        goto out;
    }
    rc = 0;
out:
    if (j) {
        json_wipe(j);
        cJSON_Delete(j);
    }
    if (rc < 0)
        sodium_memzero(out, TALLY_KEY_BYTES);
    return rc;
}

/* ---- dstack: the exchange -------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits until fd is ready for ev or the deadline passes: 1 ready, 0 timed
 * out, -errno. */
static int wait_fd(curl_socket_t fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd p = { .fd = fd, .events = ev };
        int n = poll(&p, 1, (int)(deadline - now));
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

/* The request: headers and the JSON body naming the path. */
static char *make_request(const char *target, const char *host,
                          const char *path)
{
    cJSON *o = cJSON_CreateObject();
    char *body = NULL, *req = NULL;
    if (!o || !cJSON_AddStringToObject(o, "path", path) ||
        !cJSON_AddStringToObject(o, "purpose", "") ||
        !cJSON_AddStringToObject(o, "algorithm", "secp256k1"))
        goto out;
    body = cJSON_PrintUnformatted(o);
    if (!body)
        goto out;
    if (asprintf(&req,
                 "POST %s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "User-Agent: tally/" TALLY_VERSION_STRING "\r\n"
                 "Content-Type: application/json\r\n"
                 "Accept: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n"
                 "\r\n%s",
                 target, host, strlen(body), body) < 0)
        req = NULL;
out:
    cJSON_free(body);
    cJSON_Delete(o);
    return req;
}

/* Fills *ret_target ("/GetKey" under the URL's path) and *ret_host (for the
 * Host header) from url. */
static int url_parts(const char *url, char **ret_target, char **ret_host)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *path = NULL;
    int rc = -EINVAL;
    if (!u)
        return -ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        goto out;
    (void)curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent: default */
    if (asprintf(ret_host, "%s%s%s", host, port ? ":" : "", port ? port : "") <
        0)
        goto out;
    if (asprintf(ret_target, "%s", path) < 0) {
        free(*ret_host);
        goto out;
    }
    rc = 0;
out:
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

static int dstack_exchange(const char *socket_path, const char *url,
                           const char *where, const char *path,
                           unsigned timeout_ms, uint8_t out[TALLY_KEY_BYTES],
                           char *err, size_t errlen)
{
    uint64_t deadline = now_ms() + timeout_ms;
    char *target = NULL, *host = NULL, *req = NULL;
    answer a = { NULL, 0 };
    int rc = url_parts(url, &target, &host);
    if (rc < 0) {
        msg(err, errlen, "dstack agent URL %s is not a valid URL", url);
        return rc;
    }
    CURL *c = curl_easy_init();
    a.p = sodium_malloc(ANSWER_MAX);
    req = make_request(target, host, path);
    if (!c || !a.p || !req) {
        msg(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    if (socket_path)
        (void)curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    (void)curl_easy_setopt(c, CURLOPT_URL, url);
    (void)curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
    (void)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    (void)curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    (void)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    (void)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        msg(err, errlen, "cannot reach the dstack agent at %s: %s", where,
            cc == CURLE_OPERATION_TIMEDOUT ? "timed out"
                                           : curl_easy_strerror(cc));
        rc = TALLY_EKEY;
        goto out;
    }
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK ||
        fd == CURL_SOCKET_BAD) {
        msg(err, errlen, "dstack agent at %s: no connection", where);
        rc = TALLY_EKEY;
        goto out;
    }
    size_t sent = 0, reqlen = strlen(req);
    while (sent < reqlen) {
        size_t n = 0;
        cc = curl_easy_send(c, req + sent, reqlen - sent, &n);
        if (cc == CURLE_AGAIN) {
            int w = wait_fd(fd, POLLOUT, deadline);
            if (w <= 0)
                goto timeout;
            continue;
        }
        if (cc != CURLE_OK) {
            msg(err, errlen, "dstack agent at %s: sending the request: %s",
                where, curl_easy_strerror(cc));
            rc = TALLY_EKEY;
            goto out;
        }
        sent += n;
    }
    int status = 0;
    uint8_t *body = NULL;
    size_t body_len = 0;
    for (;;) {
        bool eof = false;
        if (a.len == ANSWER_MAX) {
            msg(err, errlen, "dstack agent at %s: answer longer than %u bytes",
                where, ANSWER_MAX);
            rc = TALLY_EKEY;
            goto out;
        }
        size_t n = 0;
        cc = curl_easy_recv(c, a.p + a.len, ANSWER_MAX - a.len, &n);
        if (cc == CURLE_AGAIN) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w <= 0)
                goto timeout;
            continue;
        }
        if (cc != CURLE_OK) {
            msg(err, errlen, "dstack agent at %s: reading the answer: %s",
                where, curl_easy_strerror(cc));
            rc = TALLY_EKEY;
            goto out;
        }
        if (n == 0)
            eof = true;
        a.len += n;
        int p = answer_parse(&a, eof, &status, &body, &body_len);
        if (p < 0) {
            msg(err, errlen, "dstack agent at %s: %s", where,
                a.len == 0 ? "closed the connection without an answer"
                           : "the answer is not HTTP");
            rc = TALLY_EKEY;
            goto out;
        }
        if (p == 1)
            break;
        if (now_ms() >= deadline)
            goto timeout;
    }
    rc = answer_key(where, status, body, body_len, out, err, errlen);
    goto out;
timeout:
    msg(err, errlen, "dstack agent at %s did not answer within %u ms", where,
        timeout_ms);
    rc = TALLY_EKEY;
out:
    if (c)
        curl_easy_cleanup(c);
    if (a.p)
        sodium_free(a.p); /* wipes */
    free(req);
    free(target);
    free(host);
    if (rc < 0)
        sodium_memzero(out, TALLY_KEY_BYTES);
    return rc;
}

static unsigned timeout_of(const tally_keysource_opts *opt)
{
    if (opt && opt->timeout_ms)
        return opt->timeout_ms;
    const char *s = getenv("TALLY_KEYSOURCE_TIMEOUT_MS");
    if (s && *s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (*end == '\0' && v > 0 && v <= 600000)
            return (unsigned)v;
    }
    return TALLY_KEYSOURCE_TIMEOUT_MS;
}

static int load_dstack(const char *path, const tally_keysource_opts *opt,
                       uint8_t out[TALLY_KEY_BYTES], char *err, size_t errlen)
{
    if (path[0] == '\0')
        path = TALLY_KEYSOURCE_DSTACK_PATH;
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p < 0x20) {
            msg(err, errlen, "dstack: path has a control character");
            return -EINVAL;
        }
    unsigned timeout_ms = timeout_of(opt);
    const char *ep = opt ? opt->dstack_endpoint : NULL;
    if (!ep || !*ep)
        ep = getenv("DSTACK_SIMULATOR_ENDPOINT");
    if (ep && *ep) {
        if (strncmp(ep, "http://", 7) == 0 || strncmp(ep, "https://", 8) == 0) {
            char *url = NULL;
            size_t n = strlen(ep);
            while (n > 0 && ep[n - 1] == '/')
                n--;
            if (asprintf(&url, "%.*s/GetKey", (int)n, ep) < 0)
                return -ENOMEM;
            int rc = dstack_exchange(NULL, url, ep, path, timeout_ms, out, err,
                                     errlen);
            free(url);
            return rc;
        }
        return dstack_exchange(ep, "http://localhost/GetKey", ep, path,
                               timeout_ms, out, err, errlen);
    }
    static const char *const sockets[] = TALLY_KEYSOURCE_DSTACK_SOCKETS;
    for (size_t i = 0; i < sizeof sockets / sizeof sockets[0]; i++) {
        struct stat st;
        if (stat(sockets[i], &st) == 0)
            return dstack_exchange(sockets[i], "http://localhost/GetKey",
                                   sockets[i], path, timeout_ms, out, err,
                                   errlen);
    }
    msg(err, errlen, "no dstack agent: none of %s, %s, %s, %s exists (outside "
        "a dstack TEE set DSTACK_SIMULATOR_ENDPOINT)", sockets[0], sockets[1],
        sockets[2], sockets[3]);
    sodium_memzero(out, TALLY_KEY_BYTES);
    return TALLY_EKEY;
}

/* ---- the interface ---------------------------------------------------------- */

int tally_keysource_load(const char *spec, const tally_keysource_opts *opt,
                         uint8_t out[static TALLY_KEY_BYTES], char *err,
                         size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!spec || !out) {
        msg(err, errlen, "no key source given");
        return -EINVAL;
    }
    if (sodium_init() < 0) {
        msg(err, errlen, "cannot initialise libsodium");
        return -EIO;
    }
    if (strncmp(spec, "file:", 5) == 0)
        return load_file(spec + 5, out, err, errlen);
    if (strncmp(spec, "env:", 4) == 0)
        return load_env(spec + 4, opt ? opt->flags : 0, out, err, errlen);
    if (strncmp(spec, "dstack:", 7) == 0)
        return load_dstack(spec + 7, opt, out, err, errlen);
    /* The spec is not repeated: it might be a key pasted by mistake. */
    msg(err, errlen, "unknown key source (expected file:PATH, env:NAME or "
        "dstack:PATH)");
    return -EINVAL;
}
