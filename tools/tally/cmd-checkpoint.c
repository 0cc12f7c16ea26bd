/*
 * cmd-checkpoint.c — `tally checkpoint DIR`: anchors the journal's head on
 * its anchor target once (tally_checkpoint_once), or every N seconds from
 * the library's checkpointer thread until SIGTERM/SIGINT, printing each
 * round and the anchor lag. Each confirmed anchor is followed by a
 * CHECKPOINT record in the journal (FORMAT.md section 9.2).
 *
 * It opens the journal as its writer (the CHECKPOINT records are appends),
 * so it cannot run beside another writer: an application that appends all
 * the time runs the checkpointer in its own process instead (the library
 * API, or `tally append --checkpoint-every`).
 */
#include "anchor-opts.h"

/* The help text, with the shared anchor options, is longer than the 4095
 * bytes C99 promises for a string literal; gcc and clang take any length. */
#pragma GCC diagnostic ignored "-Woverlength-strings"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <time.h>

const char cmd_checkpoint_usage[] =
    "Usage: tally checkpoint DIR --key-file FILE [anchor options]\n"
    "                        [--every SECONDS]\n"
    "\n"
    "Anchors the head (seq, link) of the journal in DIR on its anchor target\n"
    "and, once the anchor is confirmed, appends a CHECKPOINT record to the\n"
    "journal (anchored seq, head, chain id, contract, writer, block number\n"
    "and hash, transaction hash), so the journal carries its anchor history.\n"
    "The head is synced before it is anchored. The journal must be fresh\n"
    "against the target first (see 'tally status'): a rolled back, forked\n"
    "or stale journal is refused with exit 4 and never anchored over.\n"
    "\n"
    "Once (the default): prints\n"
    "  anchored DIR: seq S (head HEX) in block B, tx HEX; CHECKPOINT record\n"
    "  seq R\n"
    "or \"nothing new\" when the head is already anchored (the CHECKPOINT\n"
    "record of the last anchor does not need one of its own), and exits.\n"
    "\n"
    "With --every SECONDS: anchors now and then every SECONDS while there is\n"
    "something new, printing one line per round on stderr with the anchor\n"
    "lag (records and seconds not yet covered by a confirmed anchor). A dead,\n"
    "slow or failing node is retried with backoff (0.5 s doubling, at most\n"
    "twice the period, 2-30 s). SIGTERM or SIGINT finishes the round in\n"
    "flight and exits: 0, or the status of a failure streak still running.\n"
    "\n"
    "tally checkpoint holds the journal's writer lock while it runs, so it\n"
    "cannot run beside 'tally append' or another writer (exit 1, \"another\n"
    "writer holds it\"). A long-running appender anchors in-process instead:\n"
    "'tally append --checkpoint-every SECONDS' (or the library's\n"
    "tally_checkpointer_start).\n"
    "\n"
    "Options:\n"
    "  --key-file FILE   master key; default $TALLY_KEY_FILE. Required.\n"
    "  --key-source SPEC or a key source: file:PATH, env:NAME, dstack:[PATH]\n"
    "                    (README \"Keys\"); default $TALLY_KEY_SOURCE\n"
    "  --every SECONDS   anchor every SECONDS (1-86400) until stopped\n"
    "  -h, --help        show this help and exit\n"
    "\n"
    ANCHOR_OPTS_HELP
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE         key file used when --key-file is not given\n"
    ANCHOR_ENV_HELP;

static void print_anchored(const char *dir, const tally_checkpoint_info *info,
                           uint64_t record_seq)
{
    char h[65], tx[65];

    cli_hex(info->head, 32, h);
    printf("anchored %s: seq %llu (head %s) ", dir,
           (unsigned long long)info->seq, h);
    if (info->backend == TALLY_BACKEND_ETH) {
        cli_hex(info->tx_hash, 32, tx);
        printf("in block %llu, tx 0x%s", (unsigned long long)info->block_number,
               tx);
    } else {
        printf("in the anchor file");
    }
    printf("; CHECKPOINT record seq %llu\n", (unsigned long long)record_seq);
}

static int run_once(const struct cli_cmd *self, const char *dir, tally *t,
                    struct anchor *a)
{
    tally_checkpoint_info info;
    tally_head_info h;
    char err[512] = "";
    int rc;

    rc = tally_checkpoint_once(t, dir, a->target, &info, err, sizeof err);
    anchor_warn_disagreement(self, a, rc);
    if (rc < 0)
        return cli_fail(self, "anchoring", dir, rc, err);
    if (tally_head(t, &h) < 0)
        memset(&h, 0, sizeof h);
    if (rc == 1)
        print_anchored(dir, &info, h.seq);
    else
        printf("nothing new in %s: head seq %llu is covered by the last "
               "anchor\n", dir, (unsigned long long)h.seq);
    return cli_flush_stdout(self);
}

static int run_every(const struct cli_cmd *self, const char *dir, tally *t,
                     struct anchor *a, uint32_t every_ms)
{
    tally_checkpointer_options copt;
    tally_checkpointer *c = NULL;
    tally_checkpoint_status s;
    struct timespec tick = { 0, 200000000L };
    sigset_t set, old;
    uint64_t seen[3] = { 0, 0, 0 };
    int failing = 0, rc, sig;

    /* The signals are taken synchronously here, never delivered to the
     * checkpointer thread, which inherits this mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old);

    anchor_checkpointer_options(every_ms, &copt);
    rc = tally_checkpointer_start(&c, t, dir, a->target, &copt);
    if (rc < 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return cli_fail(self, "starting the checkpointer for", dir, rc, NULL);
    }
    fprintf(stderr, "tally %s: anchoring %s every %u s; SIGTERM or SIGINT "
            "stops\n", self->name, dir, (unsigned)(every_ms / 1000));
    for (;;) {
        sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        anchor_report_rounds(self, c, seen, &failing, 1);
    }
    anchor_report_rounds(self, c, seen, &failing, 1);
    tally_checkpointer_status(c, &s);
    rc = tally_checkpointer_stop(c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    fprintf(stderr, "tally %s: stopped by %s: %llu rounds, %llu anchors; seq "
            "%llu anchored, head %llu\n", self->name,
            sig == SIGTERM ? "SIGTERM" : "SIGINT",
            (unsigned long long)s.rounds, (unsigned long long)s.anchors,
            (unsigned long long)s.anchored_seq,
            (unsigned long long)s.head_seq);
    if (rc < 0)
        return cli_fail(self, "anchoring (failing when stopped)", dir, rc,
                        s.last_errmsg);
    return EXIT_OK;
}

enum { OPT_KEY_FILE = 256, OPT_EVERY };

int cmd_checkpoint(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "every", required_argument, NULL, OPT_EVERY },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct anchor_opts ao;
    struct anchor a;
    tally_options opt;
    tally_recovery rec;
    tally_freshness f;
    tally *t = NULL;
    const char *key_file = NULL, *key_path, *dir;
    uint8_t jid[TALLY_ID_BYTES], *key = NULL;
    uint64_t every = 0;
    int c, rc, status;

    anchor_opts_init(&ao);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_EVERY:
            if (cli_parse_u64(optarg, &every) < 0 || every == 0 ||
                every > 86400)
                return cli_usage_error(self, "--every must be 1-86400 seconds");
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
    dir = argv[optind];
    status = anchor_opts_finish(self, &ao, ANCHOR_NEED_CONTRACT |
                                           ANCHOR_NEED_SENDER);
    if (status == EXIT_OK && !anchor_opts_configured(&ao))
        status = cli_usage_error(self, "an anchor target is needed: --rpc URL "
                                 "(or TALLY_RPC_URL) or --anchor-file PATH");
    key_path = cli_key_path(key_file);
    if (status == EXIT_OK && key_path == NULL)
        status = cli_usage_error(self, "a key is needed: --key-file FILE or "
                                 "TALLY_KEY_FILE");
    if (status == EXIT_OK)
        status = cli_key_load(self, key_path, &key);
    if (status != EXIT_OK) {
        anchor_opts_free(&ao);
        return status;
    }
    status = anchor_open(self, &ao, 0, &a);
    if (status != EXIT_OK) {
        cli_key_free(key);
        anchor_opts_free(&ao);
        return status;
    }

    memset(&opt, 0, sizeof opt);
    memset(&rec, 0, sizeof rec);
    opt.master_key = key;
    opt.sync = TALLY_SYNC_BATCH;
    rc = tally_open(&t, dir, &opt, &rec);
    if (rc < 0) {
        if (rc == -EBUSY)
            cli_error(self, "opening journal", dir, "another writer holds it "
                      "(LOCK is taken); a writer that runs all the time anchors "
                      "in-process: tally append --checkpoint-every");
        else
            (void)cli_fail(self, "opening journal", dir, rc, rec.message);
        status = tally_exit_code(rc);
        goto out;
    }
    /* Judged under the writer lock: what is anchored is what was checked. */
    tally_id(t, jid);
    rc = anchor_check(self, &a, dir, jid, key, &f);
    if (rc < 0) {
        status = tally_exit_code(rc);
        goto out;
    }
    if (every == 0)
        status = run_once(self, dir, t, &a);
    else
        status = run_every(self, dir, t, &a, (uint32_t)(every * 1000));
out:
    if (t != NULL) {
        rc = tally_close(t);
        if (rc < 0 && status == EXIT_OK)
            status = cli_fail(self, "closing journal", dir, rc, NULL);
    }
    cli_key_free(key);
    anchor_close(&a);
    anchor_opts_free(&ao);
    return status;
}
