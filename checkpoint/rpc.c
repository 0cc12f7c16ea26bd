/*
 * rpc.c — one JSON-RPC 2.0 endpoint over HTTP(S): libcurl for transport,
 * cJSON for the messages, plus the hex encodings Ethereum uses
 * ("quantities" are minimal hex numbers, "data" are full hex byte strings).
 *
 * Every request has a total and a connect timeout: a node can hang a call
 * forever (ganache does for a raw transaction with a future nonce), and the
 * checkpointer must never block on one. Transport failures map to -errno
 * (-ECONNREFUSED, -ETIMEDOUT, ...); a JSON-RPC error object is returned as
 * CP_RPC_EREMOTE with its code, message and revert data, which nodes put in
 * different places: error.data as a hex string (ganache eth_call),
 * error.data.data (hardhat), error.data.result (ganache eth_estimateGas).
 */
#include "checkpoint-internal.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An answer larger than this is refused: eth_getLogs over a long history is
 * the biggest thing tally asks for, and a hostile endpoint must not make us
 * allocate without bound. */
#define MAX_RESPONSE (32u * 1024 * 1024)

struct cp_rpc {
    CURL *curl;
    struct curl_slist *headers;
    char *url;
    char name[160];
    uint64_t next_id;
    char curl_err[CURL_ERROR_SIZE];
};

typedef struct buf {
    char *p;
    size_t len, cap;
    int overflow;
} buf;

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf *b = ud;
    size_t n = size * nmemb;
    if (n > MAX_RESPONSE - b->len) {
        b->overflow = 1;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, ptr, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

static void set_msg(char *msg, size_t msgsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(char *msg, size_t msgsz, const char *fmt, ...)
{
    if (!msg || msgsz == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msgsz, fmt, ap);
    va_end(ap);
}

/* scheme://host[:port], from curl's own URL parser so that what we show is
 * what curl connects to. Also refuses anything but http and https. */
static int url_name(const char *url, char *out, size_t outsz)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = -EINVAL;
    if (!u)
        return -ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
        goto out;
    (void)curl_url_get(u, CURLUPART_PORT, &port, 0);
    snprintf(out, outsz, "%s://%s%s%s", scheme, host, port ? ":" : "",
             port ? port : "");
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

int cp_rpc_new(cp_rpc **ret, const char *url, uint32_t timeout_ms,
               uint32_t connect_timeout_ms)
{
    cp_rpc *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    int rc = url_name(url, r->name, sizeof r->name);
    if (rc < 0)
        goto fail;
    rc = -ENOMEM;
    r->url = strdup(url);
    r->curl = curl_easy_init();
    if (!r->url || !r->curl)
        goto fail;
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!r->headers)
        goto fail;
    r->next_id = 1;

    CURL *c = r->curl;
    if (curl_easy_setopt(c, CURLOPT_URL, r->url) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") !=
            CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms) !=
            CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)connect_timeout_ms) != CURLE_OK ||
        /* no SIGALRM-based DNS timeouts: we may run in any thread */
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->curl_err) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK) {
        rc = -EINVAL;
        goto fail;
    }
    *ret = r;
    return 0;
fail:
    cp_rpc_free(r);
    return rc;
}

void cp_rpc_free(cp_rpc *r)
{
    if (!r)
        return;
    if (r->curl)
        curl_easy_cleanup(r->curl);
    curl_slist_free_all(r->headers);
    free(r->url);
    free(r);
}

const char *cp_rpc_name(const cp_rpc *r)
{
    return r->name;
}

void cp_rpc_error_clear(cp_rpc_error *err)
{
    if (!err)
        return;
    free(err->data);
    memset(err, 0, sizeof *err);
}

static int map_curl(cp_rpc *r, CURLcode cc, const buf *b)
{
    long oserr = 0;
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        (void)curl_easy_getinfo(r->curl, CURLINFO_OS_ERRNO, &oserr);
        if (oserr == ECONNREFUSED || oserr == EHOSTUNREACH ||
            oserr == ENETUNREACH || oserr == ETIMEDOUT)
            return -(int)oserr;
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_WRITE_ERROR:
        return b->overflow ? -EMSGSIZE : -ENOMEM;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return -EPROTO;
    default:
        return -EIO;
    }
}

/* Revert data, wherever this node put it. */
static void find_revert_data(const cJSON *data, cp_rpc_error *err)
{
    const cJSON *s = NULL;
    if (cJSON_IsString(data)) {
        s = data;
    } else if (cJSON_IsObject(data)) {
        s = cJSON_GetObjectItemCaseSensitive(data, "data");
        if (!cJSON_IsString(s))
            s = cJSON_GetObjectItemCaseSensitive(data, "result");
    }
    if (!cJSON_IsString(s))
        return;
    uint8_t *d = NULL;
    size_t n = 0;
    if (cp_hex_data_alloc(s->valuestring, &d, &n) == 0) {
        err->has_data = 1;
        err->data = d;
        err->data_len = n;
    }
}

int cp_rpc_call(cp_rpc *r, const char *method, const char *params,
                cJSON **ret_result, cp_rpc_error *err, char *msg, size_t msgsz)
{
    buf b = {0};
    char *req = NULL;
    cJSON *root = NULL;
    int rc;
    uint64_t id = r->next_id++;

    if (err)
        memset(err, 0, sizeof *err);
    if (asprintf(&req,
                 "{\"jsonrpc\":\"2.0\",\"id\":%" PRIu64
                 ",\"method\":\"%s\",\"params\":%s}",
                 id, method, params ? params : "[]") < 0) {
        req = NULL;
        rc = -ENOMEM;
        set_msg(msg, msgsz, "%s: %s: out of memory", r->name, method);
        goto out;
    }

    r->curl_err[0] = '\0';
    if (curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, req) != CURLE_OK ||
        curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, &b) != CURLE_OK) {
        rc = -EINVAL;
        set_msg(msg, msgsz, "%s: %s: curl setup failed", r->name, method);
        goto out;
    }
    CURLcode cc = curl_easy_perform(r->curl);
    if (cc != CURLE_OK) {
        rc = map_curl(r, cc, &b);
        if (rc == -ECONNREFUSED)
            set_msg(msg, msgsz, "%s: %s: connection refused", r->name, method);
        else if (rc == -ETIMEDOUT)
            set_msg(msg, msgsz, "%s: %s: timed out (%s)", r->name, method,
                    r->curl_err[0] ? r->curl_err : curl_easy_strerror(cc));
        else
            set_msg(msg, msgsz, "%s: %s: %s", r->name, method,
                    r->curl_err[0] ? r->curl_err : curl_easy_strerror(cc));
        goto out;
    }

    long status = 0;
    (void)curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
    root = b.p ? cJSON_ParseWithLength(b.p, b.len) : NULL;
    if (!cJSON_IsObject(root)) {
        rc = -EPROTO;
        set_msg(msg, msgsz, "%s: %s: HTTP %ld, answer is not a JSON object",
                r->name, method, status);
        goto out;
    }
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (!cJSON_IsNumber(jid) || jid->valuedouble != (double)id) {
        rc = -EPROTO;
        set_msg(msg, msgsz, "%s: %s: answer carries the wrong id", r->name,
                method);
        goto out;
    }
    const cJSON *jerr = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (jerr && !cJSON_IsNull(jerr)) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(jerr, "code");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(jerr, "message");
        cp_rpc_error tmp = {0};
        /* A node may send any number here: convert only what fits
         * (a cast of 1e300 to long is undefined behaviour). */
        tmp.code = 0;
        if (cJSON_IsNumber(code) && code->valuedouble >= -2147483648.0 &&
            code->valuedouble <= 2147483647.0)
            tmp.code = (long)code->valuedouble;
        snprintf(tmp.message, sizeof tmp.message, "%s",
                 cJSON_IsString(m) ? m->valuestring : "(no message)");
        find_revert_data(cJSON_GetObjectItemCaseSensitive(jerr, "data"), &tmp);
        set_msg(msg, msgsz, "%s: %s: node error %ld: %s", r->name, method,
                tmp.code, tmp.message);
        if (err)
            *err = tmp;
        else
            cp_rpc_error_clear(&tmp);
        rc = CP_RPC_EREMOTE;
        goto out;
    }
    if (status != 200) {
        rc = -EPROTO;
        set_msg(msg, msgsz, "%s: %s: HTTP %ld", r->name, method, status);
        goto out;
    }
    cJSON *res = cJSON_DetachItemFromObjectCaseSensitive(root, "result");
    if (!res) {
        rc = -EPROTO;
        set_msg(msg, msgsz, "%s: %s: answer has neither result nor error",
                r->name, method);
        goto out;
    }
    *ret_result = res;
    rc = 0;
out:
    cJSON_Delete(root);
    free(b.p);
    free(req);
    return rc;
}

/* ---- hex ----------------------------------------------------------------- */

static int nibble(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cp_hex_quantity(const char *s, uint64_t *ret)
{
    if (!s || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') || s[2] == '\0')
        return -EPROTO;
    s += 2;
    while (s[0] == '0' && s[1] != '\0') /* lenient about leading zeros */
        s++;
    if (strlen(s) > 16)
        return -ERANGE;
    uint64_t v = 0;
    for (; *s; s++) {
        int n = nibble((unsigned char)*s);
        if (n < 0)
            return -EPROTO;
        v = (v << 4) | (uint64_t)n;
    }
    *ret = v;
    return 0;
}

static int decode(const char *s, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int hi = nibble((unsigned char)s[2 * i]);
        int lo = nibble((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EPROTO;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int cp_hex_data(const char *s, uint8_t *out, size_t len)
{
    if (!s || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return -EPROTO;
    s += 2;
    if (strlen(s) != 2 * len)
        return -EPROTO;
    uint8_t tmp[256];
    if (len > sizeof tmp)
        return -EINVAL;
    if (decode(s, tmp, len) < 0)
        return -EPROTO;
    memcpy(out, tmp, len);
    return 0;
}

int cp_hex_data_alloc(const char *s, uint8_t **ret, size_t *ret_len)
{
    if (!s || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return -EPROTO;
    s += 2;
    size_t n = strlen(s);
    if (n % 2 != 0)
        return -EPROTO;
    uint8_t *d = NULL;
    if (n > 0) {
        d = malloc(n / 2);
        if (!d)
            return -ENOMEM;
        if (decode(s, d, n / 2) < 0) {
            free(d);
            return -EPROTO;
        }
    }
    *ret = d;
    *ret_len = n / 2;
    return 0;
}

void cp_hex_encode(const uint8_t *data, size_t len, char *out)
{
    static const char dig[] = "0123456789abcdef";
    out[0] = '0';
    out[1] = 'x';
    for (size_t i = 0; i < len; i++) {
        out[2 + 2 * i] = dig[data[i] >> 4];
        out[3 + 2 * i] = dig[data[i] & 15];
    }
    out[2 + 2 * len] = '\0';
}
