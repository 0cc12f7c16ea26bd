/*
 * powerloss.c — power-loss simulation in the manner of ALICE and SQLite's
 * crash tests: record every file operation of a real `tally append --ack`
 * run (the iolog.so shim, iolog.h), then rebuild the states a power failure
 * could have left at each point of the run and check every one.
 *
 *   stress-powerloss --tally PATH --shim iolog.so --policy P
 *                    [--sessions N] [--records K] [--points M]
 *                    [--variants R] [--seed S] [--workdir DIR]
 *                    [--replay-dir DIR] [--keep-failed DIR]
 *                    [--kill-percent P] [--selftest-ignore-fsync]
 *
 * A session: the journal (all of it taken as durable: the base) is
 * appended to by `tally append --ack --sync P` under the shim, fed K lines
 * in bursts, and either closes or (P percent of sessions, default 50) is
 * killed at a random moment. The log is
 * then replayed. At a crash point k (the first k logged operations done):
 *
 *   - a file's content is its base content plus every write, truncate and
 *     size change (fallocate) an fsync/fdatasync covered (one that returned before k, covering what
 *     was logged before it was called), plus a random subset of the other
 *     writes, each kept whole, dropped or torn (a prefix of whole 512-byte
 *     sectors kept);
 *   - the directory holds the base names plus every create, rename and
 *     unlink a directory fsync covered, plus a random prefix of the others
 *     (metadata operations reach the disk in order: ext4's journal);
 *   - the variants at each point are: nothing unsynced, everything,
 *     everything but the last write torn at a random byte, and R - 3 random
 *     ones (a torn write keeps whole sectors, or for some any byte prefix:
 *     stricter than disks, which recovery must survive all the same).
 *
 * Every state must: open for writing (recovery) without error, take one
 * more record and close; verify with the key; hold seqs dense from 1, each
 * with the payload that encodes its seq (stress.h); and hold every record
 * acknowledged (an ack written to stdout) before k, and every base record.
 * Prints one line of figures.
 *
 * --selftest-ignore-fsync makes the model forget what fdatasyncs (the
 * record syncs; the fsyncs of new files stay) made durable: the run must
 * then FAIL (an acknowledged record lost), which
 * shows that the checks can catch a writer that acknowledges too early.
 */
#include "iolog.h"
#include "stress.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

struct cfg {
    const char *tally, *shim, *policy, *workdir, *replay_dir, *keep_failed;
    unsigned sessions, records, points, variants;
    unsigned kill_pct; /* sessions killed at a random moment, percent */
    uint64_t seed;
    int ignore_fsync; /* self-test: the model forgets every fdatasync */
};

/* ---- the log ----------------------------------------------------------------- */

typedef struct ev {
    struct iolog_ev h;
    const char *name;    /* not NUL-terminated: h.name_len */
    const uint8_t *data; /* h.len */
} ev;

typedef struct evlog {
    uint8_t *raw;
    size_t raw_len;
    ev *v;
    size_t n;
} evlog;

/* killed: the writer may have been killed before the shim started */
static void log_load(evlog *l, const char *path, int killed)
{
    memset(l, 0, sizeof *l);
    l->raw = st_read_file(path, &l->raw_len);
    if (!l->raw && killed)
        return;
    if (!l->raw)
        st_fail("no I/O log at %s (shim not loaded?)", path);
    size_t pos = 0, cap = 0;
    while (pos < l->raw_len) {
        if (l->raw_len - pos < sizeof(struct iolog_ev))
            st_fail("%s: truncated event at byte %zu", path, pos);
        ev e;
        memcpy(&e.h, l->raw + pos, sizeof e.h);
        pos += sizeof e.h;
        if (e.h.magic != IOLOG_MAGIC || e.h.index != l->n ||
            e.h.name_len > l->raw_len - pos ||
            e.h.len > l->raw_len - pos - e.h.name_len)
            st_fail("%s: bad event %zu at byte %zu", path, l->n, pos);
        e.name = (const char *)l->raw + pos;
        pos += e.h.name_len;
        e.data = l->raw + pos;
        pos += e.h.len;
        if (l->n == cap) {
            cap = cap ? 2 * cap : 1024;
            l->v = realloc(l->v, cap * sizeof *l->v);
            if (!l->v)
                st_fail("out of memory");
        }
        l->v[l->n++] = e;
    }
}

static void log_free(evlog *l)
{
    free(l->raw);
    free(l->v);
}

/* ---- the model ------------------------------------------------------------------ */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static void bytes_resize(bytes *b, size_t len)
{
    if (len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < len)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            st_fail("out of memory");
        b->cap = cap;
    }
    if (len > b->len)
        memset(b->p + b->len, 0, len - b->len); /* a hole reads as zeros */
    b->len = len;
}

static void bytes_write(bytes *b, uint64_t off, const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    if (off + n > b->len)
        bytes_resize(b, (size_t)(off + n));
    memcpy(b->p + off, p, n);
}

static void bytes_copy(bytes *dst, const bytes *src)
{
    dst->len = 0;
    bytes_resize(dst, src->len);
    if (src->len)
        memcpy(dst->p, src->p, src->len);
}

typedef struct file {
    uint64_t ino;
    bytes durable;
} file;

typedef struct name_ent {
    char name[256];
    uint64_t ino;
} name_ent;

typedef struct names {
    name_ent *v;
    size_t n, cap;
} names;

static name_ent *names_find(names *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i].name, name) == 0)
            return &ns->v[i];
    return NULL;
}

static void names_set(names *ns, const char *name, uint64_t ino)
{
    name_ent *e = names_find(ns, name);
    if (!e) {
        if (ns->n == ns->cap) {
            ns->cap = ns->cap ? 2 * ns->cap : 32;
            ns->v = realloc(ns->v, ns->cap * sizeof *ns->v);
            if (!ns->v)
                st_fail("out of memory");
        }
        e = &ns->v[ns->n++];
        snprintf(e->name, sizeof e->name, "%s", name);
    }
    e->ino = ino;
}

static void names_del(names *ns, const char *name)
{
    name_ent *e = names_find(ns, name);
    if (e)
        *e = ns->v[--ns->n];
}

static void names_copy(names *dst, const names *src)
{
    dst->n = 0;
    for (size_t i = 0; i < src->n; i++)
        names_set(dst, src->v[i].name, src->v[i].ino);
}

enum { NS_CREATE = 1, NS_RENAME, NS_UNLINK };

typedef struct ns_op {
    uint64_t index;
    int type;
    char name[256], name2[256];
    uint64_t ino;
} ns_op;

typedef struct data_op {
    uint64_t index;
    uint64_t ino;
    int trunc;        /* 1: truncate to off; 2: extend to at least off */
    uint64_t off;
    const uint8_t *data;
    size_t len;
} data_op;

typedef struct model {
    int ignore_fsync;
    uint64_t dir_ino;
    file *files;
    size_t nfiles, files_cap;
    names durable_ns, cur_ns;
    ns_op *nsp;           /* pending (not yet covered by a dir fsync) */
    size_t nnsp, nsp_cap;
    data_op *dp;          /* pending data operations, in order */
    size_t ndp, dp_cap;
    uint64_t acked;       /* highest seq acknowledged so far */
} model;

static file *model_file(model *m, uint64_t ino, int create)
{
    for (size_t i = 0; i < m->nfiles; i++)
        if (m->files[i].ino == ino)
            return &m->files[i];
    if (!create)
        return NULL;
    if (m->nfiles == m->files_cap) {
        m->files_cap = m->files_cap ? 2 * m->files_cap : 32;
        m->files = realloc(m->files, m->files_cap * sizeof *m->files);
        if (!m->files)
            st_fail("out of memory");
    }
    file *f = &m->files[m->nfiles++];
    memset(f, 0, sizeof *f);
    f->ino = ino;
    return f;
}

static void apply_ns(names *ns, const ns_op *o)
{
    switch (o->type) {
    case NS_CREATE:
        names_set(ns, o->name, o->ino);
        break;
    case NS_RENAME: {
        name_ent *e = names_find(ns, o->name);
        if (!e)
            return; /* its create is not in this state: nothing to move */
        uint64_t ino = e->ino;
        names_del(ns, o->name);
        names_set(ns, o->name2, ino);
        break;
    }
    case NS_UNLINK:
        names_del(ns, o->name);
        break;
    }
}

static void apply_data(bytes *b, const data_op *o, size_t keep)
{
    if (o->trunc == 2) {
        if (o->off > b->len)
            bytes_resize(b, (size_t)o->off); /* zeros */
    } else if (o->trunc)
        bytes_resize(b, (size_t)o->off);
    else
        bytes_write(b, o->off, o->data, keep);
}

static void push_ns(model *m, uint64_t index, int type, const char *a,
                    size_t alen, const char *b, size_t blen, uint64_t ino)
{
    if (m->nnsp == m->nsp_cap) {
        m->nsp_cap = m->nsp_cap ? 2 * m->nsp_cap : 64;
        m->nsp = realloc(m->nsp, m->nsp_cap * sizeof *m->nsp);
        if (!m->nsp)
            st_fail("out of memory");
    }
    ns_op *o = &m->nsp[m->nnsp++];
    memset(o, 0, sizeof *o);
    o->index = index;
    o->type = type;
    snprintf(o->name, sizeof o->name, "%.*s", (int)alen, a);
    if (b)
        snprintf(o->name2, sizeof o->name2, "%.*s", (int)blen, b);
    o->ino = ino;
    apply_ns(&m->cur_ns, o);
}

static void push_data(model *m, uint64_t index, uint64_t ino, int trunc,
                      uint64_t off, const uint8_t *data, size_t len)
{
    if (m->ndp == m->dp_cap) {
        m->dp_cap = m->dp_cap ? 2 * m->dp_cap : 256;
        m->dp = realloc(m->dp, m->dp_cap * sizeof *m->dp);
        if (!m->dp)
            st_fail("out of memory");
    }
    m->dp[m->ndp++] = (data_op){ .index = index, .ino = ino, .trunc = trunc,
                                 .off = off, .data = data, .len = len };
}

/* Applies one logged event to the model. */
static void model_step(model *m, const ev *e)
{
    switch (e->h.op) {
    case IOLOG_OPEN: {
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)e->h.name_len, e->name);
        int flags = (int)e->h.aux;
        name_ent *cur = names_find(&m->cur_ns, name);
        if ((flags & O_CREAT) && (!cur || cur->ino != e->h.ino)) {
            model_file(m, e->h.ino, 1);
            push_ns(m, e->h.index, NS_CREATE, name, strlen(name), NULL, 0,
                    e->h.ino);
        }
        if (!model_file(m, e->h.ino, 0))
            st_fail("log event %" PRIu64 ": %s opened, but it is neither in "
                    "the base nor created", e->h.index, name);
        if (flags & O_TRUNC)
            push_data(m, e->h.index, e->h.ino, 1, 0, NULL, 0);
        break;
    }
    case IOLOG_WRITE:
        if (!model_file(m, e->h.ino, 0))
            st_fail("log event %" PRIu64 ": write to an unknown file",
                    e->h.index);
        push_data(m, e->h.index, e->h.ino, 0, e->h.off, e->data,
                  (size_t)e->h.len);
        break;
    case IOLOG_TRUNC:
        push_data(m, e->h.index, e->h.ino, 1, e->h.off, NULL, 0);
        break;
    case IOLOG_FALLOC:
        /* only a size change shows in the content: zeros to off + len */
        if (!(e->h.flags & FALLOC_FL_KEEP_SIZE))
            push_data(m, e->h.index, e->h.ino, 2, e->h.off + e->h.aux, NULL, 0);
        break;
    case IOLOG_FSYNC: {
        uint64_t covers = e->h.aux;
        if (e->h.ino == m->dir_ino) {
            size_t k = 0;
            while (k < m->nnsp && m->nsp[k].index < covers) {
                apply_ns(&m->durable_ns, &m->nsp[k]);
                k++;
            }
            memmove(m->nsp, m->nsp + k, (m->nnsp - k) * sizeof *m->nsp);
            m->nnsp -= k;
        } else {
            file *f = model_file(m, e->h.ino, 0);
            if (!f || (m->ignore_fsync && e->h.off == 1))
                break;
            size_t w = 0;
            for (size_t i = 0; i < m->ndp; i++) {
                data_op *o = &m->dp[i];
                if (o->ino == e->h.ino && o->index < covers)
                    apply_data(&f->durable, o, o->len);
                else
                    m->dp[w++] = *o;
            }
            m->ndp = w;
        }
        break;
    }
    case IOLOG_RENAME: {
        const char *nul = memchr(e->name, '\0', e->h.name_len);
        if (!nul)
            st_fail("log event %" PRIu64 ": bad rename", e->h.index);
        size_t alen = (size_t)(nul - e->name);
        push_ns(m, e->h.index, NS_RENAME, e->name, alen, nul + 1,
                e->h.name_len - alen - 1, 0);
        break;
    }
    case IOLOG_UNLINK:
        push_ns(m, e->h.index, NS_UNLINK, e->name, e->h.name_len, NULL, 0, 0);
        break;
    case IOLOG_ACK: {
        /* whole lines of seqs */
        uint64_t v = 0;
        int have = 0;
        for (uint64_t i = 0; i < e->h.len; i++) {
            uint8_t c = e->data[i];
            if (c >= '0' && c <= '9') {
                v = v * 10 + (c - '0');
                have = 1;
            } else {
                if (have && v > m->acked)
                    m->acked = v;
                v = 0;
                have = 0;
            }
        }
        if (have && v > m->acked)
            m->acked = v;
        break;
    }
    default:
        st_fail("log event %" PRIu64 ": unknown op %u", e->h.index, e->h.op);
    }
}

static void model_free(model *m)
{
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i].durable.p);
    free(m->files);
    free(m->durable_ns.v);
    free(m->cur_ns.v);
    free(m->nsp);
    free(m->dp);
}

/* ---- building and checking one crash state ------------------------------------- */

/* other variants are random */
enum { V_NONE = 0, V_ALL = 1, V_TORN_LAST = 2, V_RANDOM = 3 };

static void describe_variant(char *out, size_t n, unsigned v)
{
    if (v == V_NONE)
        snprintf(out, n, "only synced data");
    else if (v == V_ALL)
        snprintf(out, n, "every write");
    else if (v == V_TORN_LAST)
        snprintf(out, n, "every write, the last one torn");
    else
        snprintf(out, n, "random subset #%u", v - V_RANDOM + 1);
}

/* Writes the state into rdir (emptied first); returns the number of unsynced
 * operations that were kept (for the figures). */
static void materialize(const model *m, unsigned variant, st_rng *rng,
                        const char *rdir)
{
    st_rmrf(rdir);
    if (mkdir(rdir, 0700) < 0)
        st_fail("mkdir %s: %s", rdir, strerror(errno));
    names ns = { 0 };
    names_copy(&ns, &m->durable_ns);
    size_t prefix = variant == V_NONE ? 0
                  : variant == V_ALL ? m->nnsp
                  : (size_t)st_rng_below(rng, m->nnsp + 1);
    for (size_t i = 0; i < prefix; i++)
        apply_ns(&ns, &m->nsp[i]);

    /* decide each pending data op once (it may touch a file under two
     * names, e.g. before and after a rename) */
    size_t *keep = calloc(m->ndp + 1, sizeof *keep);
    if (!keep)
        st_fail("out of memory");
    size_t last_write = m->ndp;
    for (size_t i = 0; i < m->ndp; i++)
        if (!m->dp[i].trunc)
            last_write = i;
    for (size_t i = 0; i < m->ndp; i++) {
        const data_op *o = &m->dp[i];
        size_t full = o->trunc ? 1 : o->len;
        if (variant == V_NONE)
            keep[i] = 0;
        else if (variant == V_ALL)
            keep[i] = full;
        else if (variant == V_TORN_LAST)
            keep[i] = i == last_write ? (size_t)st_rng_below(rng, o->len)
                                      : full;
        else if (st_rng_below(rng, 2) == 0)
            keep[i] = 0;
        else if (!o->trunc && o->len > 512 && st_rng_below(rng, 3) == 0)
            keep[i] = (size_t)st_rng_below(rng, o->len / 512) * 512; /* sectors */
        else if (!o->trunc && st_rng_below(rng, 6) == 0)
            keep[i] = (size_t)st_rng_below(rng, o->len); /* any byte */
        else
            keep[i] = full;
    }
    bytes b = { 0 };
    for (size_t i = 0; i < ns.n; i++) {
        const file *f = NULL;
        for (size_t j = 0; j < m->nfiles; j++)
            if (m->files[j].ino == ns.v[i].ino)
                f = &m->files[j];
        if (!f)
            st_fail("state: %s names an unknown file", ns.v[i].name);
        bytes_copy(&b, &f->durable);
        for (size_t k = 0; k < m->ndp; k++)
            if (m->dp[k].ino == f->ino && keep[k])
                apply_data(&b, &m->dp[k], keep[k]);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", rdir, ns.v[i].name);
        st_write_file(path, b.p, b.len);
    }
    free(b.p);
    free(keep);
    free(ns.v);
}

struct run {
    struct cfg c;
    st_rng rng;
    uint8_t key[TALLY_KEY_BYTES];
    char *work, *dir, *keyfile, *rdir;
    /* figures */
    uint64_t states, points, events, acked_max, cuts, sessions_killed;
};

static void fail_state(struct run *r, const char *rdir, uint64_t point,
                       unsigned variant, const char *fmt, ...)
    __attribute__((format(printf, 5, 6), noreturn));
static void fail_state(struct run *r, const char *rdir, uint64_t point,
                       unsigned variant, const char *fmt, ...)
{
    char what[1024], v[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    describe_variant(v, sizeof v, variant);
    if (r->c.keep_failed) {
        st_copy_dir(rdir, r->c.keep_failed);
        st_note("the failing state is kept in %s", r->c.keep_failed);
    }
    st_fail("policy %s, crash after event %" PRIu64 " (%s), seed %" PRIu64
            ": %s", r->c.policy, point, v, r->c.seed, what);
}

static void check_state(struct run *r, const model *m, uint64_t point,
                        unsigned variant, uint64_t required)
{
    const char *rdir = r->rdir;
    tally_options opt;
    memset(&opt, 0, sizeof opt);
    opt.master_key = r->key;
    opt.sync = TALLY_SYNC_ALWAYS;
    tally_recovery rep;
    memset(&rep, 0, sizeof rep);
    tally *t = NULL;
    int rc = tally_open(&t, rdir, &opt, &rep);
    if (rc < 0)
        fail_state(r, rdir, point, variant, "open (recovery) failed: %s: %s",
                   tally_strerror(rc), rep.message);
    if (rep.cut_bytes)
        r->cuts++;
    if (rep.cut_first_seq && rep.cut_first_seq <= required)
        fail_state(r, rdir, point, variant, "recovery cut from seq %" PRIu64
                   " but seq %" PRIu64 " was acknowledged or in the base",
                   rep.cut_first_seq, required);
    tally_head_info h;
    rc = tally_head(t, &h);
    if (rc < 0)
        fail_state(r, rdir, point, variant, "head: %s", tally_strerror(rc));
    /* the chain continues after recovery */
    char p[ST_PAYLOAD_MAX];
    size_t n = st_payload(h.seq + 1, p);
    tally_record_in rec = { .payload = p, .payload_len = n };
    uint64_t seq = 0;
    rc = tally_append(t, &rec, &seq);
    if (rc < 0 || seq != h.seq + 1)
        fail_state(r, rdir, point, variant, "append after recovery: %s (seq %"
                   PRIu64 ")", tally_strerror(rc), seq);
    rc = tally_close(t);
    if (rc < 0)
        fail_state(r, rdir, point, variant, "close: %s", tally_strerror(rc));
    tally_verify_report vr;
    rc = tally_verify(rdir, r->key, &vr);
    if (rc < 0)
        fail_state(r, rdir, point, variant, "verify after recovery: %s: %s "
                   "(segment %s offset %" PRIu64 " seq %" PRIu64 ")",
                   tally_strerror(rc), vr.message, vr.segment, vr.offset,
                   vr.seq);
    st_journal_check jc;
    char msg[512];
    if (st_check_journal(rdir, r->key, 0, 1, NULL, 0, &jc, msg, sizeof msg) < 0)
        fail_state(r, rdir, point, variant, "%s", msg);
    if (jc.records < required + 1)
        fail_state(r, rdir, point, variant, "holds seqs 1..%" PRIu64
                   " after one more append, but seq %" PRIu64 " was "
                   "acknowledged or in the base: lost", jc.records - 1,
                   required);
    (void)m;
    r->states++;
}

/* ---- one session ------------------------------------------------------------------ */

struct base_file {
    char name[256];
    uint64_t ino;
    uint8_t *data;
    size_t len;
};

static size_t snapshot(const char *dir, struct base_file **ret, uint64_t *dir_ino)
{
    DIR *d = opendir(dir);
    if (!d)
        st_fail("opendir %s: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) < 0)
        st_fail("stat %s: %s", dir, strerror(errno));
    *dir_ino = (uint64_t)sb.st_ino;
    struct base_file *v = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        v = realloc(v, (n + 1) * sizeof *v);
        if (!v)
            st_fail("out of memory");
        snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
        v[n].ino = (uint64_t)sb.st_ino;
        v[n].data = st_read_file(path, &v[n].len);
        n++;
    }
    closedir(d);
    *ret = v;
    return n;
}

/* Runs the writer under the shim, fed lines from seq first on; 1 if it
 * was killed. */
static int logged_run(struct run *r, const char *logpath, uint64_t first)
{
    char env_log[4200], env_dir[4200], env_pre[4200];
    snprintf(env_log, sizeof env_log, "IOLOG_FILE=%s", logpath);
    snprintf(env_dir, sizeof env_dir, "IOLOG_DIR=%s", r->dir);
    snprintf(env_pre, sizeof env_pre, "LD_PRELOAD=%s", r->c.shim);
    (void)unlink(logpath);

    int pin[2];
    if (pipe2(pin, O_CLOEXEC) < 0)
        st_fail("pipe: %s", strerror(errno));
    char *argv[] = { (char *)r->c.tally, "append", r->dir, "--key-file",
                     r->keyfile, "--sync", (char *)r->c.policy, "--ack",
                     NULL, NULL, NULL };
    if (strcmp(r->c.policy, "interval") == 0) {
        argv[8] = "--interval-ms";
        argv[9] = "3";
    }
    /* the environment only for the child */
    putenv(env_log);
    putenv(env_dir);
    putenv(env_pre);
    pid_t pid = st_spawn(argv, pin[0], -1, -1);
    unsetenv("IOLOG_FILE");
    unsetenv("IOLOG_DIR");
    unsetenv("LD_PRELOAD");
    close(pin[0]);

    /* Wait until the writer has opened the journal (its segment created:
     * a few events logged), so that a slow start (a sanitizer build) does
     * not turn the session into nothing. */
    for (int i = 0; i < 300; i++) {
        struct stat lsb;
        if (stat(logpath, &lsb) == 0 &&
            lsb.st_size >= (off_t)(5 * sizeof(struct iolog_ev)))
            break;
        st_sleep_ms(10);
    }
    int kill_it = st_rng_below(&r->rng, 100) < r->c.kill_pct;
    unsigned kill_after = kill_it ? r->c.records / 4 +
        (unsigned)st_rng_below(&r->rng, r->c.records - r->c.records / 4) : ~0u;
    uint64_t seq = first;
    for (unsigned i = 0; i < r->c.records; i++) {
        if (i == kill_after) {
            st_sleep_ms((unsigned)st_rng_below(&r->rng, 3));
            kill(pid, SIGKILL);
            r->sessions_killed++;
            break;
        }
        char p[ST_PAYLOAD_MAX + 1];
        size_t n = st_payload(seq++, p);
        p[n++] = '\n';
        if (write(pin[1], p, n) != (ssize_t)n)
            break; /* the writer died */
        /* pauses: the writer syncs (batch, none) and acks in between */
        if (st_rng_below(&r->rng, 3) == 0)
            st_sleep_ms(1 + (unsigned)st_rng_below(&r->rng, 3));
    }
    close(pin[1]);
    int status = st_wait(pid);
    if (status != 0 && !(kill_it && status == 128 + SIGKILL))
        st_fail("logged tally append exited with status %d", status);
    return status != 0;
}

static void session(struct run *r, unsigned sno)
{
    /* 1. the base: recovered and checked (unlogged) */
    char *argv[] = { (char *)r->c.tally, "append", r->dir, "--key-file",
                     r->keyfile, NULL };
    char *err = NULL;
    int rc = st_run(argv, NULL, &err, 60000);
    if (rc != 0)
        st_fail("session %u: reopening the base: exit %d: %s", sno, rc, err);
    free(err);
    st_journal_check jc;
    char msg[512];
    if (st_check_journal(r->dir, r->key, 0, 1, NULL, 0, &jc, msg, sizeof msg) < 0)
        st_fail("session %u: base: %s", sno, msg);
    uint64_t base_head = jc.records;

    model m;
    memset(&m, 0, sizeof m);
    m.ignore_fsync = r->c.ignore_fsync;
    struct base_file *bf = NULL;
    size_t nbf = snapshot(r->dir, &bf, &m.dir_ino);
    for (size_t i = 0; i < nbf; i++) {
        file *f = model_file(&m, bf[i].ino, 1);
        f->durable.len = 0;
        bytes_write(&f->durable, 0, bf[i].data, bf[i].len);
        names_set(&m.durable_ns, bf[i].name, bf[i].ino);
        names_set(&m.cur_ns, bf[i].name, bf[i].ino);
        free(bf[i].data);
    }
    free(bf);

    /* 2. the logged run */
    char logpath[4096];
    snprintf(logpath, sizeof logpath, "%s/io.log", r->work);
    int killed = logged_run(r, logpath, base_head + 1);
    evlog l;
    log_load(&l, logpath, killed);
    r->events += l.n;

    /* 3. replay: points 0..n, all of them or a sample */
    uint64_t npoints = l.n + 1;
    uint8_t *chosen = calloc(npoints, 1);
    if (!chosen)
        st_fail("out of memory");
    if (npoints <= r->c.points) {
        memset(chosen, 1, npoints);
    } else {
        chosen[npoints - 1] = 1;
        for (unsigned i = 1; i < r->c.points; i++)
            chosen[st_rng_below(&r->rng, npoints)] = 1;
    }
    for (uint64_t k = 0; k <= l.n; k++) {
        if (chosen[k]) {
            uint64_t required = m.acked > base_head ? m.acked : base_head;
            for (unsigned v = 0; v < r->c.variants; v++) {
                st_rng vr;
                st_rng_seed(&vr, st_rng_next(&r->rng));
                materialize(&m, v, &vr, r->rdir);
                check_state(r, &m, k, v, required);
            }
            r->points++;
        }
        if (k < l.n)
            model_step(&m, &l.v[k]);
    }
    if (m.acked > r->acked_max)
        r->acked_max = m.acked;
    free(chosen);
    log_free(&l);
    model_free(&m);
}

static void usage(void)
{
    fprintf(stderr, "usage: stress-powerloss --tally PATH --shim iolog.so "
            "--policy P [--sessions N] [--records K] [--points M] "
            "[--variants R] [--seed S] [--workdir DIR] [--replay-dir DIR] "
            "[--keep-failed DIR] [--kill-percent P] [--selftest-ignore-fsync]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "tally", required_argument, NULL, 't' },
        { "shim", required_argument, NULL, 'l' },
        { "policy", required_argument, NULL, 'p' },
        { "sessions", required_argument, NULL, 'n' },
        { "records", required_argument, NULL, 'k' },
        { "points", required_argument, NULL, 'm' },
        { "variants", required_argument, NULL, 'v' },
        { "seed", required_argument, NULL, 's' },
        { "workdir", required_argument, NULL, 'w' },
        { "replay-dir", required_argument, NULL, 'r' },
        { "keep-failed", required_argument, NULL, 'K' },
        { "selftest-ignore-fsync", no_argument, NULL, 'I' },
        { "kill-percent", required_argument, NULL, 'P' },
        { NULL, 0, NULL, 0 },
    };
    struct run r;
    memset(&r, 0, sizeof r);
    r.c.sessions = 2;
    r.c.records = 40;
    r.c.points = 80;
    r.c.variants = 5;
    r.c.kill_pct = 50;
    r.c.seed = st_seed_default();
    st_prog = "stress-powerloss";
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': r.c.tally = optarg; break;
        case 'l': r.c.shim = optarg; break;
        case 'p': r.c.policy = optarg; break;
        case 'n': r.c.sessions = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'k': r.c.records = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': r.c.points = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'v': r.c.variants = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': r.c.seed = strtoull(optarg, NULL, 0); break;
        case 'w': r.c.workdir = optarg; break;
        case 'r': r.c.replay_dir = optarg; break;
        case 'K': r.c.keep_failed = optarg; break;
        case 'I': r.c.ignore_fsync = 1; break;
        case 'P': r.c.kill_pct = (unsigned)strtoul(optarg, NULL, 10); break;
        default: usage();
        }
    }
    if (!r.c.tally || !r.c.shim || !r.c.policy || optind != argc ||
        r.c.records == 0 || r.c.variants < 3 || r.c.points == 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0)
        st_fail("sodium_init failed");
    st_rng_seed(&r.rng, r.c.seed);
    r.work = st_mkdtemp(r.c.workdir, "powerloss");
    /* replay states on a tmpfs when there is one: their fsyncs cost
     * nothing there, and they are thrown away */
    const char *rbase = r.c.replay_dir;
    struct stat sb;
    if (!rbase && stat("/dev/shm", &sb) == 0 && access("/dev/shm", W_OK) == 0)
        rbase = "/dev/shm";
    char *rparent = st_mkdtemp(rbase, "replay");
    if (asprintf(&r.rdir, "%s/state", rparent) < 0 ||
        asprintf(&r.dir, "%s/journal", r.work) < 0 ||
        asprintf(&r.keyfile, "%s/key", r.work) < 0)
        st_fail("out of memory");
    char *kg[] = { (char *)r.c.tally, "keygen", r.keyfile, NULL };
    char *init[] = { (char *)r.c.tally, "init", r.dir, "--key-file", r.keyfile,
                     "--segment-size", "4K", NULL };
    char *err = NULL;
    if (st_run(kg, NULL, &err, 30000) != 0 || (free(err), err = NULL,
        st_run(init, NULL, &err, 30000) != 0))
        st_fail("creating the journal: %s", err ? err : "");
    free(err);
    st_load_key(r.keyfile, r.key);

    for (unsigned s = 0; s < r.c.sessions; s++)
        session(&r, s);

    printf("powerloss policy=%s sessions=%u killed=%" PRIu64 " events=%" PRIu64
           " points=%" PRIu64 " states=%" PRIu64 " recoveries_with_cut=%" PRIu64
           " acked=%" PRIu64 " lost=0 seed=%" PRIu64 "\n",
           r.c.policy, r.c.sessions, r.sessions_killed, r.events, r.points,
           r.states, r.cuts, r.acked_max, r.c.seed);
    st_rmrf(r.work);
    st_rmrf(rparent);
    free(rparent);
    free(r.work);
    free(r.rdir);
    free(r.dir);
    free(r.keyfile);
    return 0;
}
