/*
 * cmd-verify.c — `tally verify DIR`: checks a whole journal (tally_verify):
 * without the key its structure and hash chain (FORMAT.md §7), with the key
 * also every record's tag. The first failure is reported with its place.
 */
#include "common.h"

#include <getopt.h>
#include <string.h>

const char cmd_verify_usage[] =
    "Usage: tally verify DIR [--key-file FILE | --no-key] [--json]\n"
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
    "Options:\n"
    "  --key-file FILE  verify with this master key; default $TALLY_KEY_FILE;\n"
    "                   without either, verifies without the key\n"
    "  --no-key         verify without the key even if TALLY_KEY_FILE is set\n"
    "  --json           print one JSON object\n"
    "  -h, --help       show this help and exit\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE  key file used when neither --key-file nor --no-key is\n"
    "                  given\n";

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

static void print_ok_json(const tally_verify_report *rep)
{
    char id[2 * TALLY_ID_BYTES + 1], head[2 * TALLY_HASH_BYTES + 1];

    cli_hex(rep->journal_id, sizeof rep->journal_id, id);
    cli_hex(rep->head, sizeof rep->head, head);
    printf("{\"ok\":true,\"keyed\":%s,\"journal_id\":\"%s\",\"cipher\":\"%s\","
           "\"segments\":%llu,\"records\":%llu,\"pruned\":%llu,"
           "\"first_seq\":%llu,\"last_seq\":%llu,\"bytes\":%llu,"
           "\"first_ts\":%llu,\"last_ts\":%llu,"
           "\"head\":{\"seq\":%llu,\"link\":\"%s\"}}\n",
           rep->keyed ? "true" : "false", id, cli_cipher_name(rep->cipher),
           (unsigned long long)rep->segments, (unsigned long long)rep->records,
           (unsigned long long)rep->pruned, (unsigned long long)rep->first_seq,
           (unsigned long long)rep->last_seq, (unsigned long long)rep->bytes,
           (unsigned long long)rep->first_ts_ns,
           (unsigned long long)rep->last_ts_ns,
           (unsigned long long)rep->last_seq, head);
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
        { "no-key", no_argument, NULL, OPT_NO_KEY },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL, *key_path = NULL, *dir;
    uint8_t *key = NULL;
    tally_verify_report rep;
    int c, rc, json = 0, no_key = 0, keyed;

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
            return cli_usage_error(self, NULL);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(self, "expected exactly one DIR argument");
    if (no_key && key_file != NULL)
        return cli_usage_error(self, "--key-file and --no-key exclude each "
                               "other");
    dir = argv[optind];
    if (!no_key)
        key_path = cli_key_path(key_file);
    if (key_path != NULL) {
        rc = cli_key_load(self, key_path, &key);
        if (rc != EXIT_OK)
            return rc;
    }

    memset(&rep, 0, sizeof rep);
    keyed = key != NULL;
    rc = tally_verify(dir, key, &rep);
    cli_key_free(key);
    if (rc < 0)
        return report_failure(self, dir, &rep, rc, keyed, json);
    if (json)
        print_ok_json(&rep);
    else
        print_ok_text(dir, &rep);
    return cli_flush_stdout(self);
}
