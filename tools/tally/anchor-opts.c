/*
 * anchor-opts.c — the anchor options of the `tally` subcommands, parsed and
 * checked in one place, and the shared ways of reporting what the anchor
 * target says (freshness verdicts, endpoint disagreement, checkpointer
 * rounds).
 *
 * The configuration comes from the caller only — flags, then environment —
 * never from the journal directory, which is what the anchor distrusts
 * (FORMAT.md section 9.2).
 */
#include "anchor-opts.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "keysource.h"

/* Which chain options came as flags (an environment variable that does not
 * apply is ignored; a flag that does not apply is an error). */
#define GIVEN_CONTRACT 1u
#define GIVEN_SIGNER   2u
#define GIVEN_QUORUM   4u
#define GIVEN_CHAIN_ID 8u
#define GIVEN_CONFIRM  16u

static unsigned given_flags(const struct anchor_opts *o)
{
    unsigned g = 0;

    /* The flag-given pointers are set before the environment is read. */
    if (o->contract != NULL) g |= GIVEN_CONTRACT;
    if (o->signer_key_file != NULL) g |= GIVEN_SIGNER;
    if (o->quorum != 0) g |= GIVEN_QUORUM;
    if (o->chain_id != 0) g |= GIVEN_CHAIN_ID;
    if (o->confirmations != 0) g |= GIVEN_CONFIRM;
    return g;
}

void anchor_opts_init(struct anchor_opts *o)
{
    memset(o, 0, sizeof *o);
}

void anchor_opts_free(struct anchor_opts *o)
{
    free(o->env_rpc);
    o->env_rpc = NULL;
}

static int is_rpc_url(const char *s)
{
    return (strncmp(s, "http://", 7) == 0 && s[7] != '\0') ||
           (strncmp(s, "https://", 8) == 0 && s[8] != '\0');
}

int anchor_opt(const struct cli_cmd *self, struct anchor_opts *o, int code,
               const char *arg)
{
    uint8_t addr[TALLY_ADDRESS_BYTES];
    uint64_t v;

    switch (code) {
    case AOPT_RPC:
        if (!is_rpc_url(arg))
            return cli_usage_error(self, "--rpc must be an http:// or https:// "
                                   "URL");
        if (o->n_rpc == TALLY_ETH_MAX_RPC)
            return cli_usage_error(self, "at most %u --rpc URLs",
                                   TALLY_ETH_MAX_RPC);
        o->rpc[o->n_rpc++] = arg;
        return EXIT_OK;
    case AOPT_RPC_QUORUM:
        if (cli_parse_u64(arg, &v) < 0 || v == 0 || v > TALLY_ETH_MAX_RPC)
            return cli_usage_error(self, "--rpc-quorum must be 1-%u",
                                   TALLY_ETH_MAX_RPC);
        o->quorum = v;
        return EXIT_OK;
    case AOPT_CHAIN_ID:
        if (cli_parse_u64(arg, &v) < 0 || v == 0)
            return cli_usage_error(self, "--chain-id must be a positive number");
        o->chain_id = v;
        return EXIT_OK;
    case AOPT_CONTRACT:
        if (tally_eth_address_parse(arg, addr) < 0)
            return cli_usage_error(self, "--contract must be an address (0x and "
                                   "40 hex digits, EIP-55 checksum if mixed "
                                   "case)");
        o->contract = arg;
        return EXIT_OK;
    case AOPT_FROM:
        if (tally_eth_address_parse(arg, addr) < 0)
            return cli_usage_error(self, "--from must be an address (0x and 40 "
                                   "hex digits, EIP-55 checksum if mixed "
                                   "case)");
        o->from = arg;
        return EXIT_OK;
    case AOPT_SIGNER_KEY_FILE:
        if (arg[0] == '\0')
            return cli_usage_error(self, "--signer-key-file needs a path");
        o->signer_key_file = arg;
        return EXIT_OK;
    case AOPT_CONFIRMATIONS:
        if (cli_parse_u64(arg, &v) < 0 || v > 1000)
            return cli_usage_error(self, "--confirmations must be 0-1000");
        o->confirmations = v;
        return EXIT_OK;
    case AOPT_ANCHOR_FILE:
        if (arg[0] == '\0')
            return cli_usage_error(self, "--anchor-file needs a path");
        o->anchor_file = arg;
        return EXIT_OK;
    default:
        return ANCHOR_OPT_NONE;
    }
}

static const char *env(const char *name)
{
    const char *s = getenv(name);
    return s != NULL && s[0] != '\0' ? s : NULL;
}

int anchor_opts_finish(const struct cli_cmd *self, struct anchor_opts *o,
                       unsigned need)
{
    unsigned given = given_flags(o);
    const char *s;

    if (o->anchor_file != NULL) {
        if (need & ANCHOR_NO_FILE)
            return cli_usage_error(self, "--anchor-file does not apply here");
        if (o->n_rpc > 0 || given != 0 || o->from != NULL)
            return cli_usage_error(self, "--anchor-file excludes the chain "
                                   "options (--rpc, --contract, --from, ...)");
        o->configured = 1;
        return EXIT_OK;
    }
    if (o->n_rpc == 0 && (s = env("TALLY_RPC_URL")) != NULL) {
        char *save = NULL, *tok;
        o->env_rpc = strdup(s);
        if (o->env_rpc == NULL) {
            cli_error(self, "reading", "TALLY_RPC_URL", strerror(ENOMEM));
            return EXIT_OPERATIONAL;
        }
        for (tok = strtok_r(o->env_rpc, " \t\n", &save); tok != NULL;
             tok = strtok_r(NULL, " \t\n", &save)) {
            if (!is_rpc_url(tok))
                return cli_usage_error(self, "TALLY_RPC_URL must hold http:// "
                                       "or https:// URLs separated by spaces");
            if (o->n_rpc == TALLY_ETH_MAX_RPC)
                return cli_usage_error(self, "TALLY_RPC_URL: at most %u URLs",
                                       TALLY_ETH_MAX_RPC);
            o->rpc[o->n_rpc++] = tok;
        }
    }
    if (o->n_rpc == 0) {
        if (given != 0 || o->from != NULL)
            return cli_usage_error(self, "the chain options need an endpoint: "
                                   "--rpc URL or TALLY_RPC_URL");
        o->configured = 0;
        return EXIT_OK;
    }
    o->configured = 1;
    if (o->contract == NULL && (s = env("TALLY_CONTRACT")) != NULL) {
        uint8_t addr[TALLY_ADDRESS_BYTES];
        if (tally_eth_address_parse(s, addr) < 0)
            return cli_usage_error(self, "TALLY_CONTRACT is not an address");
        o->contract = s;
    }
    if ((need & ANCHOR_NEED_CONTRACT) && o->contract == NULL)
        return cli_usage_error(self, "the anchor contract is needed: --contract "
                               "ADDR or TALLY_CONTRACT (see 'tally "
                               "anchor-deploy')");
    if (!(need & ANCHOR_NEED_CONTRACT) && (given & GIVEN_CONTRACT))
        return cli_usage_error(self, "--contract does not apply here");
    if (o->from != NULL && o->signer_key_file != NULL)
        return cli_usage_error(self, "--from and --signer-key-file exclude each "
                               "other");
    if (o->from == NULL && o->signer_key_file == NULL)
        o->signer_key_file = env("TALLY_SIGNER_KEY_FILE");
    if ((need & ANCHOR_NEED_SENDER) && o->from == NULL &&
        o->signer_key_file == NULL)
        return cli_usage_error(self, "the writer account is needed: --from ADDR "
                               "or --signer-key-file FILE (or "
                               "TALLY_SIGNER_KEY_FILE)");
    if (o->quorum != 0 &&
        (o->quorum > o->n_rpc || 2 * o->quorum <= o->n_rpc))
        return cli_usage_error(self, "--rpc-quorum %llu is not a majority of %zu "
                               "endpoints", (unsigned long long)o->quorum,
                               o->n_rpc);
    return EXIT_OK;
}

int anchor_open(const struct cli_cmd *self, const struct anchor_opts *o,
                int eth_only, struct anchor *ret)
{
    tally_eth_options eo;
    uint8_t from[TALLY_ADDRESS_BYTES], contract[TALLY_ADDRESS_BYTES];
    uint8_t *key = NULL;
    struct anchor a = { NULL, NULL };
    int rc;

    if (o->anchor_file != NULL) {
        rc = tally_anchor_target_file(&a.target, o->anchor_file);
        if (rc < 0)
            return cli_fail(self, "opening anchor file", o->anchor_file, rc,
                            NULL);
        *ret = a;
        return EXIT_OK;
    }
    memset(&eo, 0, sizeof eo);
    eo.rpc_urls = o->rpc;
    eo.rpc_count = o->n_rpc;
    eo.quorum = (unsigned)o->quorum;
    eo.chain_id = o->chain_id;
    eo.confirmations = (unsigned)o->confirmations;
    if (o->from != NULL) {
        if (tally_eth_address_parse(o->from, from) < 0)
            return cli_usage_error(self, "--from is not an address");
        eo.from = from;
    } else if (o->signer_key_file != NULL) {
        key = sodium_malloc(TALLY_ETH_KEY_BYTES);
        if (key == NULL) {
            cli_error(self, "allocating locked memory for", "the signer key",
                      strerror(ENOMEM));
            return EXIT_OPERATIONAL;
        }
        if (tally_keysource_is_spec(o->signer_key_file)) {
            /* --signer-key-source: "dstack:" alone derives the anchor's own
             * key, not the journal's. */
            const tally_keysource_opts ko = {
                .flags = TALLY_KEYSOURCE_SCRUB_ENV };
            const char *spec = strcmp(o->signer_key_file, "dstack:") == 0
                                   ? "dstack:" TALLY_KEYSOURCE_DSTACK_ANCHOR_PATH
                                   : o->signer_key_file;
            char err[512];
            rc = tally_keysource_load(spec, &ko, key, err, sizeof err);
            if (rc < 0) {
                sodium_free(key); /* wipes */
                cli_error(self, "loading signer key from", spec, err);
                return rc == -EINVAL ? EXIT_USAGE : EXIT_KEY;
            }
        } else {
            rc = tally_eth_key_load(o->signer_key_file, key);
            if (rc < 0) {
                sodium_free(key); /* wipes */
                cli_error(self, "loading signer key file", o->signer_key_file,
                          tally_strerror(rc));
                return EXIT_KEY;
            }
        }
        eo.signer_key = key;
    }
    rc = tally_eth_open(&a.eth, &eo);
    if (key != NULL)
        sodium_free(key); /* the handle keeps its own locked copy */
    if (rc < 0)
        return cli_fail(self, "opening the RPC endpoints", NULL, rc, NULL);
    if (!eth_only) {
        if (tally_eth_address_parse(o->contract, contract) < 0) {
            tally_eth_close(a.eth);
            return cli_usage_error(self, "the contract is not an address");
        }
        rc = tally_anchor_target_eth(&a.target, a.eth, contract, NULL);
        if (rc < 0) {
            tally_eth_close(a.eth);
            return cli_fail(self, "setting up the anchor target", NULL, rc,
                            NULL);
        }
    }
    *ret = a;
    return EXIT_OK;
}

void anchor_close(struct anchor *a)
{
    tally_anchor_target_free(a->target);
    tally_eth_close(a->eth);
    a->target = NULL;
    a->eth = NULL;
}

void anchor_warn_disagreement(const struct cli_cmd *self,
                              const struct anchor *a, int rc)
{
    const char *d;

    /* TALLY_ECHAIN: the failure's own message reports it already. */
    if (a->eth == NULL || rc == TALLY_ECHAIN ||
        (d = tally_eth_disagreement(a->eth)) == NULL)
        return;
    fprintf(stderr, "%s%s: warning: RPC endpoints disagree: %s\n",
            CLI_WHO(self), d);
}

static int is_verdict(int rc)
{
    return rc == TALLY_EROLLBACK || rc == TALLY_EFORK ||
           rc == TALLY_EDELETED || rc == TALLY_ESTALE;
}

int anchor_check(const struct cli_cmd *self, struct anchor *a, const char *dir,
                 const uint8_t *journal_id, const uint8_t *master_key,
                 tally_freshness *f)
{
    int rc = tally_freshness_check(a->target, dir, journal_id, master_key, f);
    size_t n = strnlen(f->message, sizeof f->message);

    anchor_warn_disagreement(self, a, rc);
    if (rc == 0)
        return 0;
    fprintf(stderr, "%s%s: %s: %.*s\n", CLI_WHO(self), dir, (int)n,
            n > 0 ? f->message : tally_strerror(rc));
    if (is_verdict(rc))
        fprintf(stderr, "%s%s: refusing %s: verdict %s (exit %d)\n",
                CLI_WHO(self), dir, tally_verdict_name(f->verdict),
                tally_exit_code(rc));
    return rc;
}

/* ---- the checkpointer's rounds ---------------------------------------------- */

void anchor_report_rounds(const struct cli_cmd *self, tally_checkpointer *c,
                          uint64_t seen[static 3], int *was_failing,
                          int all_rounds)
{
    tally_checkpoint_status s;
    char tx[2 * TALLY_ETH_HASH_BYTES + 1];
    /* `tally checkpoint` prints only rounds; others say whose lines these are */
    const char *who = strcmp(self->name, "checkpoint") == 0 ? "" : "checkpoint: ";

    tally_checkpointer_status(c, &s);
    if (s.rounds == seen[0])
        return;
    seen[0] = s.rounds;
    if (s.consecutive_failures > 0) {
        if (s.failures == seen[2])
            return;
        seen[2] = s.failures;
        fprintf(stderr, "%s%s: %sanchoring failed (%llu in a row, "
                "retrying): %.*s; lag %llu records, %.1f s\n", CLI_WHO(self), who,
                (unsigned long long)s.consecutive_failures,
                (int)strnlen(s.last_errmsg, sizeof s.last_errmsg),
                s.last_errmsg[0] != '\0' ? s.last_errmsg
                                         : tally_strerror(s.last_error),
                (unsigned long long)s.lag_records, (double)s.lag_ms / 1000.0);
        *was_failing = 1;
        return;
    }
    if (s.anchors != seen[1] && s.has_last) {
        seen[1] = s.anchors;
        if (s.last.backend == TALLY_BACKEND_ETH) {
            cli_hex(s.last.tx_hash, sizeof s.last.tx_hash, tx);
            fprintf(stderr, "%s%s: %sanchored seq %llu in block "
                    "%llu (tx 0x%.16s...); lag %llu records\n", CLI_WHO(self), who,
                    (unsigned long long)s.last.seq,
                    (unsigned long long)s.last.block_number, tx,
                    (unsigned long long)s.lag_records);
        } else {
            fprintf(stderr, "%s%s: %sanchored seq %llu in the "
                    "anchor file; lag %llu records\n", CLI_WHO(self), who,
                    (unsigned long long)s.last.seq,
                    (unsigned long long)s.lag_records);
        }
        *was_failing = 0;
        return;
    }
    if (*was_failing || all_rounds)
        fprintf(stderr, "%s%s: %s%snothing new to anchor (seq "
                "%llu anchored, head %llu); lag %llu records\n", CLI_WHO(self), who,
                *was_failing ? "anchor target reachable again; " : "",
                (unsigned long long)s.anchored_seq,
                (unsigned long long)s.head_seq,
                (unsigned long long)s.lag_records);
    *was_failing = 0;
}

struct anchor_reporter {
    const struct cli_cmd *self;
    tally_checkpointer *c;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

static void *reporter_main(void *arg)
{
    struct anchor_reporter *r = arg;
    uint64_t seen[3] = { 0, 0, 0 };
    int failing = 0;
    struct timespec ts;

    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        anchor_report_rounds(r->self, r->c, seen, &failing, 0);
        pthread_mutex_lock(&r->mu);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (!r->stop)
            (void)pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    /* What happened since the last look. */
    anchor_report_rounds(r->self, r->c, seen, &failing, 0);
    return NULL;
}

int anchor_reporter_start(struct anchor_reporter **ret,
                          const struct cli_cmd *self, tally_checkpointer *c)
{
    struct anchor_reporter *r = calloc(1, sizeof *r);
    int rc;

    if (r == NULL)
        return -ENOMEM;
    r->self = self;
    r->c = c;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    rc = pthread_create(&r->thread, NULL, reporter_main, r);
    if (rc != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return -rc;
    }
    *ret = r;
    return 0;
}

void anchor_reporter_stop(struct anchor_reporter *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void anchor_checkpointer_options(uint32_t every_ms,
                                 tally_checkpointer_options *ret)
{
    uint64_t max = 2 * (uint64_t)every_ms;

    if (max < 2000)
        max = 2000;
    if (max > 30000)
        max = 30000;
    memset(ret, 0, sizeof *ret);
    ret->every_ms = every_ms;
    ret->backoff_min_ms = 500;
    ret->backoff_max_ms = (uint32_t)max;
}
