/*
 * anchor-opts.h — the anchor options every `tally` subcommand that talks to
 * an anchor target shares (--rpc, --contract, --from, --signer-key-file,
 * --anchor-file, ...): parsed in one place (anchor-opts.c), turned into a
 * tally_eth handle and an anchor target (checkpoint/checkpoint.h), and the
 * freshness verdict reported the same way by every command.
 *
 * A subcommand splices ANCHOR_LONG_OPTIONS into its getopt_long table,
 * hands every option code it does not know to anchor_opt(), calls
 * anchor_opts_finish() after parsing (flags first, then the environment:
 * TALLY_RPC_URL, TALLY_CONTRACT, TALLY_SIGNER_KEY_FILE), and, when
 * anchor_opts_configured(), anchor_open().
 */
#ifndef TALLY_CLI_ANCHOR_OPTS_H
#define TALLY_CLI_ANCHOR_OPTS_H

#include "common.h"

#include "checkpoint.h"

/* Option codes, above every subcommand's own (they start at 256). */
enum {
    AOPT_RPC = 0x1000,
    AOPT_RPC_QUORUM,
    AOPT_CHAIN_ID,
    AOPT_CONTRACT,
    AOPT_FROM,
    AOPT_SIGNER_KEY_FILE,
    AOPT_CONFIRMATIONS,
    AOPT_ANCHOR_FILE,
};

#define ANCHOR_LONG_OPTIONS                                                  \
    { "rpc", required_argument, NULL, AOPT_RPC },                            \
    { "rpc-quorum", required_argument, NULL, AOPT_RPC_QUORUM },              \
    { "chain-id", required_argument, NULL, AOPT_CHAIN_ID },                  \
    { "contract", required_argument, NULL, AOPT_CONTRACT },                  \
    { "from", required_argument, NULL, AOPT_FROM },                          \
    { "writer", required_argument, NULL, AOPT_FROM },                        \
    { "signer-key-file", required_argument, NULL, AOPT_SIGNER_KEY_FILE },    \
    { "signer-key-source", required_argument, NULL, AOPT_SIGNER_KEY_FILE },  \
    { "confirmations", required_argument, NULL, AOPT_CONFIRMATIONS },        \
    { "anchor-file", required_argument, NULL, AOPT_ANCHOR_FILE }

/* The help text of the options, for the usage strings (string literal). */
#define ANCHOR_OPTS_USAGE                                                    \
    "                    [--rpc URL]... [--rpc-quorum K] [--chain-id N]\n"     \
    "                    [--contract ADDR] [--from ADDR | --signer-key-file F]\n" \
    "                    [--confirmations N] | [--anchor-file PATH]\n"

#define ANCHOR_OPTS_HELP                                                     \
    "Anchor options (the anchor target; see README \"Anchoring on a chain\"):\n" \
    "  --rpc URL            a JSON-RPC endpoint (http:// or https://) of the\n" \
    "                       chain; repeat for up to 8. Every read goes to all\n" \
    "                       of them and must agree; a disagreement is reported.\n" \
    "                       Default: $TALLY_RPC_URL (URLs separated by spaces)\n" \
    "  --rpc-quorum K       reads need K endpoints giving the same answer\n"  \
    "                       (a majority: 2K > number of URLs) instead of all;\n" \
    "                       an outvoted endpoint is still reported\n"        \
    "  --chain-id N         the chain id the endpoints must report (default:\n" \
    "                       whatever they agree on)\n"                       \
    "  --contract ADDR      the JournalAnchor contract ('tally anchor-deploy');\n" \
    "                       default $TALLY_CONTRACT\n"                       \
    "  --from ADDR          the writer account: an account the node keeps\n"  \
    "                       unlocked sends the anchors (development nodes);\n" \
    "                       for commands that only read, whose anchors to check\n" \
    "                       (--writer ADDR is the same option: 'tally cat' has\n" \
    "                       its own --from)\n"                              \
    "  --signer-key-file F  the writer's secp256k1 private key (64 hex digits\n" \
    "                       or 32 bytes; mode 0600): transactions are signed\n" \
    "                       here and sent raw. Default $TALLY_SIGNER_KEY_FILE.\n" \
    "                       The key is never printed.\n"                     \
    "  --signer-key-source SPEC  or the signer key from a key source:\n"     \
    "                       file:PATH, env:NAME, dstack:[PATH] (the dstack\n" \
    "                       KMS; dstack: alone is dstack:/tally/anchor, so\n" \
    "                       no signing key is stored on disk). README \"Keys\"\n" \
    "  --confirmations N    blocks an anchor transaction's block needs,\n"   \
    "                       itself included, before it counts (default 1)\n"  \
    "  --anchor-file PATH   development only: keep anchors in a file outside\n" \
    "                       the journal directory instead of on a chain. NOT\n" \
    "                       rollback-proof on its own: whoever can put back an\n" \
    "                       old journal can usually put back an old file too.\n"

/* The short form, for commands whose help refers to 'tally help status'. */
#define ANCHOR_OPTS_SHORT_HELP                                               \
    "  --rpc URL, --rpc-quorum K, --chain-id N, --contract ADDR,\n"          \
    "  --from ADDR | --writer ADDR | --signer-key-file F, --confirmations N,\n" \
    "  --anchor-file PATH\n"                                                 \
    "                   the anchor target (see 'tally help status'; default\n" \
    "                   $TALLY_RPC_URL, $TALLY_CONTRACT, $TALLY_SIGNER_KEY_FILE)\n"

#define ANCHOR_ENV_HELP                                                      \
    "  TALLY_RPC_URL          JSON-RPC endpoint(s) when --rpc is not given\n" \
    "  TALLY_CONTRACT         contract address when --contract is not given\n" \
    "  TALLY_SIGNER_KEY_FILE  signer key file when neither --from nor\n"     \
    "                         --signer-key-file is given\n"

struct anchor_opts {
    const char *rpc[TALLY_ETH_MAX_RPC];
    size_t n_rpc;
    char *env_rpc;           /* our copy of $TALLY_RPC_URL, split in place */
    uint64_t quorum;
    uint64_t chain_id;
    const char *contract;
    const char *from;
    const char *signer_key_file;
    uint64_t confirmations;
    const char *anchor_file;
    int configured;          /* set by anchor_opts_finish */
};

/* What anchor_opts_finish requires. */
#define ANCHOR_NEED_CONTRACT 1u /* a target (not anchor-deploy) */
#define ANCHOR_NEED_SENDER   2u /* --from or a signer key */
#define ANCHOR_NO_FILE       4u /* --anchor-file makes no sense here */

void anchor_opts_init(struct anchor_opts *o);
void anchor_opts_free(struct anchor_opts *o);

/* An option code from getopt_long: ANCHOR_OPT_NONE if it is not an anchor
 * option, else EXIT_OK or (after reporting it) EXIT_USAGE. */
#define ANCHOR_OPT_NONE (-1)
int anchor_opt(const struct cli_cmd *self, struct anchor_opts *o, int code,
               const char *arg);

/* Applies the environment and checks the combination. Returns EXIT_OK or
 * reports and returns EXIT_USAGE. Sets o->configured when an anchor target
 * is given at all (--rpc, $TALLY_RPC_URL or --anchor-file). */
int anchor_opts_finish(const struct cli_cmd *self, struct anchor_opts *o,
                       unsigned need);

static inline int anchor_opts_configured(const struct anchor_opts *o)
{
    return o->configured;
}

/* An open anchor target and the handle it borrows. */
struct anchor {
    tally_eth *eth;               /* NULL for the file backend */
    tally_anchor_target *target;
};

/* Opens the Ethereum handle (loading and wiping the signer key) and, unless
 * eth_only, the target. Returns an exit status (reported on failure). */
int anchor_open(const struct cli_cmd *self, const struct anchor_opts *o,
                int eth_only, struct anchor *ret);
void anchor_close(struct anchor *a);

/* Prints the disagreement of the last read, if any, as a warning (not
 * after a TALLY_ECHAIN failure rc, whose message says it). */
void anchor_warn_disagreement(const struct cli_cmd *self,
                              const struct anchor *a, int rc);

/* The freshness check of dir (journal_id may be NULL, master_key may be
 * NULL). Returns the library's code (0 = fresh) and fills *f. When the
 * result is not fresh, reports it on stderr as
 *   tally CMD: DIR: <verdict message naming both sides>
 *   tally CMD: refusing DIR: verdict rolled_back (exit 4)
 * (the second line only for a verdict). */
int anchor_check(const struct cli_cmd *self, struct anchor *a, const char *dir,
                 const uint8_t *journal_id, const uint8_t *master_key,
                 tally_freshness *f);

/* The background checkpointer's rounds since the last call, as lines on
 * stderr:
 *   tally CMD: checkpoint: anchored seq S in block B (tx 0x...); lag R records
 *   tally CMD: checkpoint: anchoring failed (N in a row, retrying): MSG;
 *     lag R records, T s
 * all_rounds: also rounds that found nothing new. seen holds the rounds,
 * anchors and failures already reported and *was_failing the last state
 * (start with zeros). */
void anchor_report_rounds(const struct cli_cmd *self, tally_checkpointer *c,
                          uint64_t seen[static 3], int *was_failing,
                          int all_rounds);

/* A thread that calls anchor_report_rounds every 200 ms, for commands whose
 * main thread is busy (tally append --checkpoint-every). */
struct anchor_reporter;
int anchor_reporter_start(struct anchor_reporter **ret,
                          const struct cli_cmd *self, tally_checkpointer *c);
void anchor_reporter_stop(struct anchor_reporter *r);

/* The checkpointer's options for a period of every_ms: backoff after a
 * failure from 0.5 s, doubling, at most twice the period (2 s to 30 s), so
 * that anchoring resumes soon after the node is back. */
void anchor_checkpointer_options(uint32_t every_ms,
                                 tally_checkpointer_options *ret);

#endif
