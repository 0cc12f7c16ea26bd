/*
 * client.c — the tallyd client library (tally-client.h): requests over a
 * REQ socket, batches to the PULL socket, and the follower that joins a
 * catch-up (range requests or the files) with the live subscription on seq
 * and checks the chain as a witness. Wire format: docs/FORMAT.md §10.
 */
#include "tally-client.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <sodium.h>
#include <zlib.h>

#include "tally-internal.h"
#include "wire.h"

#define DEFAULT_TIMEOUT_MS 30000
#define MAX_EPOCHS 64

typedef struct epoch_key {
    uint32_t epoch;
    uint8_t *dk; /* sodium_malloc'd */
} epoch_key;

struct tally_client {
    char url[TALLY_CLIENT_MAX_URL + 1];
    char publish_url[TALLY_CLIENT_MAX_URL + 1];
    char pull_url[TALLY_CLIENT_MAX_URL + 1];
    int timeout_ms;
    int req;  /* REQ */
    int push; /* PUSH, opened on first use */
    int sub;  /* SUB, opened by follow */
    char err[512];

    /* daemon facts from its status */
    bool have_status;
    uint8_t jid[TALLY_ID_BYTES];
    int cipher;

    /* decryption of stored publications */
    uint8_t *mk; /* sodium_malloc'd copy, or NULL */
    epoch_key epochs[MAX_EPOCHS];
    size_t n_epochs;
    ti_aead aead;
    bool aead_ok;
    uint32_t aead_epoch;
    uint64_t aead_segment;
    uint8_t aead_salt[16];
    uint8_t *work;
    size_t work_cap;
    uint8_t *plain;
    size_t plain_cap;

    /* witness: the last (seq, link) seen in order */
    uint64_t w_seq;
    uint8_t w_link[TALLY_HASH_BYTES];
    uint64_t w_max_live; /* highest seq the daemon has published to us */

    wire_buf out;
};

static int fail(tally_client *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(tally_client *c, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return rc;
}

/* nanomsg's errors are errno values (ETIMEDOUT, EAGAIN, ...). */
static int nn_err(void)
{
    int e = nn_errno();

    return e > 0 ? -e : -EIO;
}

/* ---- default URLs --------------------------------------------------------- */

int tally_client_default_urls(const char *dir, tally_client_urls *ret)
{
    char abs[PATH_MAX], base[128];
    size_t n;
    tally_client_urls u;

    if (!dir || !*dir)
        return -EINVAL;
    if (!realpath(dir, abs)) {
        /* not created yet: make it absolute by hand */
        if (dir[0] == '/') {
            if (strlen(dir) >= sizeof abs)
                return -ENAMETOOLONG;
            strcpy(abs, dir);
        } else {
            char cwd[PATH_MAX];

            if (!getcwd(cwd, sizeof cwd))
                return -errno;
            if ((size_t)snprintf(abs, sizeof abs, "%s/%s", cwd, dir) >=
                sizeof abs)
                return -ENAMETOOLONG;
        }
    }
    n = strlen(abs);
    while (n > 1 && abs[n - 1] == '/')
        abs[--n] = '\0';
    /* sun_path holds 107 bytes; the longest suffix is ".publish" */
    if (n + 8 < 100) {
        memcpy(base, abs, n + 1);
    } else {
        const char *rt = getenv("XDG_RUNTIME_DIR");
        uint8_t h[16];
        char hex[33];

        if (!rt || !*rt || strlen(rt) > 60)
            rt = "/tmp";
        crypto_generichash(h, sizeof h, (const uint8_t *)abs, n, NULL, 0);
        sodium_bin2hex(hex, sizeof hex, h, sizeof h);
        snprintf(base, sizeof base, "%.60s/tallyd-%s", rt, hex);
    }
    snprintf(u.append_url, sizeof u.append_url, "ipc://%.110s.append", base);
    snprintf(u.pull_url, sizeof u.pull_url, "ipc://%.110s.pull", base);
    snprintf(u.publish_url, sizeof u.publish_url, "ipc://%.110s.publish", base);
    *ret = u;
    return 0;
}

/* ---- handle --------------------------------------------------------------- */

static int set_maxsize(int s)
{
    int max = (int)WIRE_MAX_MESSAGE;

    return nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &max, sizeof max);
}

int tally_client_connect(tally_client **ret, const char *url,
                         const tally_client_options *opt)
{
    tally_client *c;
    int rc;

    if (!url || strlen(url) > TALLY_CLIENT_MAX_URL)
        return -EINVAL;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->req = c->push = c->sub = -1;
    snprintf(c->url, sizeof c->url, "%s", url);
    c->timeout_ms = opt && opt->timeout_ms > 0 ? opt->timeout_ms
                                               : DEFAULT_TIMEOUT_MS;
    if (opt && opt->publish_url)
        snprintf(c->publish_url, sizeof c->publish_url, "%s",
                 opt->publish_url);
    if (opt && opt->pull_url)
        snprintf(c->pull_url, sizeof c->pull_url, "%s", opt->pull_url);
    if (opt && opt->master_key) {
        c->mk = sodium_malloc(TALLY_KEY_BYTES);
        if (!c->mk) {
            free(c);
            return -ENOMEM;
        }
        memcpy(c->mk, opt->master_key, TALLY_KEY_BYTES);
    }
    c->req = nn_socket(AF_SP, NN_REQ);
    if (c->req < 0) {
        rc = nn_err();
        tally_client_close(c);
        return rc;
    }
    if (set_maxsize(c->req) < 0 ||
        nn_setsockopt(c->req, NN_SOL_SOCKET, NN_RCVTIMEO, &c->timeout_ms,
                      sizeof c->timeout_ms) < 0 ||
        nn_setsockopt(c->req, NN_SOL_SOCKET, NN_SNDTIMEO, &c->timeout_ms,
                      sizeof c->timeout_ms) < 0 ||
        nn_connect(c->req, url) < 0) {
        rc = nn_err();
        tally_client_close(c);
        return rc;
    }
    *ret = c;
    return 0;
}

void tally_client_close(tally_client *c)
{
    size_t i;

    if (!c)
        return;
    if (c->req >= 0)
        nn_close(c->req);
    if (c->push >= 0)
        nn_close(c->push);
    if (c->sub >= 0)
        nn_close(c->sub);
    if (c->mk)
        sodium_free(c->mk);
    for (i = 0; i < c->n_epochs; i++)
        sodium_free(c->epochs[i].dk);
    if (c->aead_ok)
        ti_aead_free(&c->aead);
    if (c->plain) {
        sodium_memzero(c->plain, c->plain_cap);
        free(c->plain);
    }
    if (c->work) {
        sodium_memzero(c->work, c->work_cap);
        free(c->work);
    }
    wire_buf_free(&c->out);
    free(c);
}

const char *tally_client_errmsg(const tally_client *c)
{
    return c->err;
}

uint64_t tally_client_witness(const tally_client *c,
                              uint8_t ret_link[TALLY_HASH_BYTES])
{
    if (c->w_seq && ret_link)
        memcpy(ret_link, c->w_link, TALLY_HASH_BYTES);
    return c->w_seq;
}

/* ---- requests ------------------------------------------------------------- */

/* Sends c->out on the REQ socket and waits for the reply (*ret_msg, freed
 * by the caller with nn_freemsg), parsed into *ret. A daemon's error reply
 * is returned as its status with the message in c->err. */
static int request(tally_client *c, uint8_t op, void **ret_msg,
                   wire_reply *ret)
{
    void *msg = NULL;
    const char *why = NULL;
    wire_reply r;
    int n, rc;

    if (c->out.err)
        return fail(c, c->out.err, "out of memory");
    if (nn_send(c->req, c->out.p, c->out.len, 0) < 0) {
        rc = nn_err();
        return fail(c, rc, "sending to %s: %s", c->url, nn_strerror(-rc));
    }
    n = nn_recv(c->req, &msg, NN_MSG, 0);
    if (n < 0) {
        rc = nn_err();
        return fail(c, rc, "waiting for %s: %s", c->url, nn_strerror(-rc));
    }
    rc = wire_parse_reply(msg, (size_t)n, &r, &why);
    if (rc == 0 && r.op != op) {
        rc = -EPROTO;
        why = "reply to another op";
    }
    if (rc < 0) {
        nn_freemsg(msg);
        return fail(c, rc, "malformed reply from %s: %s", c->url, why);
    }
    if (r.status < 0) {
        rc = r.status;
        fail(c, rc, "tallyd: %.*s", (int)r.errmsg_len, r.errmsg);
        nn_freemsg(msg);
        return rc;
    }
    *ret_msg = msg;
    *ret = r;
    return 0;
}

int tally_client_append(tally_client *c, const tally_record_in *recs,
                        size_t n, tally_client_ack *ret_ack)
{
    uint8_t id[TALLY_CLIENT_ID_BYTES];

    randombytes_buf(id, sizeof id);
    return tally_client_append_id(c, id, recs, n, ret_ack);
}

int tally_client_append_id(tally_client *c,
                           const uint8_t id[TALLY_CLIENT_ID_BYTES],
                           const tally_record_in *recs, size_t n,
                           tally_client_ack *ret_ack)
{
    wire_reply r;
    wire_ack a;
    void *msg;
    const char *why;
    int rc, dup;

    c->out.len = 0;
    c->out.err = 0;
    rc = wire_encode_append_id(&c->out, id, recs, n);
    if (rc < 0)
        return fail(c, rc, "cannot encode the records: %s",
                    tally_strerror(rc));
    rc = request(c, WIRE_OP_APPEND, &msg, &r);
    if (rc < 0)
        return rc;
    dup = (r.flags & WIRE_REPLY_DUPLICATE) != 0;
    rc = wire_parse_ack(&r, &a, &why);
    nn_freemsg(msg);
    if (rc < 0)
        return fail(c, rc, "malformed acknowledgement: %s", why);
    if (a.count != n)
        return fail(c, -EPROTO, "acknowledgement for %u records, sent %zu",
                    a.count, n);
    if (ret_ack) {
        ret_ack->first_seq = a.first_seq;
        ret_ack->count = a.count;
        ret_ack->head_seq = a.head_seq;
        memcpy(ret_ack->head_link, a.head_link, TALLY_HASH_BYTES);
        ret_ack->durable_seq = a.durable_seq;
        ret_ack->duplicate = dup;
    }
    return 0;
}

/* Replaces a wildcard host ("*" or 0.0.0.0) in a tcp URL the daemon bound
 * by the host of the URL we reached it at. */
static void fix_host(const char *bound, const char *via, char *out,
                     size_t outlen)
{
    const char *hb, *hv, *pb, *pv;

    if (strncmp(bound, "tcp://", 6) != 0 || strncmp(via, "tcp://", 6) != 0) {
        snprintf(out, outlen, "%s", bound);
        return;
    }
    hb = bound + 6;
    pb = strrchr(hb, ':');
    hv = via + 6;
    pv = strrchr(hv, ':');
    if (!pb || !pv ||
        !((pb - hb == 1 && hb[0] == '*') ||
          (pb - hb == 7 && strncmp(hb, "0.0.0.0", 7) == 0))) {
        snprintf(out, outlen, "%s", bound);
        return;
    }
    snprintf(out, outlen, "tcp://%.*s%s", (int)(pv - hv), hv, pb);
}

int tally_client_status_get(tally_client *c, tally_client_status *ret)
{
    wire_reply r;
    wire_status s;
    tally_client_status o;
    void *msg;
    const char *why;
    int rc;

    c->out.len = 0;
    rc = wire_encode_status(&c->out);
    if (rc < 0)
        return fail(c, rc, "out of memory");
    rc = request(c, WIRE_OP_STATUS, &msg, &r);
    if (rc < 0)
        return rc;
    rc = wire_parse_status(&r, &s, &why);
    nn_freemsg(msg);
    if (rc < 0)
        return fail(c, rc, "malformed status reply: %s", why);
    memset(&o, 0, sizeof o);
    o.head_seq = s.head_seq;
    memcpy(o.head_link, s.head_link, TALLY_HASH_BYTES);
    o.durable_seq = s.durable_seq;
    o.published_seq = s.published_seq;
    o.appended = s.appended;
    o.uptime_ms = s.uptime_ms;
    o.anchor_seq = s.anchor_seq;
    o.anchor_age_ms = s.anchor_age_ms;
    memcpy(o.journal_id, s.journal_id, TALLY_ID_BYTES);
    o.cipher = s.cipher;
    o.sync = s.sync;
    o.stored = s.form == WIRE_FORM_STORED;
    o.anchoring = s.anchoring == WIRE_ANCHORING_RUNNING;
    o.backend = s.backend;
    o.anchor_block = s.anchor_block;
    memcpy(o.anchor_head, s.anchor_head, sizeof o.anchor_head);
    memcpy(o.anchor_tx, s.anchor_tx, sizeof o.anchor_tx);
    o.anchored_at_ns = s.anchored_at_ns;
    o.lag_records = s.lag_records;
    o.lag_ms = s.lag_ms;
    o.rounds = s.rounds;
    o.anchors = s.anchors;
    o.failures = s.failures;
    o.consecutive_failures = s.consecutive_failures;
    o.last_error = s.last_error;
    snprintf(o.last_errmsg, sizeof o.last_errmsg, "%s", s.last_errmsg);
    fix_host(s.publish_url, c->url, o.publish_url, sizeof o.publish_url);
    fix_host(s.pull_url, c->url, o.pull_url, sizeof o.pull_url);
    memcpy(c->jid, s.journal_id, TALLY_ID_BYTES);
    c->cipher = s.cipher;
    c->have_status = true;
    if (!c->publish_url[0])
        snprintf(c->publish_url, sizeof c->publish_url, "%s", o.publish_url);
    if (!c->pull_url[0])
        snprintf(c->pull_url, sizeof c->pull_url, "%s", o.pull_url);
    *ret = o;
    return 0;
}

int tally_client_push(tally_client *c, const tally_record_in *recs, size_t n)
{
    int rc;

    if (c->push < 0) {
        if (!c->pull_url[0]) {
            tally_client_status st;

            rc = tally_client_status_get(c, &st);
            if (rc < 0)
                return rc;
        }
        c->push = nn_socket(AF_SP, NN_PUSH);
        if (c->push < 0)
            return fail(c, nn_err(), "cannot open a push socket");
        if (nn_setsockopt(c->push, NN_SOL_SOCKET, NN_SNDTIMEO, &c->timeout_ms,
                          sizeof c->timeout_ms) < 0 ||
            nn_connect(c->push, c->pull_url) < 0) {
            rc = nn_err();
            nn_close(c->push);
            c->push = -1;
            return fail(c, rc, "cannot connect to %s: %s", c->pull_url,
                        nn_strerror(-rc));
        }
    }
    c->out.len = 0;
    rc = wire_encode_append(&c->out, recs, n);
    if (rc < 0)
        return fail(c, rc, "cannot encode the records: %s",
                    tally_strerror(rc));
    if (nn_send(c->push, c->out.p, c->out.len, 0) < 0) {
        rc = nn_err();
        return fail(c, rc, "pushing to %s: %s", c->pull_url, nn_strerror(-rc));
    }
    return 0;
}

/* ---- decrypting stored publications ---------------------------------------- */

static int epoch_dk(tally_client *c, uint32_t epoch, const uint8_t **ret)
{
    wire_reply r;
    void *msg;
    ti_epoch e;
    uint8_t *dk;
    size_t i;
    int rc;

    for (i = 0; i < c->n_epochs; i++)
        if (c->epochs[i].epoch == epoch) {
            *ret = c->epochs[i].dk;
            return 0;
        }
    if (c->n_epochs == MAX_EPOCHS)
        return fail(c, -ENOSPC, "too many key epochs");
    c->out.len = 0;
    rc = wire_encode_epoch(&c->out, epoch);
    if (rc < 0)
        return fail(c, rc, "bad epoch %u", epoch);
    rc = request(c, WIRE_OP_EPOCH, &msg, &r);
    if (rc < 0)
        return rc;
    if (r.body_len != WIRE_EPOCH_ENTRY) {
        nn_freemsg(msg);
        return fail(c, -EPROTO, "epoch reply: wrong length");
    }
    /* FORMAT.md §3.2 */
    e.epoch = le32_get(r.body);
    e.flags = le32_get(r.body + 4);
    e.first_segment = le64_get(r.body + 8);
    memcpy(e.nonce, r.body + 16, 24);
    memcpy(e.wrapped, r.body + 40, 48);
    nn_freemsg(msg);
    if (e.epoch != epoch)
        return fail(c, -EPROTO, "epoch reply for another epoch");
    dk = sodium_malloc(32);
    if (!dk)
        return fail(c, -ENOMEM, "out of memory");
    /* the wrap is authenticated with the journal id and epoch as
     * associated data: a daemon cannot hand us another journal's key */
    rc = ti_epoch_unwrap(&e, c->mk, c->jid, dk);
    if (rc < 0) {
        sodium_free(dk);
        return fail(c, rc, "cannot unwrap the data key of epoch %u: %s",
                    epoch, tally_strerror(rc));
    }
    c->epochs[c->n_epochs].epoch = epoch;
    c->epochs[c->n_epochs].dk = dk;
    c->n_epochs++;
    *ret = dk;
    return 0;
}

static int grow(uint8_t **p, size_t *cap, size_t need)
{
    uint8_t *q;

    if (need <= *cap)
        return 0;
    q = malloc(need);
    if (!q)
        return -ENOMEM;
    if (*p) {
        sodium_memzero(*p, *cap);
        free(*p);
    }
    *p = q;
    *cap = need;
    return 0;
}

/* Checks a stored publication's frame against its header fields, and with
 * the key decrypts it into out. */
static int open_stored(tally_client *c, const wire_pub *u,
                       tally_client_record *out)
{
    ti_frame_hdr fh;
    uint8_t rh[32], link[32];
    const char *why = NULL;
    const uint8_t *env, *dk = NULL;
    size_t env_len;
    ti_env e;
    int rc;

    rc = ti_frame_header_parse(u->frame, u->seq, &fh, &why);
    if (rc < 0 || ti_frame_len(&fh) != u->frame_len)
        return fail(c, TALLY_EINTEGRITY, "seq %llu: stored frame: %s",
                    (unsigned long long)u->seq, why ? why : "wrong length");
    rc = ti_frame_record_hash(u->frame, &fh, rh, &why);
    if (rc < 0 || memcmp(rh, u->record_hash, 32) != 0 ||
        memcmp(u->frame + u->frame_len - 32, u->link, 32) != 0)
        return fail(c, TALLY_EINTEGRITY,
                    "seq %llu: stored frame disagrees with its publication",
                    (unsigned long long)u->seq);
    ti_link(link, u->prev_link, rh);
    if (memcmp(link, u->link, 32) != 0)
        return fail(c, TALLY_EINTEGRITY,
                    "seq %llu: link does not follow from the previous link",
                    (unsigned long long)u->seq);
    out->frame = u->frame;
    out->frame_len = u->frame_len;
    if (!c->mk || fh.kind == TF_KIND_PRUNED)
        return 0;
    if (!c->have_status) {
        tally_client_status st;

        rc = tally_client_status_get(c, &st);
        if (rc < 0)
            return rc;
    }
    if (!c->aead_ok) {
        rc = ti_aead_alloc(&c->aead, c->cipher);
        if (rc < 0)
            return fail(c, rc, "cipher %d: %s", c->cipher, tally_strerror(rc));
        c->aead_ok = true;
        c->aead_segment = 0;
    }
    if (!c->aead.keyed || c->aead_segment != u->segment_no ||
        c->aead_epoch != u->epoch ||
        memcmp(c->aead_salt, u->salt, 16) != 0) {
        uint8_t sk[32];

        rc = epoch_dk(c, u->epoch, &dk);
        if (rc < 0)
            return rc;
        ti_derive_segment_key(sk, dk, c->jid, u->segment_no, u->salt);
        ti_aead_setkey(&c->aead, sk);
        sodium_memzero(sk, sizeof sk);
        c->aead_segment = u->segment_no;
        c->aead_epoch = u->epoch;
        memcpy(c->aead_salt, u->salt, 16);
    }
    if (grow(&c->work, &c->work_cap, TF_AD_BYTES + fh.body_len) < 0)
        return fail(c, -ENOMEM, "out of memory");
    rc = ti_frame_open(&c->aead, c->jid, u->prev_link, u->frame, &fh, c->work,
                       &env, &env_len);
    if (rc == 0)
        rc = ti_env_parse(env, env_len, &fh, &e, &why);
    if (rc < 0)
        return fail(c, TALLY_EINTEGRITY, "seq %llu: record does not "
                    "authenticate: %s", (unsigned long long)u->seq,
                    why ? why : "bad tag");
    if (e.type != u->type)
        return fail(c, TALLY_EINTEGRITY, "seq %llu: publication type %u, "
                    "record type %u", (unsigned long long)u->seq, u->type,
                    e.type);
    out->key = e.key;
    out->key_len = e.key_len;
    if (fh.flags & TF_FRAME_COMPRESSED) {
        uLongf got = e.raw_len;

        if (grow(&c->plain, &c->plain_cap, e.raw_len ? e.raw_len : 1) < 0)
            return fail(c, -ENOMEM, "out of memory");
        if (uncompress(c->plain, &got, e.data, e.data_len) != Z_OK ||
            got != e.raw_len)
            return fail(c, TALLY_EINTEGRITY, "seq %llu: payload does not "
                        "inflate", (unsigned long long)u->seq);
        out->payload = c->plain;
        out->payload_len = e.raw_len;
    } else {
        out->payload = e.data;
        out->payload_len = e.data_len;
    }
    out->decrypted = 1;
    return 0;
}

/* Turns a parsed publication into a record for the callback. */
static int pub_record(tally_client *c, const wire_pub *u, int live,
                      tally_client_record *out)
{
    memset(out, 0, sizeof *out);
    out->seq = u->seq;
    out->ts_ns = u->ts_ns;
    out->type = u->type;
    out->live = live;
    memcpy(out->record_hash, u->record_hash, 32);
    memcpy(out->link, u->link, 32);
    if (u->form == WIRE_FORM_PLAIN) {
        out->decrypted = 1;
        out->key = u->key;
        out->key_len = u->key_len;
        out->payload = u->payload;
        out->payload_len = u->payload_len;
        return 0;
    }
    return open_stored(c, u, out);
}

/* ---- following ------------------------------------------------------------ */

typedef struct follow {
    tally_client *c;
    const tally_client_follow_options *fo;
    uint64_t covered;    /* every wanted record <= covered was delivered */
    bool have_link;      /* link of `covered` known (c->w_link) */
    uint8_t prefix[2];
    uint8_t prefix_len;
} follow;

static bool wanted(const follow *f, uint16_t type)
{
    return !f->fo->filter_type || type == f->fo->type;
}

static bool stopped(const follow *f)
{
    return f->fo->stop && *f->fo->stop;
}

/* Delivers one record in order, after the witness checks. */
static int deliver(follow *f, const tally_client_record *rec)
{
    tally_client *c = f->c;
    int rc;

    if (rec->seq <= f->covered)
        return 0; /* already delivered: joining on seq */
    /* consecutive records must chain: link_n = H(link_{n-1} || rh_n) */
    if (!f->fo->filter_type && f->have_link && rec->seq == f->covered + 1) {
        uint8_t link[32];

        ti_link(link, c->w_link, rec->record_hash);
        if (memcmp(link, rec->link, 32) != 0)
            return fail(c, TALLY_EFORK, "seq %llu does not chain onto the "
                        "link of seq %llu seen before: the journal was "
                        "rewritten", (unsigned long long)rec->seq,
                        (unsigned long long)f->covered);
    }
    f->covered = rec->seq;
    f->have_link = true;
    c->w_seq = rec->seq;
    memcpy(c->w_link, rec->link, 32);
    rc = f->fo->on_record ? f->fo->on_record(f->fo->ctx, rec) : 0;
    return rc;
}

/* Delivers everything wanted in (covered, to] with range requests. to =
 * UINT64_MAX: up to the durable head. 0 when done; otherwise an error or
 * the callback's nonzero value. */
static int fill(follow *f, uint64_t to)
{
    tally_client *c = f->c;
    unsigned stalls = 0;

    while (f->covered < to) {
        uint64_t from = f->covered + 1;
        wire_reply r;
        wire_range g;
        void *msg;
        const char *why = NULL;
        const uint8_t *pub;
        size_t len;
        int rc;

        if (stopped(f))
            return 0;
        c->out.len = 0;
        rc = wire_encode_range(&c->out, from, to, 0, f->prefix,
                               f->prefix_len);
        if (rc < 0)
            return fail(c, rc, "out of memory");
        rc = request(c, WIRE_OP_RANGE, &msg, &r);
        if (rc < 0)
            return rc;
        rc = wire_parse_range(&r, &g, &why);
        if (rc == 0 && g.scanned_to != 0 && g.scanned_to < from - 1)
            rc = -EPROTO, why = "range reply scanned backwards";
        while (rc == 0 && (rc = wire_range_next(&g, &pub, &len, &why)) == 1) {
            wire_pub u;
            tally_client_record rec;

            rc = wire_parse_pub(pub, len, &u, &why);
            if (rc == 0 && (u.form == WIRE_FORM_TICK || u.seq < from ||
                            u.seq > g.scanned_to || !wanted(f, u.type)))
                rc = -EPROTO, why = "range reply: record out of place";
            if (rc < 0)
                break;
            rc = pub_record(c, &u, 0, &rec);
            if (rc == 0)
                rc = deliver(f, &rec);
            if (rc != 0) {
                nn_freemsg(msg);
                return rc;
            }
        }
        nn_freemsg(msg);
        if (rc < 0)
            return fail(c, rc, "malformed range reply: %s", why);
        if (g.scanned_to < from) {
            /* nothing durable at `from` yet */
            if (to == UINT64_MAX)
                return 0;
            /* a published record is durable; the daemon may be restarting */
            if (++stalls > 50)
                return fail(c, TALLY_EROLLBACK, "seq %llu was published but "
                            "the daemon no longer has it",
                            (unsigned long long)from);
            usleep(100000);
            continue;
        }
        stalls = 0;
        if (g.scanned_to > f->covered) {
            /* unwanted records between: covered, but their link unknown */
            f->covered = g.scanned_to;
            f->have_link = f->covered == c->w_seq;
        }
    }
    return 0;
}

/* Catch-up from the files of the journal (fo->dir). */
static int fill_from_dir(follow *f)
{
    tally_client *c = f->c;
    tally_iter *it;
    tally_record r;
    int rc;

    rc = tally_iter_open(&it, f->fo->dir, c->mk, f->covered + 1,
                         TALLY_ITER_TOLERATE_TAIL);
    if (rc < 0)
        return fail(c, rc, "%s: %s", f->fo->dir, tally_strerror(rc));
    while (!stopped(f) && (rc = tally_iter_next(it, &r)) == 1) {
        tally_client_record rec;

        if (r.seq <= f->covered)
            continue;
        if (!wanted(f, r.type)) {
            /* an unwanted record still advances what is covered */
            f->covered = r.seq;
            f->have_link = false;
            continue;
        }
        memset(&rec, 0, sizeof rec);
        rec.seq = r.seq;
        rec.ts_ns = r.ts_ns;
        rec.type = r.type;
        rec.decrypted = r.decrypted;
        rec.key = r.key;
        rec.key_len = r.key_len;
        rec.payload = r.payload;
        rec.payload_len = r.payload_len;
        memcpy(rec.record_hash, r.record_hash, 32);
        memcpy(rec.link, r.link, 32);
        rc = deliver(f, &rec);
        if (rc != 0) {
            tally_iter_free(it);
            return rc;
        }
        rc = 1;
    }
    if (rc < 0)
        fail(c, rc, "%s: %s", f->fo->dir, tally_iter_errmsg(it));
    tally_iter_free(it);
    return rc < 0 ? rc : 0;
}

static int handle_pub(follow *f, const uint8_t *msg, size_t len)
{
    tally_client *c = f->c;
    wire_pub u;
    tally_client_record rec;
    const char *why = NULL;
    int rc;

    rc = wire_parse_pub(msg, len, &u, &why);
    if (rc < 0)
        return fail(c, rc, "malformed publication: %s", why);
    /* a daemon's published seq only grows; after a restart it starts at
     * its head, so a smaller one means the journal went back */
    if (u.seq < c->w_max_live)
        return fail(c, TALLY_EROLLBACK, "the daemon published seq %llu "
                    "after seq %llu: the journal went back",
                    (unsigned long long)u.seq,
                    (unsigned long long)c->w_max_live);
    c->w_max_live = u.seq;
    if (u.form == WIRE_FORM_TICK) {
        if (u.seq == f->covered && f->have_link &&
            memcmp(u.link, c->w_link, 32) != 0)
            return fail(c, TALLY_EFORK, "head seq %llu has another link "
                        "than the one seen before",
                        (unsigned long long)u.seq);
        return u.seq > f->covered ? fill(f, u.seq) : 0;
    }
    if (!wanted(f, u.type) || u.seq <= f->covered)
        return 0;
    /* join on seq: fill what lies between what we have and this record */
    if (f->fo->filter_type ? (u.prev_same_type == 0 ||
                              u.prev_same_type > f->covered)
                           : u.seq > f->covered + 1) {
        rc = fill(f, u.seq - 1);
        if (rc != 0)
            return rc;
        if (u.seq <= f->covered)
            return 0;
    }
    rc = pub_record(c, &u, 1, &rec);
    if (rc < 0)
        return rc;
    return deliver(f, &rec);
}

int tally_client_follow(tally_client *c, const tally_client_follow_options *fo)
{
    follow f;
    tally_client_status st;
    uint64_t last_msg_ns;
    int rc, poll_ms = 200;

    memset(&f, 0, sizeof f);
    f.c = c;
    f.fo = fo;
    c->err[0] = '\0';
    if (fo->filter_type) {
        if (!wire_type_allowed(fo->type))
            return fail(c, -EINVAL, "type %u cannot be followed", fo->type);
        wire_put16(f.prefix, fo->type);
        f.prefix_len = 2;
    }
    rc = tally_client_status_get(c, &st);
    if (rc < 0)
        return rc;
    if (c->w_seq && st.head_seq < c->w_seq)
        return fail(c, TALLY_EROLLBACK, "the daemon's head is seq %llu, "
                    "seq %llu was seen before", (unsigned long long)st.head_seq,
                    (unsigned long long)c->w_seq);

    /* 1. subscribe first: from now on nanomsg buffers publications */
    if (c->sub < 0) {
        int big = 16 << 20;
        uint8_t tick[2];

        c->sub = nn_socket(AF_SP, NN_SUB);
        if (c->sub < 0)
            return fail(c, nn_err(), "cannot open a subscriber socket");
        wire_put16(tick, WIRE_TICK_TYPE);
        if (set_maxsize(c->sub) < 0 ||
            nn_setsockopt(c->sub, NN_SOL_SOCKET, NN_RCVBUF, &big,
                          sizeof big) < 0 ||
            nn_setsockopt(c->sub, NN_SOL_SOCKET, NN_RCVTIMEO, &poll_ms,
                          sizeof poll_ms) < 0 ||
            nn_setsockopt(c->sub, NN_SUB, NN_SUB_SUBSCRIBE, f.prefix,
                          f.prefix_len) < 0 ||
            (f.prefix_len &&
             nn_setsockopt(c->sub, NN_SUB, NN_SUB_SUBSCRIBE, tick, 2) < 0) ||
            nn_connect(c->sub, c->publish_url) < 0) {
            rc = nn_err();
            nn_close(c->sub);
            c->sub = -1;
            return fail(c, rc, "cannot subscribe to %s: %s", c->publish_url,
                        nn_strerror(-rc));
        }
    }

    /* 2. catch up to the durable head; 3. then the live stream, where
     * anything already delivered is skipped and any gap is filled */
    if (c->w_seq) {
        /* resuming: continue after what this handle saw */
        f.covered = c->w_seq;
        f.have_link = !fo->filter_type;
    } else if (fo->from_seq == 0) {
        f.covered = st.head_seq;
    } else {
        f.covered = fo->from_seq - 1;
    }
    if (fo->dir && !c->w_seq) {
        rc = fill_from_dir(&f);
        if (rc != 0)
            return rc;
    }
    rc = fill(&f, UINT64_MAX);
    if (rc != 0)
        return rc;

    last_msg_ns = 0;
    for (;;) {
        void *msg = NULL;
        int n;
        struct timespec ts;
        uint64_t now;

        if (stopped(&f))
            return 0;
        if (fo->until_seq && f.covered >= fo->until_seq)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        if (!last_msg_ns)
            last_msg_ns = now;
        n = nn_recv(c->sub, &msg, NN_MSG, 0);
        if (n < 0) {
            int e = nn_errno();

            if (e != ETIMEDOUT && e != EAGAIN && e != EINTR)
                return fail(c, -e, "receiving from %s: %s", c->publish_url,
                            nn_strerror(e));
            if (fo->idle_timeout_ms &&
                now - last_msg_ns >= (uint64_t)fo->idle_timeout_ms * 1000000u)
                return 0;
            continue;
        }
        last_msg_ns = now;
        rc = handle_pub(&f, msg, (size_t)n);
        nn_freemsg(msg);
        if (rc != 0)
            return rc;
    }
}
