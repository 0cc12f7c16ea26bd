/*
 * target.c — where anchors go: the JournalAnchor contract on an Ethereum
 * chain (through a tally_eth handle), or, for development, a file outside
 * the journal directory. The checkpointer and the freshness check talk to
 * a target and do not care which.
 *
 * The file backend is NOT rollback-proof on its own: whoever can put back an
 * old copy of the journal can usually put back an old copy of the anchor
 * file too. It is only as good as the place it is kept (another machine,
 * append-only storage); tests use it where the chain is beside the point.
 * Its format: a first line "tally-anchor-file 1", then one line per journal,
 * "<journal id hex> <seq> <head hex> <unix ns>". Updated under an flock on
 * "<path>.lock" with write temp, fsync, rename, fsync directory.
 */
#include "checkpoint-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct tally_anchor_target {
    uint8_t backend;
    tally_eth *eth; /* borrowed */
    uint8_t contract[20];
    uint8_t writer[20];
    int code_checked;
    char *path;
    char errmsg[1024];
};

static int tfail(tally_anchor_target *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tfail(tally_anchor_target *t, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->errmsg, sizeof t->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

/* An eth error: its message is on the handle. */
static int efail(tally_anchor_target *t, int rc)
{
    snprintf(t->errmsg, sizeof t->errmsg, "%s", tally_eth_errmsg(t->eth));
    return rc;
}

int tally_anchor_target_eth(tally_anchor_target **ret, tally_eth *eth,
                            const uint8_t contract[static 20],
                            const uint8_t *writer)
{
    if (!ret || !eth)
        return -EINVAL;
    uint8_t w[20];
    if (writer)
        memcpy(w, writer, 20);
    else if (tally_eth_sender(eth, w) < 0)
        return -EINVAL; /* whose anchors? */
    tally_anchor_target *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->backend = TALLY_BACKEND_ETH;
    t->eth = eth;
    memcpy(t->contract, contract, 20);
    memcpy(t->writer, w, 20);
    *ret = t;
    return 0;
}

int tally_anchor_target_file(tally_anchor_target **ret, const char *path)
{
    if (!ret || !path || !*path)
        return -EINVAL;
    tally_anchor_target *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->backend = TALLY_BACKEND_FILE;
    t->path = strdup(path);
    if (!t->path) {
        free(t);
        return -ENOMEM;
    }
    *ret = t;
    return 0;
}

void tally_anchor_target_free(tally_anchor_target *t)
{
    if (!t)
        return;
    free(t->path);
    free(t);
}

const char *tally_anchor_target_errmsg(const tally_anchor_target *t)
{
    return t->errmsg;
}

int tally_anchor_target_describe(tally_anchor_target *t,
                                 tally_checkpoint_info *ret)
{
    tally_checkpoint_info c;
    memset(&c, 0, sizeof c);
    c.backend = t->backend;
    if (t->backend == TALLY_BACKEND_ETH) {
        int rc = tally_eth_chain_id(t->eth, &c.chain_id);
        if (rc < 0)
            return efail(t, rc);
        memcpy(c.contract, t->contract, 20);
        memcpy(c.writer, t->writer, 20);
    }
    *ret = c;
    return 0;
}

/* ---- the file backend ---------------------------------------------------- */

#define FILE_HEADER "tally-anchor-file 1\n"

typedef struct file_entry {
    uint8_t jid[32];
    uint64_t seq;
    uint8_t head[32];
    uint64_t ns;
} file_entry;

/* Reads every entry; a missing file has none. */
static int file_read(tally_anchor_target *t, file_entry **ret, size_t *ret_n)
{
    *ret = NULL;
    *ret_n = 0;
    FILE *f = fopen(t->path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return tfail(t, -errno, "%s: cannot open the anchor file: %s",
                     t->path, strerror(errno));
    }
    char line[256];
    file_entry *v = NULL;
    size_t n = 0;
    int rc = 0, lineno = 1;
    if (!fgets(line, sizeof line, f) || strcmp(line, FILE_HEADER) != 0) {
        rc = tfail(t, TALLY_EINTEGRITY, "%s: not a tally anchor file", t->path);
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char jh[67], hh[67];
        file_entry e;
        char jx[80], hx[80];
        if (sscanf(line, "%66s %" SCNu64 " %66s %" SCNu64, jh, &e.seq, hh,
                   &e.ns) != 4 ||
            snprintf(jx, sizeof jx, "0x%s", jh) < 0 ||
            snprintf(hx, sizeof hx, "0x%s", hh) < 0 ||
            cp_hex_data(jx, e.jid, 32) < 0 || cp_hex_data(hx, e.head, 32) < 0) {
            rc = tfail(t, TALLY_EINTEGRITY, "%s: line %d is malformed",
                       t->path, lineno);
            goto out;
        }
        file_entry *nv = realloc(v, (n + 1) * sizeof *v);
        if (!nv) {
            rc = -ENOMEM;
            goto out;
        }
        v = nv;
        v[n++] = e;
    }
    if (ferror(f))
        rc = tfail(t, -EIO, "%s: read error", t->path);
out:
    fclose(f);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

static int file_write(tally_anchor_target *t, const file_entry *v, size_t n)
{
    size_t plen = strlen(t->path);
    char *tmp = malloc(plen + 16);
    char *dcopy = strdup(t->path);
    if (!tmp || !dcopy) {
        free(tmp);
        free(dcopy);
        return -ENOMEM;
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", t->path);
    int rc = 0;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = tfail(t, -errno, "%s: cannot create a temporary file: %s",
                   t->path, strerror(errno));
        goto out;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        rc = -errno;
        close(fd);
        unlink(tmp);
        goto out;
    }
    fputs(FILE_HEADER, f);
    for (size_t i = 0; i < n; i++) {
        char jh[67], hh[67];
        cp_hex_encode(v[i].jid, 32, jh);
        cp_hex_encode(v[i].head, 32, hh);
        fprintf(f, "%s %" PRIu64 " %s %" PRIu64 "\n", jh + 2, v[i].seq, hh + 2,
                v[i].ns);
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rc = tfail(t, -errno, "%s: cannot write the anchor file: %s", t->path,
                   strerror(errno));
        fclose(f);
        unlink(tmp);
        goto out;
    }
    if (fclose(f) != 0) {
        rc = tfail(t, -errno, "%s: cannot write the anchor file", t->path);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, t->path) != 0) {
        rc = tfail(t, -errno, "%s: cannot replace the anchor file: %s",
                   t->path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        rc = tfail(t, -errno, "%s: cannot sync its directory", t->path);
    if (dfd >= 0)
        close(dfd);
out:
    free(tmp);
    free(dcopy);
    return rc;
}

static int file_lock(tally_anchor_target *t, int *ret_fd)
{
    size_t plen = strlen(t->path);
    char *lp = malloc(plen + 6);
    if (!lp)
        return -ENOMEM;
    snprintf(lp, plen + 6, "%s.lock", t->path);
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(lp);
    if (fd < 0)
        return tfail(t, -errno, "%s.lock: cannot open: %s", t->path,
                     strerror(errno));
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            return tfail(t, -e, "%s.lock: cannot lock", t->path);
        }
    }
    *ret_fd = fd;
    return 0;
}

static int file_latest(tally_anchor_target *t, const uint8_t jid[32],
                       tally_anchor *ret)
{
    file_entry *v;
    size_t n;
    int rc = file_read(t, &v, &n);
    if (rc < 0)
        return rc;
    tally_anchor a;
    memset(&a, 0, sizeof a);
    for (size_t i = 0; i < n; i++) {
        if (memcmp(v[i].jid, jid, 32) == 0) {
            a.seq = v[i].seq;
            memcpy(a.head, v[i].head, 32);
        }
    }
    free(v);
    *ret = a;
    return 0;
}

static int file_submit(tally_anchor_target *t, const uint8_t jid[32],
                       uint64_t seq, const uint8_t head[32], uint64_t ns)
{
    int lfd = -1;
    int rc = file_lock(t, &lfd);
    if (rc < 0)
        return rc;
    file_entry *v;
    size_t n;
    rc = file_read(t, &v, &n);
    if (rc < 0)
        goto out;
    size_t i = 0;
    while (i < n && memcmp(v[i].jid, jid, 32) != 0)
        i++;
    if (i < n && seq <= v[i].seq) {
        rc = tfail(t, TALLY_EROLLBACK,
                   "anchor seq %" PRIu64 " refused by the anchor file %s: "
                   "seq %" PRIu64 " is not greater than %" PRIu64,
                   seq, t->path, seq, v[i].seq);
        free(v);
        goto out;
    }
    if (i == n) {
        file_entry *nv = realloc(v, (n + 1) * sizeof *v);
        if (!nv) {
            free(v);
            rc = -ENOMEM;
            goto out;
        }
        v = nv;
        n++;
        memcpy(v[i].jid, jid, 32);
    }
    v[i].seq = seq;
    memcpy(v[i].head, head, 32);
    v[i].ns = ns;
    rc = file_write(t, v, n);
    free(v);
out:
    close(lfd); /* releases the lock */
    return rc;
}

/* ---- either ---------------------------------------------------------------- */

static int ensure_code(tally_anchor_target *t)
{
    if (t->code_checked)
        return 0;
    int rc = tally_anchor_check_code(t->eth, t->contract);
    if (rc < 0)
        return efail(t, rc);
    t->code_checked = 1;
    return 0;
}

int tally_anchor_target_latest(tally_anchor_target *t,
                               const uint8_t jid[static 32], tally_anchor *ret)
{
    if (t->backend == TALLY_BACKEND_FILE)
        return file_latest(t, jid, ret);
    int rc = ensure_code(t);
    if (rc < 0)
        return rc;
    rc = tally_anchor_latest(t->eth, t->contract, jid, t->writer, ret);
    return rc < 0 ? efail(t, rc) : 0;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tally_anchor_target_submit(tally_anchor_target *t,
                               const uint8_t jid[static 32], uint64_t seq,
                               const uint8_t head[static 32],
                               tally_checkpoint_info *ret)
{
    if (seq == 0)
        return -EINVAL;
    tally_checkpoint_info c;
    int rc = tally_anchor_target_describe(t, &c);
    if (rc < 0)
        return rc;
    c.seq = seq;
    memcpy(c.head, head, 32);
    if (t->backend == TALLY_BACKEND_FILE) {
        c.anchored_ns = realtime_ns();
        rc = file_submit(t, jid, seq, head, c.anchored_ns);
        if (rc < 0)
            return rc;
        *ret = c;
        return 0;
    }
    uint8_t sender[20];
    if (tally_eth_sender(t->eth, sender) < 0 || memcmp(sender, t->writer, 20) != 0)
        return tfail(t, -ENOKEY,
                     "anchor seq %" PRIu64 ": the handle cannot send as the "
                     "target's writer", seq);
    rc = ensure_code(t);
    if (rc < 0)
        return rc;
    tally_eth_receipt r;
    rc = tally_anchor_submit(t->eth, t->contract, jid, seq, head, &r);
    if (rc < 0)
        return efail(t, rc);
    c.block_number = r.block_number;
    memcpy(c.block_hash, r.block_hash, 32);
    memcpy(c.tx_hash, r.tx_hash, 32);
    c.anchored_ns = realtime_ns();
    *ret = c;
    return 0;
}

int tally_anchor_target_events(tally_anchor_target *t,
                               const uint8_t jid[static 32],
                               tally_anchor_event **ret)
{
    if (t->backend != TALLY_BACKEND_ETH)
        return tfail(t, -EOPNOTSUPP, "the file backend keeps no history");
    int rc = ensure_code(t);
    if (rc < 0)
        return rc;
    rc = tally_anchor_events(t->eth, t->contract, jid, t->writer, 0, ret);
    return rc < 0 ? efail(t, rc) : rc;
}

/* Same backend, chain, contract and writer: a CHECKPOINT record made
 * through another configuration does not describe this target's state. */
int cp_target_same(const tally_checkpoint_info *a, const tally_checkpoint_info *b)
{
    return a->backend == b->backend && a->chain_id == b->chain_id &&
           memcmp(a->contract, b->contract, 20) == 0 &&
           memcmp(a->writer, b->writer, 20) == 0;
}

void cp_target_name(const tally_checkpoint_info *c, char *out, size_t outsz)
{
    if (c->backend == TALLY_BACKEND_FILE) {
        snprintf(out, outsz, "anchor file");
        return;
    }
    char ca[43], wa[43];
    cp_eth_address_format(c->contract, ca);
    cp_eth_address_format(c->writer, wa);
    snprintf(out, outsz, "chain %" PRIu64 " contract %s writer %s",
             c->chain_id, ca, wa);
}
