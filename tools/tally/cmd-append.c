/*
 * cmd-append.c — `tally append DIR`: appends the lines of stdin (or all of
 * stdin) as records, and with --ack prints each seq once it is durable under
 * the chosen sync policy, so a caller killed at any moment knows exactly
 * which records it may count on.
 *
 * stdin is read with read(2) into our own buffer rather than stdio: batching
 * "the lines that are already there" and waiting for the interval sync while
 * input is idle both need to know whether more input is ready without
 * blocking, which a FILE cannot tell.
 */
#include "anchor-opts.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The help text, with the anchor options, is longer than the 4095 bytes C99
 * promises for a string literal; gcc and clang take any length. */
#pragma GCC diagnostic ignored "-Woverlength-strings"

const char cmd_append_usage[] =
    "Usage: tally append DIR --key-file FILE [--type T] [--key K]\n"
    "                    [--sync always|batch|interval|none] [--interval-ms N]\n"
    "                    [--flush-interval MS] [--flush-block BYTES]\n"
    "                    [--whole] [--ack]\n"
    "                    [anchor options [--anchored] [--anchor-timeout S]\n"
    "                    [--checkpoint-every SECONDS]]\n"
    "\n"
    "Appends records read from stdin to the journal in DIR: each line is one\n"
    "record (its newline removed; an empty line is an empty record; a last\n"
    "line without a newline is a record too), or with --whole all of stdin is\n"
    "one record. A payload may be at most 16 MiB.\n"
    "\n"
    "Opening the journal recovers it: if the previous writer left a torn\n"
    "tail, it is cut and reported on stderr as\n"
    "  tally append: recovered: cut N bytes from SEGMENT, records from seq S\n"
    "  lost (never synced)\n"
    "Only one writer may hold a journal: a second one fails (exit 1).\n"
    "\n"
    "With anchor options the journal must be fresh against its anchor target\n"
    "(see 'tally status'); any other verdict is refused with exit 4 before\n"
    "anything is appended. --anchored and --checkpoint-every run the\n"
    "checkpointer in this process (a 'tally checkpoint' running beside it\n"
    "cannot: it would need the writer lock that tally append holds).\n"
    "\n"
    "Options:\n"
    "  --key-file FILE   master key; default $TALLY_KEY_FILE. Required.\n"
    "  --key-source SPEC or a key source: file:PATH, env:NAME, dstack:[PATH]\n"
    "                    (README \"Keys\"); default $TALLY_KEY_SOURCE\n"
    "  --type T          record type, 0-65279 (0x0-0xfeff); default 0\n"
    "  --key K           record key (at most 1024 bytes) for every record;\n"
    "                    default none. It is stored encrypted like the payload.\n"
    "  --sync POLICY     what is durable when a record is acknowledged\n"
    "                    (default batch):\n"
    "                      always    each record is written and fdatasync'd on\n"
    "                                its own before the next is appended\n"
    "                      batch     the lines already read are written and\n"
    "                                fdatasync'd together (group commit); each\n"
    "                                record is durable when acknowledged\n"
    "                      interval  a background thread syncs every\n"
    "                                --interval-ms; up to that much is lost on\n"
    "                                power failure or a crash\n"
    "                      none      records are buffered in memory and synced\n"
    "                                only at the end (or, with --ack, whenever\n"
    "                                input pauses); a crash loses everything\n"
    "                                not yet synced\n"
    "  --interval-ms N   the period of --sync interval (default 100)\n"
    "  --flush-interval MS  batched flushes (FORMAT.md 6.1): records reach the\n"
    "                    file only every MS ms, in whole blocks, and their\n"
    "                    timestamps are rounded down to MS, so the file does\n"
    "                    not grow with each record; an acknowledgement waits\n"
    "                    for the flush that takes the record (up to MS more)\n"
    "  --flush-block BYTES  every write ends on a multiple of BYTES (512 to\n"
    "                    16M, suffix K or M; default 4K with --flush-interval),\n"
    "                    filled with a PAD record; without --flush-interval,\n"
    "                    blocks are written when full (and at once under\n"
    "                    always/batch, which hides sizes, not timing)\n"
    "  --whole           all of stdin is one record\n"
    "  --ack             print the seq of each record on stdout, one per line,\n"
    "                    once it is durable (fsynced) - for always and batch\n"
    "                    when its append returns, for interval when the\n"
    "                    background sync has covered it, for none after an\n"
    "                    explicit sync (when input pauses and at the end).\n"
    "                    Every acknowledged record survives a crash. Lines\n"
    "                    are written whole (no seq is ever split across two\n"
    "                    writes, even if tally is killed).\n"
    "  --anchored        each record is acknowledged (and the next input read)\n"
    "                    only once it is covered by a confirmed anchor; the\n"
    "                    records waiting together share one anchor transaction\n"
    "  --anchor-timeout S  how long --anchored waits for an anchor (default\n"
    "                    120 s); then tally append fails (exit 1) naming the\n"
    "                    seq that is appended but not anchored\n"
    "  --checkpoint-every SECONDS\n"
    "                    anchor the head every SECONDS from a thread while\n"
    "                    appending; each round is reported on stderr\n"
    "                    (\"tally append: checkpoint: ...\", with the anchor lag).\n"
    "                    A dead or failing node never blocks appends: it is\n"
    "                    retried with backoff and anchoring resumes when it is\n"
    "                    back. Records after the last round stay unanchored\n"
    "                    until the next one (or 'tally checkpoint').\n"
    ANCHOR_OPTS_SHORT_HELP
    "  -h, --help        show this help and exit\n"
    "\n"
    "Without --ack nothing is printed on stdout; every record is synced\n"
    "before tally append exits 0.\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE  key file used when --key-file is not given\n"
    ANCHOR_ENV_HELP;

/* Lines gathered into one tally_append_batch call at most. */
#define BATCH_MAX 1024
#define READ_CHUNK (64u * 1024u)

struct reader {
    char *buf;
    size_t cap, start, end; /* unread bytes are buf[start..end) */
    int eof;
};

struct appender {
    const struct cli_cmd *self;
    const char *dir;
    tally *t;
    tally_sync_policy policy;
    uint32_t interval_ms;
    int ack;
    uint16_t type;
    const char *rkey;
    size_t rkey_len;
    uint64_t appended; /* last seq appended (0: none yet) */
    uint64_t acked;    /* last seq printed */
    /* --ack: our seqs not yet printed, as ranges. They are dense unless
     * the checkpointer appends CHECKPOINT records between our batches,
     * whose seqs are not ours to acknowledge. */
    struct seq_range { uint64_t first, last; } *pending;
    size_t npending, cap_pending;
    tally_checkpointer *cp;  /* --anchored / --checkpoint-every, else NULL */
    int anchored;            /* --anchored: ack only what an anchor covers */
    uint32_t anchor_timeout_ms;
};

/* --anchored: waits until seq is covered by a confirmed anchor. */
static int wait_anchored(struct appender *a, uint64_t seq)
{
    tally_checkpoint_status s;
    char why[640];
    int rc;

    if (!a->anchored)
        return EXIT_OK;
    rc = tally_checkpointer_wait(a->cp, seq, a->anchor_timeout_ms);
    if (rc == 0)
        return EXIT_OK;
    tally_checkpointer_status(a->cp, &s);
    snprintf(why, sizeof why, "seq %llu is appended but not anchored "
             "(%s%s%.*s)", (unsigned long long)seq, tally_strerror(rc),
             s.last_errmsg[0] != '\0' ? "; last anchoring error: " : "",
             (int)strnlen(s.last_errmsg, sizeof s.last_errmsg), s.last_errmsg);
    cli_error(a->self, "waiting for an anchor of", a->dir, why);
    return s.last_error != 0 && tally_exit_code(s.last_error) != EXIT_OK
               ? tally_exit_code(s.last_error)
               : EXIT_OPERATIONAL;
}

/* Reads what stdin has (blocking until something or EOF). The buffer grows
 * only while one line does not fit, up to one maximal payload. */
static int reader_fill(struct reader *r)
{
    ssize_t n;

    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->cap - r->end < READ_CHUNK / 2) {
        size_t cap = r->cap == 0 ? READ_CHUNK : 2 * r->cap;
        char *b;
        if (r->end > (size_t)TALLY_MAX_PAYLOAD)
            return TALLY_ETOOBIG;
        b = realloc(r->buf, cap);
        if (b == NULL)
            return -ENOMEM;
        r->buf = b;
        r->cap = cap;
    }
    do {
        n = read(STDIN_FILENO, r->buf + r->end, r->cap - r->end);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        r->eof = 1;
    r->end += (size_t)n;
    return 0;
}

/* 1 if stdin has input (or EOF) ready within timeout_ms. */
static int input_ready(int timeout_ms)
{
    struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
    int n;

    do {
        n = poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    return n != 0; /* on a poll error, let read() report it */
}

static int fail(struct appender *a, const char *what, int err)
{
    return cli_fail(a->self, what, a->dir, err, tally_errmsg(a->t));
}

static int write_all(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n > 0) {
        w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Prints acknowledgements up to seq. They go to fd 1 directly, in writes of
 * whole lines of at most PIPE_BUF (4096) bytes, which a pipe delivers
 * atomically: whenever this process is killed, the reader has only whole
 * lines, never a number cut in two (stdio could split one across two
 * writes). */
static int ack_upto(struct appender *a, uint64_t seq)
{
    char buf[4096];
    size_t len = 0;
    int rc;

    if (!a->ack)
        return EXIT_OK;
    while (a->npending > 0 && a->pending[0].first <= seq) {
        struct seq_range *r = &a->pending[0];
        if (sizeof buf - len < 24) {
            rc = write_all(STDOUT_FILENO, buf, len);
            if (rc < 0)
                goto fail;
            len = 0;
        }
        a->acked = r->first++;
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%llu\n",
                                (unsigned long long)a->acked);
        if (r->first > r->last)
            memmove(a->pending, a->pending + 1,
                    --a->npending * sizeof *a->pending);
    }
    rc = write_all(STDOUT_FILENO, buf, len);
    if (rc < 0)
        goto fail;
    return EXIT_OK;
fail:
    cli_error(a->self, "writing acknowledgements to", "stdout", strerror(-rc));
    return EXIT_OPERATIONAL;
}

/* Notes that our records got seqs first..last. */
static int note_appended(struct appender *a, uint64_t first, uint64_t last)
{
    a->appended = last;
    if (!a->ack)
        return EXIT_OK;
    if (a->npending > 0 && a->pending[a->npending - 1].last + 1 == first) {
        a->pending[a->npending - 1].last = last;
        return EXIT_OK;
    }
    if (a->npending == a->cap_pending) {
        size_t cap = a->cap_pending ? 2 * a->cap_pending : 16;
        struct seq_range *p = realloc(a->pending, cap * sizeof *p);
        if (p == NULL) {
            cli_error(a->self, "keeping acknowledgements for", a->dir,
                      strerror(ENOMEM));
            return EXIT_OPERATIONAL;
        }
        a->pending = p;
        a->cap_pending = cap;
    }
    a->pending[a->npending].first = first;
    a->pending[a->npending].last = last;
    a->npending++;
    return EXIT_OK;
}

/* Acknowledges what the writer reports durable (interval policy). */
static int ack_durable(struct appender *a)
{
    tally_head_info h;
    int rc;

    if (!a->ack || a->acked >= a->appended)
        return EXIT_OK;
    rc = tally_head(a->t, &h);
    if (rc < 0)
        return fail(a, "reading the head of journal", rc);
    return ack_upto(a, h.durable_seq < a->appended ? h.durable_seq : a->appended);
}

/* Syncs everything appended and acknowledges it. */
static int sync_and_ack(struct appender *a)
{
    int rc;

    if (a->acked >= a->appended)
        return EXIT_OK;
    rc = tally_sync(a->t, 0);
    if (rc < 0)
        return fail(a, "syncing journal", rc);
    return ack_upto(a, a->appended);
}

static int append_records(struct appender *a, const tally_record_in *recs,
                          size_t n)
{
    uint64_t seq;
    size_t i;
    int rc;

    if (n == 0)
        return EXIT_OK;
    if (a->policy == TALLY_SYNC_ALWAYS) {
        /* One sync per record, as the policy says: each is acknowledged
         * before the next one is written. */
        for (i = 0; i < n; i++) {
            if (a->anchored) {
                seq = 0;
                rc = tally_append_anchored(a->t, a->cp, &recs[i],
                                           a->anchor_timeout_ms, &seq);
                if (rc < 0 && seq == 0)
                    return fail(a, "appending to journal", rc);
                if (note_appended(a, seq, seq) != EXIT_OK)
                    return EXIT_OPERATIONAL;
                if (rc < 0 && (rc = wait_anchored(a, seq)) != EXIT_OK)
                    return rc;
            } else {
                rc = tally_append(a->t, &recs[i], &seq);
                if (rc < 0)
                    return fail(a, "appending to journal", rc);
                if (note_appended(a, seq, seq) != EXIT_OK)
                    return EXIT_OPERATIONAL;
            }
            rc = ack_upto(a, seq);
            if (rc != EXIT_OK)
                return rc;
        }
        return EXIT_OK;
    }
    rc = tally_append_batch(a->t, recs, n, &seq);
    if (rc < 0)
        return fail(a, "appending to journal", rc);
    if (note_appended(a, seq, seq + n - 1) != EXIT_OK)
        return EXIT_OPERATIONAL;
    if (a->anchored) {
        /* One wait for the batch: a round anchors the head, which covers
         * all of it (and a round syncs before it anchors). */
        rc = wait_anchored(a, a->appended);
        return rc != EXIT_OK ? rc : ack_upto(a, a->appended);
    }
    if (a->policy == TALLY_SYNC_BATCH)
        return ack_upto(a, a->appended); /* durable on return */
    if (a->policy == TALLY_SYNC_INTERVAL)
        return ack_durable(a);
    return EXIT_OK; /* NONE: acknowledged after an explicit sync */
}

/* Called when no whole line is buffered and we are about to block on stdin:
 * the moment to acknowledge what became durable meanwhile. */
static int before_wait(struct appender *a)
{
    int rc;

    if (!a->ack || a->acked >= a->appended)
        return EXIT_OK;
    if (a->policy == TALLY_SYNC_NONE) {
        if (input_ready(0))
            return EXIT_OK;
        return sync_and_ack(a);
    }
    if (a->policy == TALLY_SYNC_INTERVAL) {
        /* Wake up once per interval to report the background syncs, until
         * input arrives or everything is acknowledged. */
        for (;;) {
            rc = ack_durable(a);
            if (rc != EXIT_OK || a->acked >= a->appended)
                return rc;
            if (input_ready((int)a->interval_ms))
                return ack_durable(a);
        }
    }
    return EXIT_OK;
}

static void fill_rec(const struct appender *a, tally_record_in *rec,
                     const char *data, size_t len)
{
    memset(rec, 0, sizeof *rec);
    rec->type = a->type;
    rec->key = a->rkey;
    rec->key_len = a->rkey_len;
    rec->payload = data;
    rec->payload_len = len;
}

static int run_lines(struct appender *a, struct reader *r,
                     tally_record_in *recs)
{
    size_t n, pos;
    int rc;

    for (;;) {
        /* Gather the whole lines already buffered. */
        n = 0;
        pos = r->start;
        while (n < BATCH_MAX && pos < r->end) {
            char *nl = memchr(r->buf + pos, '\n', r->end - pos);
            if (nl == NULL)
                break;
            fill_rec(a, &recs[n++], r->buf + pos, (size_t)(nl - (r->buf + pos)));
            pos = (size_t)(nl - r->buf) + 1;
        }
        if (n == 0 && r->eof && r->end > r->start) {
            /* A last line without its newline. */
            fill_rec(a, &recs[n++], r->buf + r->start, r->end - r->start);
            pos = r->end;
        }
        if (n > 0) {
            rc = append_records(a, recs, n);
            if (rc != EXIT_OK)
                return rc;
            r->start = pos;
            continue;
        }
        if (r->eof)
            return EXIT_OK;
        rc = before_wait(a);
        if (rc != EXIT_OK)
            return rc;
        rc = reader_fill(r);
        if (rc == TALLY_ETOOBIG) {
            cli_error(a->self, "reading stdin for", a->dir,
                      "a line is longer than the 16 MiB payload limit");
            return EXIT_OPERATIONAL;
        }
        if (rc < 0)
            return cli_fail(a->self, "reading stdin for", a->dir, rc, NULL);
    }
}

static int run_whole(struct appender *a, struct reader *r)
{
    tally_record_in rec;
    int rc;

    while (!r->eof) {
        rc = reader_fill(r);
        if (rc == 0 && r->end > (size_t)TALLY_MAX_PAYLOAD)
            rc = TALLY_ETOOBIG;
        if (rc == TALLY_ETOOBIG) {
            cli_error(a->self, "reading stdin for", a->dir,
                      "input is larger than the 16 MiB payload limit");
            return EXIT_OPERATIONAL;
        }
        if (rc < 0)
            return cli_fail(a->self, "reading stdin for", a->dir, rc, NULL);
    }
    fill_rec(a, &rec, r->buf != NULL ? r->buf : "", r->end);
    return append_records(a, &rec, 1);
}

enum { OPT_KEY_FILE = 256, OPT_TYPE, OPT_KEY, OPT_SYNC, OPT_INTERVAL,
       OPT_WHOLE, OPT_ACK, OPT_ANCHORED, OPT_ANCHOR_TIMEOUT,
       OPT_CHECKPOINT_EVERY, OPT_FLUSH_INTERVAL, OPT_FLUSH_BLOCK };

int cmd_append(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "type", required_argument, NULL, OPT_TYPE },
        { "key", required_argument, NULL, OPT_KEY },
        { "sync", required_argument, NULL, OPT_SYNC },
        { "interval-ms", required_argument, NULL, OPT_INTERVAL },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        { "flush-block", required_argument, NULL, OPT_FLUSH_BLOCK },
        { "whole", no_argument, NULL, OPT_WHOLE },
        { "ack", no_argument, NULL, OPT_ACK },
        { "anchored", no_argument, NULL, OPT_ANCHORED },
        { "anchor-timeout", required_argument, NULL, OPT_ANCHOR_TIMEOUT },
        { "checkpoint-every", required_argument, NULL, OPT_CHECKPOINT_EVERY },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct appender a;
    struct reader r;
    tally_options opt;
    tally_recovery rec;
    tally_head_info head;
    tally_record_in *recs = NULL;
    const char *key_file = NULL, *key_path;
    uint8_t *key = NULL;
    struct anchor_opts ao;
    struct anchor anc = { NULL, NULL };
    struct anchor_reporter *reporter = NULL;
    tally_checkpointer_options copt;
    tally_freshness fr;
    uint8_t jid[TALLY_ID_BYTES];
    uint64_t v, every = 0;
    int c, rc, whole = 0, have_interval = 0, have_timeout = 0, status;

    anchor_opts_init(&ao);
    memset(&a, 0, sizeof a);
    memset(&r, 0, sizeof r);
    memset(&opt, 0, sizeof opt);
    memset(&rec, 0, sizeof rec);
    a.self = self;
    a.policy = TALLY_SYNC_BATCH;
    a.interval_ms = 100;
    a.rkey = "";
    a.anchor_timeout_ms = 120000;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_TYPE:
            if (cli_parse_u16(optarg, &a.type) < 0 ||
                a.type >= TALLY_TYPE_RESERVED)
                return cli_usage_error(self, "--type must be 0-65279 "
                                       "(0x0-0xfeff)");
            break;
        case OPT_KEY:
            a.rkey = optarg;
            a.rkey_len = strlen(optarg);
            if (a.rkey_len > TALLY_MAX_RKEY)
                return cli_usage_error(self, "--key is longer than %u bytes",
                                       TALLY_MAX_RKEY);
            break;
        case OPT_SYNC:
            if (strcmp(optarg, "always") == 0)
                a.policy = TALLY_SYNC_ALWAYS;
            else if (strcmp(optarg, "batch") == 0)
                a.policy = TALLY_SYNC_BATCH;
            else if (strcmp(optarg, "interval") == 0)
                a.policy = TALLY_SYNC_INTERVAL;
            else if (strcmp(optarg, "none") == 0)
                a.policy = TALLY_SYNC_NONE;
            else
                return cli_usage_error(self, "unknown sync policy '%s' (always, "
                                       "batch, interval or none)", optarg);
            break;
        case OPT_INTERVAL:
            if (cli_parse_u64(optarg, &v) < 0 || v == 0 || v > 3600000)
                return cli_usage_error(self, "--interval-ms must be 1-3600000");
            a.interval_ms = (uint32_t)v;
            have_interval = 1;
            break;
        case OPT_FLUSH_INTERVAL:
            if (cli_parse_u64(optarg, &v) < 0 || v == 0 || v > 3600000)
                return cli_usage_error(self, "--flush-interval must be "
                                       "1-3600000 ms");
            opt.flush_interval_ms = (uint32_t)v;
            break;
        case OPT_FLUSH_BLOCK:
            if (cli_parse_size(optarg, &v) < 0 ||
                v < TALLY_FLUSH_MIN_BLOCK || v > TALLY_FLUSH_MAX_BLOCK)
                return cli_usage_error(self, "--flush-block must be 512 "
                                       "bytes to 16M (suffix K or M)");
            opt.flush_block = (uint32_t)v;
            break;
        case OPT_WHOLE:
            whole = 1;
            break;
        case OPT_ACK:
            a.ack = 1;
            break;
        case OPT_ANCHORED:
            a.anchored = 1;
            break;
        case OPT_ANCHOR_TIMEOUT:
            if (cli_parse_u64(optarg, &v) < 0 || v == 0 || v > 86400)
                return cli_usage_error(self, "--anchor-timeout must be 1-86400 "
                                       "seconds");
            a.anchor_timeout_ms = (uint32_t)(v * 1000);
            have_timeout = 1;
            break;
        case OPT_CHECKPOINT_EVERY:
            if (cli_parse_u64(optarg, &every) < 0 || every == 0 ||
                every > 86400)
                return cli_usage_error(self, "--checkpoint-every must be "
                                       "1-86400 seconds");
            break;
        case 'h':
            return cli_help(self);
        default:
            rc = anchor_opt(self, &ao, c, optarg);
            if (rc == ANCHOR_OPT_NONE)
                return cli_usage_error(self, NULL);
            if (rc != EXIT_OK)
                return rc;
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(self, "expected exactly one DIR argument");
    if (have_interval && a.policy != TALLY_SYNC_INTERVAL)
        return cli_usage_error(self, "--interval-ms applies only to "
                               "--sync interval");
    a.dir = argv[optind];
    if (have_timeout && !a.anchored)
        return cli_usage_error(self, "--anchor-timeout applies only to "
                               "--anchored");
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE or "
                               "TALLY_KEY_FILE");
    rc = anchor_opts_finish(self, &ao, ANCHOR_NEED_CONTRACT | ANCHOR_NEED_SENDER);
    if (rc == EXIT_OK && (a.anchored || every > 0) &&
        !anchor_opts_configured(&ao))
        rc = cli_usage_error(self, "--anchored and --checkpoint-every need an "
                             "anchor target: --rpc URL (or TALLY_RPC_URL) or "
                             "--anchor-file PATH");
    if (rc == EXIT_OK && anchor_opts_configured(&ao))
        rc = anchor_open(self, &ao, 0, &anc);
    if (rc != EXIT_OK) {
        anchor_opts_free(&ao);
        return rc;
    }

    /* A reader of the acknowledgements that goes away must not kill us
     * between a write and its sync: report it as an error instead. */
    signal(SIGPIPE, SIG_IGN);

    if (!whole) {
        recs = calloc(BATCH_MAX, sizeof *recs);
        if (recs == NULL) {
            cli_error(self, "allocating buffers for", a.dir, strerror(ENOMEM));
            return EXIT_OPERATIONAL;
        }
    }
    rc = cli_key_load(self, key_path, &key);
    if (rc != EXIT_OK) {
        free(recs);
        anchor_close(&anc);
        anchor_opts_free(&ao);
        return rc;
    }
    opt.master_key = key;
    opt.sync = a.policy;
    opt.sync_interval_ms = a.interval_ms;
    rc = tally_open(&a.t, a.dir, &opt, &rec);
    if (rc == 0 && anc.target != NULL) {
        /* Judged under the writer lock, before anything is appended; the
         * key authenticates the CHECKPOINT records read. */
        tally_id(a.t, jid);
        rc = anchor_check(self, &anc, a.dir, jid, key, &fr);
        if (rc < 0) {
            (void)tally_close(a.t);
            cli_key_free(key);
            free(recs);
            anchor_close(&anc);
            anchor_opts_free(&ao);
            return tally_exit_code(rc);
        }
    }
    cli_key_free(key); /* the handle keeps its own copy */
    if (rc < 0) {
        free(recs);
        anchor_close(&anc);
        anchor_opts_free(&ao);
        if (rc == -EBUSY) {
            cli_error(self, "opening journal", a.dir,
                      "another writer holds it (LOCK is taken)");
            return tally_exit_code(rc);
        }
        /* The recovery message names file, offset and seq. */
        return cli_fail(self, "opening journal", a.dir, rc, rec.message);
    }
    /* Acknowledgements continue from the head the open found. */
    rc = tally_head(a.t, &head);
    if (rc == 0 && (a.anchored || every > 0)) {
        anchor_checkpointer_options((uint32_t)(every * 1000), &copt);
        rc = tally_checkpointer_start(&a.cp, a.t, a.dir, anc.target, &copt);
        if (rc == 0 && every > 0 &&
            anchor_reporter_start(&reporter, self, a.cp) < 0)
            reporter = NULL; /* the rounds go unreported, nothing else */
    }
    if (rc < 0) {
        status = a.cp == NULL && (a.anchored || every > 0)
                     ? cli_fail(self, "starting the checkpointer for", a.dir,
                                rc, NULL)
                     : fail(&a, "reading the head of journal", rc);
        (void)tally_close(a.t);
        free(recs);
        anchor_close(&anc);
        anchor_opts_free(&ao);
        return status;
    }
    a.appended = a.acked = head.seq;
    if (rec.cut_bytes > 0) {
        fprintf(stderr, "tally append: recovered: cut %llu bytes from %.*s",
                (unsigned long long)rec.cut_bytes,
                (int)strnlen(rec.segment, sizeof rec.segment), rec.segment);
        if (rec.cut_first_seq > 0)
            fprintf(stderr, ", records from seq %llu lost (never synced)",
                    (unsigned long long)rec.cut_first_seq);
        fputc('\n', stderr);
    }

    status = whole ? run_whole(&a, &r) : run_lines(&a, &r, recs);
    if (status == EXIT_OK && a.ack)
        status = sync_and_ack(&a);
    if (a.cp != NULL) {
        tally_checkpoint_status cs;
        anchor_reporter_stop(reporter); /* it reads the checkpointer */
        tally_checkpointer_status(a.cp, &cs);
        rc = tally_checkpointer_stop(a.cp); /* finishes the round in flight */
        if (rc < 0 && every > 0)
            fprintf(stderr, "tally append: checkpoint: anchoring was failing "
                    "at exit (%.*s); seq %llu anchored, head %llu\n",
                    (int)strnlen(cs.last_errmsg, sizeof cs.last_errmsg),
                    cs.last_errmsg[0] != '\0' ? cs.last_errmsg
                                              : tally_strerror(rc),
                    (unsigned long long)cs.anchored_seq,
                    (unsigned long long)cs.head_seq);
    }
    anchor_close(&anc);
    anchor_opts_free(&ao);
    rc = tally_close(a.t);
    if (rc < 0 && status == EXIT_OK)
        status = cli_fail(self, "closing journal", a.dir, rc, NULL);
    free(r.buf);
    free(recs);
    free(a.pending);
    return status;
}
