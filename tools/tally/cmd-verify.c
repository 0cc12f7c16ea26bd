/*
 * cmd-verify.c — `tally verify DIR`: checks a whole journal (tally_verify):
 * without the key its structure and hash chain (FORMAT.md §7), with the key
 * also every record's tag. The first failure is reported with its place.
 */
#include "anchor-opts.h"

#include <getopt.h>
#include <string.h>

const char cmd_verify_usage[] =
    "Usage: tally verify DIR [--key-file FILE | --no-key] [--json]\n"
    "                    [anchor options]\n"
    "\n"
    "Verifies the whole journal in DIR. Without a key: the metadata checksum,\n"
    "every segment header, every frame header, seq density and the hash chain\n"
    "(what a keyless check covers: FORMAT.md section 7). With the key, also\n"
    "the key check value, the metadata MAC and the authenticity of every\n"
    "record (each is decrypted). A torn tail (left by a crash, cut at the\n"
    "next open for writing) is a failure too.\n"
    "\n"
    "On success prints a summary (segments, records, seq range, time range,\n"
    "bytes, journal id, cipher, head). On failure prints the first problem\n"
    "on stderr, with its place when it has one, e.g.\n"
    "  tally verify: verifying journal DIR: 0000000000000001.seg: offset 160,\n"
    "  seq 1: link does not verify\n"
    "and exits 3 (integrity, torn tail included), 5 (wrong key) or 1 (cannot\n"
    "read).\n"
    "\n"
    "With --json, one object on stdout, on success\n"
    "  {\"ok\":true,\"keyed\":B,\"journal_id\":HEX,\"cipher\":NAME,\"segments\":N,\n"
    "   \"records\":N,\"pruned\":N,\"first_seq\":N,\"last_seq\":N,\"bytes\":N,\n"
    "   \"first_ts\":NS,\"last_ts\":NS,\"head\":{\"seq\":N,\"link\":HEX}}\n"
    "and on failure (the stderr line is printed too; a usage or key file\n"
    "error, found before verification starts, prints no JSON)\n"
    "  {\"ok\":false,\"keyed\":B,\"exit\":S,\"error\":TEXT,\"segment\":FILE,\n"
    "   \"offset\":N,\"seq\":N,\"message\":TEXT}\n"
    "\n"
    "With anchor options, the journal must first be fresh against its anchor\n"
    "target (see 'tally status'; any other verdict: exit 4), and after the\n"
    "journal verifies, every CHECKPOINT record made through this target is\n"
    "checked: its head must be the journal's own link at the anchored seq\n"
    "(else exit 4, forked) and an Anchored event with the same seq, head,\n"
    "block number, block hash and transaction must be on the chain (else\n"
    "exit 4, stale). The summary then ends with a line\n"
    "  anchor      N CHECKPOINT records match the chain's Anchored events\n"
    "and the JSON object has \"anchor\":{\"verdict\":NAME,\"anchored_seq\":N,\n"
    "\"checkpoints\":N,\"checked\":N,\"message\":TEXT}.\n"
    "\n"
    "Options:\n"
    "  --key-file FILE  verify with this master key; default $TALLY_KEY_FILE;\n"
    "                   without either, verifies without the key\n"
    "  --key-source SPEC  or a key source: file:PATH, env:NAME, dstack:[PATH]\n"
    "                   (README \"Keys\"); default $TALLY_KEY_SOURCE\n"
    "  --no-key         verify without the key even if TALLY_KEY_FILE is set\n"
    "  --json           print one JSON object\n"
    ANCHOR_OPTS_SHORT_HELP
    "  -h, --help       show this help and exit\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE  key file used when neither --key-file nor --no-key is\n"
    "                  given\n"
    ANCHOR_ENV_HELP;

/* The library's fixed-size strings, bounded even if not NUL-terminated. */
static void json_field(const char *name, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    printf(",\"%s\":", name);
    if (cli_utf8_valid((const uint8_t *)s, n))
        cli_json_string(stdout, (const uint8_t *)s, n);
    else
        fputs("\"?\"", stdout);
}

/* The anchor part of the report (when anchor options were given). */
struct anchor_result {
    int on;
    tally_freshness f;
    tally_checkpoint_report cr;
};

static void print_ok_json(const tally_verify_report *rep,
                          const struct anchor_result *ar)
{
    char id[2 * TALLY_ID_BYTES + 1], head[2 * TALLY_HASH_BYTES + 1];

    cli_hex(rep->journal_id, sizeof rep->journal_id, id);
    cli_hex(rep->head, sizeof rep->head, head);
    printf("{\"ok\":true,\"keyed\":%s,\"journal_id\":\"%s\",\"cipher\":\"%s\","
           "\"segments\":%llu,\"records\":%llu,\"pruned\":%llu,"
           "\"first_seq\":%llu,\"last_seq\":%llu,\"bytes\":%llu,"
           "\"first_ts\":%llu,\"last_ts\":%llu,"
           "\"head\":{\"seq\":%llu,\"link\":\"%s\"}",
           rep->keyed ? "true" : "false", id, cli_cipher_name(rep->cipher),
           (unsigned long long)rep->segments, (unsigned long long)rep->records,
           (unsigned long long)rep->pruned, (unsigned long long)rep->first_seq,
           (unsigned long long)rep->last_seq, (unsigned long long)rep->bytes,
           (unsigned long long)rep->first_ts_ns,
           (unsigned long long)rep->last_ts_ns,
           (unsigned long long)rep->last_seq, head);
    if (ar->on) {
        printf(",\"anchor\":{\"verdict\":\"%s\",\"anchored_seq\":%llu,"
               "\"checkpoints\":%llu,\"checked\":%llu",
               tally_verdict_name(ar->f.verdict),
               (unsigned long long)ar->f.anchored_seq,
               (unsigned long long)ar->cr.records,
               (unsigned long long)ar->cr.checked);
        json_field("message", ar->cr.message, sizeof ar->cr.message);
        fputc('}', stdout);
    }
    fputs("}\n", stdout);
}

static void print_ok_text(const char *dir, const tally_verify_report *rep)
{
    char id[2 * TALLY_ID_BYTES + 1], head[2 * TALLY_HASH_BYTES + 1];
    char t0[40], t1[40];

    cli_hex(rep->journal_id, sizeof rep->journal_id, id);
    cli_hex(rep->head, sizeof rep->head, head);
    printf("ok: %s verified %s\n", dir,
           rep->keyed ? "with the key (structure, chain and every record's "
                        "authenticity)"
                      : "without the key (structure and chain only)");
    printf("  journal id  %s\n", id);
    printf("  cipher      %s\n", cli_cipher_name(rep->cipher));
    printf("  segments    %llu\n", (unsigned long long)rep->segments);
    if (rep->records > 0) {
        cli_format_ts(rep->first_ts_ns, t0);
        cli_format_ts(rep->last_ts_ns, t1);
        printf("  records     %llu (seq %llu..%llu), %llu pruned\n",
               (unsigned long long)rep->records,
               (unsigned long long)rep->first_seq,
               (unsigned long long)rep->last_seq,
               (unsigned long long)rep->pruned);
        printf("  time        %s .. %s\n", t0, t1);
    } else {
        printf("  records     0\n");
    }
    printf("  bytes       %llu\n", (unsigned long long)rep->bytes);
    printf("  head        %llu %s\n", (unsigned long long)rep->last_seq, head);
}

/* The anchor checks: fresh before verifying (refused otherwise, as opening
 * with an anchor configured is), every CHECKPOINT record after. */
static int anchor_part(const struct cli_cmd *self, struct anchor *a,
                       const char *dir, const uint8_t *key, int after,
                       struct anchor_result *ar, int json, int keyed)
{
    int rc;

    if (!after) {
        rc = anchor_check(self, a, dir, NULL, key, &ar->f);
        if (rc < 0 && json)
            printf("{\"ok\":false,\"keyed\":%s,\"exit\":%d,\"verdict\":\"%s\"",
                   keyed ? "true" : "false", tally_exit_code(rc),
                   rc == TALLY_EROLLBACK || rc == TALLY_EFORK ||
                   rc == TALLY_EDELETED || rc == TALLY_ESTALE
                       ? tally_verdict_name(ar->f.verdict) : "none");
        if (rc < 0 && json) {
            json_field("error", tally_strerror(rc), 256);
            json_field("message", ar->f.message, sizeof ar->f.message);
            fputs("}\n", stdout);
        }
        return rc;
    }
    rc = tally_checkpoint_verify(a->target, dir, key, &ar->cr);
    anchor_warn_disagreement(self, a, rc);
    if (rc < 0) {
        fprintf(stderr, "tally %s: checking the CHECKPOINT records of %s: %.*s"
                "%s%s\n", self->name, dir,
                (int)strnlen(ar->cr.message, sizeof ar->cr.message),
                ar->cr.message, ar->cr.message[0] != '\0' ? ": " : "",
                tally_strerror(rc));
        if (json) {
            printf("{\"ok\":false,\"keyed\":%s,\"exit\":%d,"
                   "\"record_seq\":%llu", keyed ? "true" : "false",
                   tally_exit_code(rc),
                   (unsigned long long)ar->cr.bad_record_seq);
            json_field("error", tally_strerror(rc), 256);
            json_field("message", ar->cr.message, sizeof ar->cr.message);
            fputs("}\n", stdout);
        }
    }
    return rc;
}

static int report_failure(const struct cli_cmd *self, const char *dir,
                          const tally_verify_report *rep, int err, int keyed,
                          int json)
{
    size_t seg_n = strnlen(rep->segment, sizeof rep->segment);
    size_t msg_n = strnlen(rep->message, sizeof rep->message);
    int status = tally_exit_code(err);

    fprintf(stderr, "tally %s: verifying journal %s: ", self->name, dir);
    if (msg_n > 0 && err > -1000 && err < 0)
        /* An errno failure: the message says what, strerror why. */
        fprintf(stderr, "%.*s: %s", (int)msg_n, rep->message,
                tally_strerror(err));
    else if (msg_n > 0)
        fprintf(stderr, "%.*s", (int)msg_n, rep->message);
    else
        fputs(tally_strerror(err), stderr);
    /* The library's message usually names the place already; add it only
     * where it does not. */
    if (seg_n > 0 && (msg_n == 0 || strstr(rep->message, rep->segment) == NULL))
        fprintf(stderr, " (segment %.*s, offset %llu, seq %llu)", (int)seg_n,
                rep->segment, (unsigned long long)rep->offset,
                (unsigned long long)rep->seq);
    fputc('\n', stderr);
    if (json) {
        printf("{\"ok\":false,\"keyed\":%s,\"exit\":%d",
               keyed ? "true" : "false", status);
        json_field("error", tally_strerror(err), 256);
        json_field("segment", rep->segment, sizeof rep->segment);
        printf(",\"offset\":%llu,\"seq\":%llu", (unsigned long long)rep->offset,
               (unsigned long long)rep->seq);
        json_field("message", rep->message, sizeof rep->message);
        fputs("}\n", stdout);
        if (cli_flush_stdout(self) != EXIT_OK && status == EXIT_OK)
            status = EXIT_OPERATIONAL;
    }
    return status;
}

enum { OPT_KEY_FILE = 256, OPT_NO_KEY, OPT_JSON };

int cmd_verify(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "no-key", no_argument, NULL, OPT_NO_KEY },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL, *key_path = NULL, *dir;
    uint8_t *key = NULL;
    tally_verify_report rep;
    struct anchor_opts ao;
    struct anchor anc = { NULL, NULL };
    struct anchor_result ar;
    int c, rc, json = 0, no_key = 0, keyed, status;

    anchor_opts_init(&ao);
    memset(&ar, 0, sizeof ar);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_NO_KEY:
            no_key = 1;
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
    if (no_key && key_file != NULL)
        return cli_usage_error(self, "--key-file and --no-key exclude each "
                               "other");
    dir = argv[optind];
    status = anchor_opts_finish(self, &ao, ANCHOR_NEED_CONTRACT |
                                           ANCHOR_NEED_SENDER);
    if (status == EXIT_OK && anchor_opts_configured(&ao)) {
        status = anchor_open(self, &ao, 0, &anc);
        ar.on = status == EXIT_OK;
    }
    if (status != EXIT_OK) {
        anchor_opts_free(&ao);
        return status;
    }
    if (!no_key)
        key_path = cli_key_path(key_file);
    if (key_path != NULL) {
        status = cli_key_load(self, key_path, &key);
        if (status != EXIT_OK)
            goto out;
    }

    memset(&rep, 0, sizeof rep);
    keyed = key != NULL;
    if (ar.on && (rc = anchor_part(self, &anc, dir, key, 0, &ar, json,
                                   keyed)) < 0) {
        status = tally_exit_code(rc);
        goto out;
    }
    rc = tally_verify(dir, key, &rep);
    if (rc < 0) {
        status = report_failure(self, dir, &rep, rc, keyed, json);
        goto out;
    }
    if (ar.on && (rc = anchor_part(self, &anc, dir, key, 1, &ar, json,
                                   keyed)) < 0) {
        status = tally_exit_code(rc);
        goto out;
    }
    if (json) {
        print_ok_json(&rep, &ar);
    } else {
        print_ok_text(dir, &rep);
        if (ar.on) {
            printf("  freshness   %.*s\n",
                   (int)strnlen(ar.f.message, sizeof ar.f.message),
                   ar.f.message);
            printf("  anchor      %.*s\n",
                   (int)strnlen(ar.cr.message, sizeof ar.cr.message),
                   ar.cr.message);
        }
    }
    status = cli_flush_stdout(self);
out:
    cli_key_free(key);
    anchor_close(&anc);
    anchor_opts_free(&ao);
    return status;
}
