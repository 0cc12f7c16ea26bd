/*
 * cmd-cat.c — `tally cat DIR`: replays a journal, decrypting and checking
 * every record on the way (tally_iter), and prints the records for a human
 * or as JSON lines.
 */
#include "anchor-opts.h"

#include <getopt.h>
#include <string.h>

const char cmd_cat_usage[] =
    "Usage: tally cat DIR --key-file FILE [--from SEQ] [--to SEQ] [--json]\n"
    "                 [--all] [--from-snapshot] [anchor options]\n"
    "\n"
    "Decrypts the records of the journal in DIR and prints them in seq order.\n"
    "Every record is authenticated and the hash chain is checked from the\n"
    "first record on, also before --from; a failure stops the output with an\n"
    "error naming segment, offset and seq. A torn or still growing tail (a\n"
    "writer is appending, or crashed and has not reopened yet) ends the\n"
    "output quietly; 'tally verify' reports it.\n"
    "\n"
    "Default output, one line per record:\n"
    "  SEQ TIMESTAMP TYPE KEY PAYLOAD\n"
    "TIMESTAMP is UTC (2024-01-31T12:00:00.123456789Z), TYPE decimal, KEY is\n"
    "- when empty. In KEY and PAYLOAD a backslash, control bytes, and bytes\n"
    "that are not UTF-8 are escaped (\\\\, \\n, \\t, \\r, \\xNN); in KEY also\n"
    "spaces (\\x20) and a key that is exactly \"-\" (\\x2d).\n"
    "\n"
    "With --json, one object per line:\n"
    "  {\"seq\":N,\"ts\":NS,\"type\":T,\"key\":\"...\",\"payload\":\"...\"}\n"
    "ts is nanoseconds since the Unix epoch (above 2^53: read it as a 64-bit\n"
    "integer, not a double). key and payload are JSON strings when they are\n"
    "valid UTF-8; otherwise they are given as key_b64 / payload_b64 (standard\n"
    "base64) instead.\n"
    "\n"
    "With anchor options the journal must be fresh against its anchor target\n"
    "(see 'tally status'): any other verdict is refused with exit 4 before\n"
    "anything is printed. Here --from is the first seq: name the writer\n"
    "account with --writer ADDR (or --signer-key-file). The CHECKPOINT\n"
    "records the checkpointer appends are records too (type 65282, a\n"
    "176-byte payload: FORMAT.md section 9.2).\n"
    "\n"
    "Options:\n"
    "  --key-file FILE  master key; default $TALLY_KEY_FILE. Required.\n"
    "  --key-source SPEC  or a key source: file:PATH, env:NAME, dstack:[PATH]\n"
    "                   (README \"Keys\"); default $TALLY_KEY_SOURCE\n"
    "  --from SEQ       first seq to print (default 1)\n"
    "  --to SEQ         last seq to print (default: the last record)\n"
    "  --json           JSON lines instead of text\n"
    "  --all            also print records whose body was removed (pruned by\n"
    "                   compaction): as \"SEQ TIMESTAMP pruned\", or in JSON\n"
    "                   {\"seq\":N,\"ts\":NS,\"pruned\":true}; skipped by default\n"
    "                   Records of a key epoch that 'tally forget' destroyed\n"
    "                   likewise, as \"forgotten\"; without --all, their count\n"
    "                   is reported on stderr\n"
    "  --from-snapshot  start at the newest SNAPSHOT record (FORMAT.md\n"
    "                   section 11.6): the files are searched from the end\n"
    "                   and nothing before it is read or checked; --from\n"
    "                   still applies on top\n"
    ANCHOR_OPTS_SHORT_HELP
    "  -h, --help       show this help and exit\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE  key file used when --key-file is not given\n"
    ANCHOR_ENV_HELP;

static int print_json(const tally_record *r)
{
    int rc = 0;

    printf("{\"seq\":%llu,\"ts\":%llu", (unsigned long long)r->seq,
           (unsigned long long)r->ts_ns);
    if (!r->decrypted) {
        /* With the key, only a forgotten epoch leaves a stored body
         * undecrypted (the iterator fails on any other reason). */
        fputs(r->kind == 3 ? ",\"pruned\":true}\n" : ",\"forgotten\":true}\n",
              stdout);
        return 0;
    }
    printf(",\"type\":%u", (unsigned)r->type);
    if (cli_utf8_valid(r->key, r->key_len)) {
        fputs(",\"key\":", stdout);
        cli_json_string(stdout, r->key, r->key_len);
    } else {
        fputs(",\"key_b64\":", stdout);
        rc = cli_json_base64(stdout, r->key, r->key_len);
    }
    if (rc == 0 && cli_utf8_valid(r->payload, r->payload_len)) {
        fputs(",\"payload\":", stdout);
        cli_json_string(stdout, r->payload, r->payload_len);
    } else if (rc == 0) {
        fputs(",\"payload_b64\":", stdout);
        rc = cli_json_base64(stdout, r->payload, r->payload_len);
    }
    fputs("}\n", stdout);
    return rc;
}

static void print_text(const tally_record *r)
{
    char ts[40];

    cli_format_ts(r->ts_ns, ts);
    printf("%llu %s ", (unsigned long long)r->seq, ts);
    if (!r->decrypted) {
        fputs(r->kind == 3 ? "pruned\n" : "forgotten\n", stdout);
        return;
    }
    printf("%u ", (unsigned)r->type);
    if (r->key_len == 0)
        fputc('-', stdout);
    else if (r->key_len == 1 && r->key[0] == '-')
        fputs("\\x2d", stdout);
    else
        cli_print_escaped(stdout, r->key, r->key_len, 1);
    fputc(' ', stdout);
    cli_print_escaped(stdout, r->payload, r->payload_len, 0);
    fputc('\n', stdout);
}

enum { OPT_KEY_FILE = 256, OPT_FROM, OPT_TO, OPT_JSON, OPT_ALL, OPT_SNAP };

int cmd_cat(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "from", required_argument, NULL, OPT_FROM },
        { "to", required_argument, NULL, OPT_TO },
        { "json", no_argument, NULL, OPT_JSON },
        { "all", no_argument, NULL, OPT_ALL },
        { "from-snapshot", no_argument, NULL, OPT_SNAP },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL, *key_path, *dir;
    uint64_t from = 1, to = UINT64_MAX, forgotten = 0;
    uint8_t *key = NULL;
    tally_iter *it = NULL;
    tally_record r;
    struct anchor_opts ao;
    int c, rc, json = 0, all = 0, status = EXIT_OK;
    unsigned iflags = TALLY_ITER_TOLERATE_TAIL;

    anchor_opts_init(&ao);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_FROM:
            if (cli_parse_u64(optarg, &from) < 0 || from == 0)
                return cli_usage_error(self, "--from must be a seq (1 or more)");
            break;
        case OPT_TO:
            if (cli_parse_u64(optarg, &to) < 0 || to == 0)
                return cli_usage_error(self, "--to must be a seq (1 or more)");
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_ALL:
            all = 1;
            break;
        case OPT_SNAP:
            iflags |= TALLY_ITER_FROM_SNAPSHOT;
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
    if (from > to)
        return cli_usage_error(self, "--from %llu is after --to %llu",
                               (unsigned long long)from, (unsigned long long)to);
    dir = argv[optind];
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE or "
                               "TALLY_KEY_FILE");
    rc = anchor_opts_finish(self, &ao, ANCHOR_NEED_CONTRACT | ANCHOR_NEED_SENDER);
    if (rc == EXIT_OK)
        rc = cli_key_load(self, key_path, &key);
    if (rc == EXIT_OK && anchor_opts_configured(&ao)) {
        struct anchor a;
        tally_freshness f;
        rc = anchor_open(self, &ao, 0, &a);
        if (rc == EXIT_OK) {
            rc = tally_exit_code(anchor_check(self, &a, dir, NULL, key, &f));
            anchor_close(&a);
        }
    }
    anchor_opts_free(&ao);
    if (rc != EXIT_OK) {
        cli_key_free(key);
        return rc;
    }

    rc = tally_iter_open(&it, dir, key, from, iflags);
    cli_key_free(key); /* the iterator keeps its own copy */
    if (rc < 0)
        return cli_fail(self, "opening journal", dir, rc, NULL);
    for (;;) {
        rc = tally_iter_next(it, &r);
        if (rc < 0) {
            /* What was printed so far is genuine; end it before the error. */
            (void)fflush(stdout);
            status = cli_fail(self, "reading journal", dir, rc,
                              tally_iter_errmsg(it));
            break;
        }
        if (rc == 0 || r.seq > to)
            break;
        if (r.seq < from)
            continue;
        if (!r.decrypted && !all) {
            if (r.kind != 3)
                forgotten++;
            continue;
        }
        if (json) {
            rc = print_json(&r);
            if (rc < 0) {
                status = cli_fail(self, "encoding a record of", dir, rc, NULL);
                break;
            }
        } else {
            print_text(&r);
        }
        if (ferror(stdout))
            break;
    }
    tally_iter_free(it);
    if (forgotten > 0)
        fprintf(stderr, "tally %s: %llu records not shown: their key epoch "
                "was forgotten ('tally forget'); --all lists them\n",
                self->name, (unsigned long long)forgotten);
    if (status == EXIT_OK)
        status = cli_flush_stdout(self);
    return status;
}
