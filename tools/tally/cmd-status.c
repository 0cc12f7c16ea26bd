/*
 * cmd-status.c — `tally status DIR`: the startup freshness verdict of a
 * journal directory against its anchor target (FORMAT.md section 9.3),
 * printed for a human or as JSON. Works on a missing directory too: the
 * journal id then derives from the key and name, and anchors for it mean
 * the journal was deleted.
 */
#include "anchor-opts.h"

/* The help text, with the shared anchor options, is longer than the 4095
 * bytes C99 promises for a string literal; gcc and clang take any length. */
#pragma GCC diagnostic ignored "-Woverlength-strings"

#include <getopt.h>
#include <string.h>

const char cmd_status_usage[] =
    "Usage: tally status DIR [anchor options] [--key-file FILE] [--name NAME]\n"
    "                    [--journal-id HEX] [--json]\n"
    "\n"
    "Compares the journal in DIR with its anchor target and prints one\n"
    "verdict, the first that applies:\n"
    "  deleted       DIR holds no journal, but the target holds anchors for\n"
    "                its journal id (derived from --key-file and --name, or\n"
    "                --journal-id: DIR may be missing)\n"
    "  rolled_back   the local head is behind the anchored seq (an old copy\n"
    "                of the directory was put back); says by how many records\n"
    "  forked        the local link at the anchored seq is not the anchored\n"
    "                head (another history with the same journal id)\n"
    "  stale_anchor  the journal holds a CHECKPOINT record newer than what the\n"
    "                target says: a stale or lying RPC node, or a reorg deeper\n"
    "                than the confirmations\n"
    "  fresh         the journal holds the anchored (seq, head); it may be\n"
    "                ahead of it (unanchored_tail records)\n"
    "The message names both sides: local seq and link, anchored seq, head\n"
    "and block. Exit status 0 for fresh, 4 for every other verdict, 1 when\n"
    "there is no verdict (target unreachable, endpoints disagree, no journal\n"
    "and no anchors, a journal anchored through another configuration).\n"
    "Reading needs no key; with the key the CHECKPOINT records are\n"
    "authenticated too.\n"
    "\n"
    "Text output: a first line \"DIR: VERDICT\", the message, then the\n"
    "details. With --json, one object:\n"
    "  {\"dir\":S,\"verdict\":NAME|null,\"exit\":N,\"journal_id\":HEX,\n"
    "   \"journal_present\":B,\"local\":{\"seq\":N,\"head\":HEX},\n"
    "   \"anchored\":{\"seq\":N,\"head\":HEX,\"block\":N},\"unanchored_tail\":N,\n"
    "   \"behind\":N,\"checkpoints\":N,\"checkpoint\":{\"seq\":N,\"record_seq\":N,\n"
    "   \"block\":N,\"block_hash\":HEX,\"tx\":HEX,\"anchored_ns\":N}|null,\n"
    "   \"message\":S}\n"
    "\n"
    "Options:\n"
    "  --key-file FILE   master key: derives the journal id for a missing DIR\n"
    "                    and authenticates CHECKPOINT records; default\n"
    "                    $TALLY_KEY_FILE; optional\n"
    "  --key-source SPEC or a key source: file:PATH, env:NAME, dstack:[PATH]\n"
    "                    (README \"Keys\"); default $TALLY_KEY_SOURCE\n"
    "  --name NAME       journal name the id derives from (default \"default\");\n"
    "                    given, DIR must hold that journal\n"
    "  --journal-id HEX  the journal id (64 hex digits) instead of key + name\n"
    "  --json            print one JSON object\n"
    "  -h, --help        show this help and exit\n"
    "\n"
    ANCHOR_OPTS_HELP
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE         key file used when --key-file is not given\n"
    ANCHOR_ENV_HELP;

/* The library's fixed-size strings, bounded even if not NUL-terminated. */
static void json_str(const char *name, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    printf(",\"%s\":", name);
    if (cli_utf8_valid((const uint8_t *)s, n))
        cli_json_string(stdout, (const uint8_t *)s, n);
    else
        fputs("\"?\"", stdout);
}

static int is_verdict(int rc)
{
    return rc == 0 || rc == TALLY_EROLLBACK || rc == TALLY_EFORK ||
           rc == TALLY_EDELETED || rc == TALLY_ESTALE;
}

static void print_json(const char *dir, const tally_freshness *f, int rc)
{
    char id[65], lh[65], ah[65], bh[65], tx[65];

    cli_hex(f->journal_id, 32, id);
    cli_hex(f->local_head, 32, lh);
    cli_hex(f->anchored_head, 32, ah);
    fputs("{\"dir\":", stdout);
    if (cli_utf8_valid((const uint8_t *)dir, strlen(dir)))
        cli_json_string(stdout, (const uint8_t *)dir, strlen(dir));
    else
        fputs("\"?\"", stdout);
    if (is_verdict(rc))
        printf(",\"verdict\":\"%s\"", tally_verdict_name(f->verdict));
    else
        fputs(",\"verdict\":null", stdout);
    printf(",\"exit\":%d,\"journal_id\":\"%s\",\"journal_present\":%s,"
           "\"local\":{\"seq\":%llu,\"head\":\"%s\"},"
           "\"anchored\":{\"seq\":%llu,\"head\":\"%s\",\"block\":%llu},"
           "\"unanchored_tail\":%llu,\"behind\":%llu,\"checkpoints\":%llu",
           tally_exit_code(rc), id, f->journal_present ? "true" : "false",
           (unsigned long long)f->local_seq, lh,
           (unsigned long long)f->anchored_seq, ah,
           (unsigned long long)f->anchored_block,
           (unsigned long long)f->unanchored_tail,
           (unsigned long long)f->behind, (unsigned long long)f->checkpoints);
    if (f->has_checkpoint) {
        cli_hex(f->checkpoint.block_hash, 32, bh);
        cli_hex(f->checkpoint.tx_hash, 32, tx);
        printf(",\"checkpoint\":{\"seq\":%llu,\"record_seq\":%llu,"
               "\"block\":%llu,\"block_hash\":\"0x%s\",\"tx\":\"0x%s\","
               "\"anchored_ns\":%llu}",
               (unsigned long long)f->checkpoint.seq,
               (unsigned long long)f->checkpoint_record_seq,
               (unsigned long long)f->checkpoint.block_number, bh, tx,
               (unsigned long long)f->checkpoint.anchored_ns);
    } else {
        fputs(",\"checkpoint\":null", stdout);
    }
    if (!is_verdict(rc))
        json_str("error", tally_strerror(rc), 256);
    json_str("message", f->message, sizeof f->message);
    fputs("}\n", stdout);
}

static void print_text(const char *dir, const tally_freshness *f)
{
    char h[65];

    printf("%s: %s\n", dir, tally_verdict_name(f->verdict));
    printf("  %.*s\n", (int)strnlen(f->message, sizeof f->message), f->message);
    cli_hex(f->journal_id, 32, h);
    printf("  journal id    %s\n", h);
    if (f->journal_present) {
        cli_hex(f->local_head, 32, h);
        printf("  local head    seq %llu, link %s\n",
               (unsigned long long)f->local_seq, h);
    } else {
        printf("  local head    none (no journal in %s)\n", dir);
    }
    if (f->anchored_seq > 0) {
        cli_hex(f->anchored_head, 32, h);
        printf("  anchored      seq %llu, head %s, block %llu\n",
               (unsigned long long)f->anchored_seq, h,
               (unsigned long long)f->anchored_block);
    } else {
        printf("  anchored      never\n");
    }
    if (f->verdict == TALLY_VERDICT_FRESH)
        printf("  unanchored    %llu records after the anchor\n",
               (unsigned long long)f->unanchored_tail);
    if (f->verdict == TALLY_VERDICT_ROLLED_BACK)
        printf("  behind        %llu records\n", (unsigned long long)f->behind);
    if (f->has_checkpoint)
        printf("  checkpoints   %llu records; newest anchors seq %llu in block "
               "%llu (record seq %llu)\n", (unsigned long long)f->checkpoints,
               (unsigned long long)f->checkpoint.seq,
               (unsigned long long)f->checkpoint.block_number,
               (unsigned long long)f->checkpoint_record_seq);
    else if (f->journal_present)
        printf("  checkpoints   %llu records for this anchor target: none\n",
               (unsigned long long)f->checkpoints);
}

enum { OPT_KEY_FILE = 256, OPT_NAME, OPT_ID, OPT_JSON };

int cmd_status(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "name", required_argument, NULL, OPT_NAME },
        { "journal-id", required_argument, NULL, OPT_ID },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct anchor_opts ao;
    struct anchor a;
    tally_freshness f;
    const char *key_file = NULL, *key_path, *dir, *name = NULL;
    uint8_t id[TALLY_ID_BYTES], *key = NULL;
    int c, rc, json = 0, have_id = 0, named, status;

    anchor_opts_init(&ao);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_NAME:
            if (optarg[0] == '\0' || strlen(optarg) > TALLY_MAX_NAME ||
                !cli_utf8_valid((const uint8_t *)optarg, strlen(optarg)))
                return cli_usage_error(self, "--name must be 1-%u bytes of UTF-8",
                                       TALLY_MAX_NAME);
            name = optarg;
            break;
        case OPT_ID:
            if (cli_unhex(optarg, id, sizeof id) < 0)
                return cli_usage_error(self, "--journal-id must be %u hex digits",
                                       2 * TALLY_ID_BYTES);
            have_id = 1;
            break;
        case OPT_JSON:
            json = 1;
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
    if (have_id && name != NULL)
        return cli_usage_error(self, "--journal-id and --name exclude each "
                               "other");
    dir = argv[optind];
    named = have_id || name != NULL;
    status = anchor_opts_finish(self, &ao, ANCHOR_NEED_CONTRACT |
                                           ANCHOR_NEED_SENDER);
    if (status == EXIT_OK && !anchor_opts_configured(&ao))
        status = cli_usage_error(self, "an anchor target is needed: --rpc URL "
                                 "(or TALLY_RPC_URL) or --anchor-file PATH");
    if (status != EXIT_OK) {
        anchor_opts_free(&ao);
        return status;
    }
    key_path = cli_key_path(key_file);
    if (key_path != NULL) {
        status = cli_key_load(self, key_path, &key);
        if (status != EXIT_OK) {
            anchor_opts_free(&ao);
            return status;
        }
        if (!have_id) {
            rc = tally_journal_id(key, name != NULL ? name : "default", id);
            if (rc < 0) {
                cli_key_free(key);
                anchor_opts_free(&ao);
                return cli_fail(self, "deriving the journal id of", dir, rc,
                                NULL);
            }
            have_id = 1;
        }
    } else if (name != NULL) {
        anchor_opts_free(&ao);
        return cli_usage_error(self, "--name needs the key (--key-file or "
                               "TALLY_KEY_FILE): the id derives from both");
    }
    status = anchor_open(self, &ao, 0, &a);
    if (status != EXIT_OK) {
        cli_key_free(key);
        anchor_opts_free(&ao);
        return status;
    }

    /* The id is the directory's own unless the caller named the journal
     * (then DIR must hold that one); for a missing or empty DIR it is the
     * only way to find its anchors. */
    rc = tally_freshness_check(a.target, dir, named ? id : NULL, key, &f);
    if (rc == TALLY_ENOJOURNAL && !f.journal_present && have_id)
        rc = tally_freshness_check(a.target, dir, id, key, &f);
    cli_key_free(key);
    anchor_warn_disagreement(self, &a, rc);

    status = tally_exit_code(rc);
    if (json) {
        print_json(dir, &f, rc);
    } else if (is_verdict(rc)) {
        print_text(dir, &f);
    }
    if (!is_verdict(rc))
        fprintf(stderr, "tally %s: %s: %.*s\n", self->name, dir,
                (int)strnlen(f.message, sizeof f.message),
                f.message[0] != '\0' ? f.message : tally_strerror(rc));
    if (cli_flush_stdout(self) != EXIT_OK && status == EXIT_OK)
        status = EXIT_OPERATIONAL;
    anchor_close(&a);
    anchor_opts_free(&ao);
    return status;
}
