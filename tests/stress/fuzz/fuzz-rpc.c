/*
 * fuzz-rpc.c — the JSON-RPC responses: the checkpoint module's Ethereum
 * backend (checkpoint/rpc.c, eth.c, anchor.c) fed fuzzed node answers.
 *
 * libcurl's easy interface is replaced here (curl_easy_init, _setopt,
 * _perform, _getinfo, _cleanup: definitions in the executable take the
 * place of libcurl's), so no socket is used: each curl_easy_perform hands
 * the next answer of the input to the write callback. One scenario runs per
 * input: chain id, block number, deploy, code check, latest, two anchors
 * (the second one refused by the contract), latest again, events — every
 * step consuming answers, a failed step going on with the next.
 *
 * Input: one mode byte (bit 0: two endpoints that must agree; bit 1: the
 * chain id 1337 is expected; bit 2: two confirmations), then the answers
 * separated by NUL bytes. An answer may start with "!T" (the call times
 * out), "!R" (connection refused) or "!Hnnn" (HTTP status nnn); "@ID@" in
 * it is replaced by the id of the request it answers. When the answers run
 * out, every call is refused. The raw input also goes through the revert
 * data decoder and the CHECKPOINT payload decoder.
 *
 * Built with -DRPC_RECORD it is instead a program that runs the same
 * scenario against real endpoints (a node behind rpc-record.py, which
 * writes the seeds in this format).
 */
#ifndef RPC_RECORD
#define CURL_DISABLE_TYPECHECK 1 /* the functions are defined here */
#endif
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint-internal.h"
#include "fuzz.h"

/* ganache's first deterministic account: a well-known test key */
static const uint8_t signer[32] = {
    0x4f, 0x3e, 0xdf, 0x98, 0x3a, 0xc6, 0x36, 0xa6, 0x5a, 0x84, 0x2c, 0xe7,
    0xc7, 0x8d, 0x9a, 0xa7, 0x06, 0xd3, 0xb1, 0x13, 0xbc, 0xe9, 0xc4, 0x6f,
    0x30, 0xd7, 0xd2, 0x17, 0x15, 0xb2, 0x3b, 0x1d,
};

static void scenario(const char *const *urls, size_t n, uint8_t mode,
                     uint32_t receipt_timeout_ms)
{
    tally_eth_options o;
    memset(&o, 0, sizeof o);
    o.rpc_urls = urls;
    o.rpc_count = n;
    o.chain_id = (mode & 2) ? 1337 : 0;
    o.signer_key = signer;
    o.confirmations = (mode & 4) ? 2 : 1;
    o.timeout_ms = 5000;
    o.connect_timeout_ms = 1000;
    o.poll_ms = 1;
    o.receipt_timeout_ms = receipt_timeout_ms;
    tally_eth *e;
    if (tally_eth_open(&e, &o) < 0)
        return;
    /* FUZZ_RPC_VERBOSE=1: each step's result on stderr (to see how far a
     * seed gets) */
    int verbose = getenv("FUZZ_RPC_VERBOSE") != NULL;
#define STEP(name, call)                                                      \
    do {                                                                      \
        int step_rc = (call);                                                 \
        if (verbose)                                                          \
            fprintf(stderr, "fuzz-rpc: %-14s %d %s\n", name, step_rc,         \
                    step_rc < 0 ? tally_eth_errmsg(e) : "");                  \
    } while (0)
    uint64_t v;
    STEP("chain_id", tally_eth_chain_id(e, &v));
    STEP("block_number", tally_eth_block_number(e, &v));
    tally_eth_receipt r;
    uint8_t contract[20] = { 0 };
    int rc = tally_anchor_deploy(e, &r);
    STEP("deploy", rc);
    if (rc == 0)
        memcpy(contract, r.contract, 20);
    STEP("check_code", tally_anchor_check_code(e, contract));
    uint8_t jid[32], head[32], writer[20] = { 0 };
    memset(jid, 0xab, sizeof jid);
    memset(head, 0xcd, sizeof head);
    (void)tally_eth_sender(e, writer);
    tally_anchor a;
    STEP("latest", tally_anchor_latest(e, contract, jid, writer, &a));
    STEP("submit 5", tally_anchor_submit(e, contract, jid, 5, head, &r));
    STEP("submit 3", tally_anchor_submit(e, contract, jid, 3, head, &r));
    STEP("latest", tally_anchor_latest(e, contract, jid, writer, &a));
    tally_anchor_event *ev = NULL;
    int k = tally_anchor_events(e, contract, jid, writer, 0, &ev);
    STEP("events", k);
    if (k > 0)
        free(ev);
#undef STEP
    (void)strlen(tally_eth_errmsg(e));
    const char *dis = tally_eth_disagreement(e);
    if (dis)
        (void)strlen(dis);
    tally_eth_close(e);
}

#ifdef RPC_RECORD

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: stress-rpc-scenario MODE URL [URL2]\n");
        return 2;
    }
    const char *urls[2] = { argv[2], argc > 3 ? argv[3] : NULL };
    scenario(urls, argc > 3 ? 2 : 1, (uint8_t)strtoul(argv[1], NULL, 0), 20000);
    return 0;
}

#else /* the fuzz harness */

/* ---- the fake transport ---------------------------------------------------- */

struct fake_handle {
    curl_write_callback wf;
    void *wd;
    const char *post;
    long status;
    long oserr;
};

static const uint8_t *in_p, *in_end;

CURL *curl_easy_init(void)
{
    return calloc(1, sizeof(struct fake_handle));
}

void curl_easy_cleanup(CURL *curl)
{
    free(curl);
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    struct fake_handle *h = curl;
    va_list ap;
    va_start(ap, option);
    switch (option) {
    case CURLOPT_WRITEFUNCTION:
        h->wf = va_arg(ap, curl_write_callback);
        break;
    case CURLOPT_WRITEDATA:
        h->wd = va_arg(ap, void *);
        break;
    case CURLOPT_POSTFIELDS:
        h->post = va_arg(ap, const char *);
        break;
    default:
        break; /* URL, timeouts, headers: nothing to do without a socket */
    }
    va_end(ap);
    return CURLE_OK;
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    struct fake_handle *h = curl;
    va_list ap;
    va_start(ap, info);
    CURLcode rc = CURLE_OK;
    if (info == CURLINFO_RESPONSE_CODE)
        *va_arg(ap, long *) = h->status;
    else if (info == CURLINFO_OS_ERRNO)
        *va_arg(ap, long *) = h->oserr;
    else
        rc = CURLE_UNKNOWN_OPTION;
    va_end(ap);
    return rc;
}

CURLcode curl_easy_perform(CURL *curl)
{
    struct fake_handle *h = curl;
    h->status = 0;
    h->oserr = 0;
    if (in_p >= in_end) {
        h->oserr = ECONNREFUSED;
        return CURLE_COULDNT_CONNECT;
    }
    const uint8_t *nul = memchr(in_p, 0, (size_t)(in_end - in_p));
    const uint8_t *a = in_p, *a_end = nul ? nul : in_end;
    in_p = nul ? nul + 1 : in_end;
    size_t alen = (size_t)(a_end - a);
    if (alen >= 2 && a[0] == '!' && a[1] == 'T')
        return CURLE_OPERATION_TIMEDOUT;
    if (alen >= 2 && a[0] == '!' && a[1] == 'R') {
        h->oserr = ECONNREFUSED;
        return CURLE_COULDNT_CONNECT;
    }
    h->status = 200;
    if (alen >= 5 && a[0] == '!' && a[1] == 'H') {
        h->status = (a[2] - '0') * 100 + (a[3] - '0') * 10 + (a[4] - '0');
        a += 5;
        alen -= 5;
    }
    /* the request's id in place of @ID@ */
    char id[24] = "0";
    const char *ip = h->post ? strstr(h->post, "\"id\":") : NULL;
    if (ip) {
        size_t k = 0;
        ip += 5;
        while (k + 1 < sizeof id && ip[k] >= '0' && ip[k] <= '9') {
            id[k] = ip[k];
            k++;
        }
        id[k] = '\0';
    }
    size_t idl = strlen(id);
    char *body = malloc(alen * (idl > 4 ? idl : 4) / 4 + 32);
    if (!body)
        return CURLE_OUT_OF_MEMORY;
    size_t blen = 0;
    for (size_t i = 0; i < alen;) {
        if (alen - i >= 4 && memcmp(a + i, "@ID@", 4) == 0) {
            memcpy(body + blen, id, idl);
            blen += idl;
            i += 4;
        } else {
            body[blen++] = (char)a[i++];
        }
    }
    /* delivered in two pieces, as a network would */
    CURLcode rc = CURLE_OK;
    size_t half = blen / 2;
    if (h->wf && half && h->wf(body, 1, half, h->wd) != half)
        rc = CURLE_WRITE_ERROR;
    if (rc == CURLE_OK && h->wf && blen - half &&
        h->wf(body + half, 1, blen - half, h->wd) != blen - half)
        rc = CURLE_WRITE_ERROR;
    free(body);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        /* once: tally_eth_open's init/cleanup pairs then stay cheap */
        curl_global_init(CURL_GLOBAL_DEFAULT);
        inited = 1;
    }
    if (size < 1 || size > (1u << 20))
        return 0;
    char text[512];
    (void)cp_anchor_decode_revert(data, size, text, sizeof text);
    tally_checkpoint_info ci;
    (void)tally_checkpoint_decode(data, size, &ci);

    static const char *urls[2] = { "http://fuzz-node-a:8545",
                                   "http://fuzz-node-b:8545" };
    in_p = data + 1;
    in_end = data + size;
    scenario(urls, (data[0] & 1) ? 2 : 1, data[0], 3);
    return 0;
}

#endif
