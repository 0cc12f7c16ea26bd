/*
 * cmd-init.c — `tally init DIR`: creates a journal (metadata with a fresh
 * data key wrapped under the master key, FORMAT.md §3).
 */
#include "anchor-opts.h"

#include <getopt.h>
#include <string.h>

const char cmd_init_usage[] =
    "Usage: tally init DIR --key-file FILE [--name NAME] [--journal-id HEX]\n"
    "                  [--cipher aes256gcm|xchacha20poly1305] [--compress]\n"
    "                  [--segment-size BYTES] [--padding POLICY]\n"
    "                  [anchor options [--accept-history-loss]]\n"
    "\n"
    "Creates a journal in DIR (created if missing; it must not hold a journal\n"
    "already) and prints one line: its directory, name, journal id and cipher.\n"
    "\n"
    "With anchor options, init first asks the anchor target whether the new\n"
    "journal's id already has anchors: then a journal with this key and name\n"
    "existed and was deleted, and init refuses (exit 4) to start a new\n"
    "history in its place unless --accept-history-loss is given. The chain's\n"
    "counter for (journal id, writer) never goes back, so a new history under\n"
    "the same id and writer is reported rolled_back, then forked: choose\n"
    "another --name (or writer account) for a journal meant to be anchored.\n"
    "\n"
    "Options:\n"
    "  --key-file FILE      master key (see 'tally keygen'); default\n"
    "                       $TALLY_KEY_FILE. Required.\n"
    "  --key-source SPEC    or the master key from a key source: file:PATH,\n"
    "                       env:NAME, dstack:[PATH] (README \"Keys\");\n"
    "                       default $TALLY_KEY_SOURCE\n"
    "  --name NAME          journal name, 1-255 bytes of UTF-8 (default\n"
    "                       \"default\"); the journal id is derived from the key\n"
    "                       and this name, so it can be recomputed later\n"
    "  --journal-id HEX     use this journal id (64 hex digits) instead of\n"
    "                       deriving it\n"
    "  --cipher NAME        aes256gcm (default; needs AES-NI) or\n"
    "                       xchacha20poly1305 (any CPU)\n"
    "  --compress           zlib-compress payloads when that makes them smaller\n"
    "                       (off by default; the record size then leaks how\n"
    "                       compressible the content is: FORMAT.md section 8)\n"
    "  --segment-size BYTES target size of a segment file, with an optional\n"
    "                       K, M or G suffix (powers of 1024); default 64M,\n"
    "                       minimum 4K\n"
    "  --padding POLICY     pad each record before it is encrypted, so that\n"
    "                       the storage sees only padded sizes: none\n"
    "                       (default), block:N (a multiple of N bytes, 16 to\n"
    "                       16M) or buckets (the next power of two from 64 B:\n"
    "                       at most 20 sizes). Recorded in the metadata;\n"
    "                       'tally set-padding' changes it later\n"
    "  --accept-history-loss  create the journal even though the anchor\n"
    "                       target holds anchors for its id (deleted history)\n"
    ANCHOR_OPTS_SHORT_HELP
    "  -h, --help           show this help and exit\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE  key file used when --key-file is not given\n"
    ANCHOR_ENV_HELP;

enum { OPT_KEY_FILE = 256, OPT_NAME, OPT_ID, OPT_CIPHER, OPT_COMPRESS,
       OPT_SEGMENT_SIZE, OPT_ACCEPT_LOSS, OPT_PADDING };

/* Refuses to start a journal over an anchored history (FORMAT.md section
 * 9.3, verdict deleted) unless the caller accepts its loss. */
static int check_history(const struct cli_cmd *self, struct anchor_opts *ao,
                         const char *dir, const uint8_t id[TALLY_ID_BYTES],
                         const uint8_t *key, int accept_loss)
{
    struct anchor a;
    tally_freshness f;
    int rc, status;

    status = anchor_open(self, ao, 0, &a);
    if (status != EXIT_OK)
        return status;
    rc = tally_freshness_check(a.target, dir, id, key, &f);
    anchor_warn_disagreement(self, &a, rc);
    anchor_close(&a);
    if (rc == TALLY_ENOJOURNAL || f.journal_present)
        return EXIT_OK; /* no anchors; or a journal there, which init refuses */
    if (rc != TALLY_EDELETED) {
        cli_error(self, "asking the anchor target about", dir,
                  f.message[0] != '\0' ? f.message : tally_strerror(rc));
        fprintf(stderr, "tally %s: not creating %s: cannot tell whether an "
                "anchored history would be lost\n", self->name, dir);
        return tally_exit_code(rc) == EXIT_OK ? EXIT_OPERATIONAL
                                              : tally_exit_code(rc);
    }
    fprintf(stderr, "tally %s: %s: %.*s\n", self->name, dir,
            (int)strnlen(f.message, sizeof f.message), f.message);
    if (!accept_loss) {
        fprintf(stderr, "tally %s: refusing to start a new journal over an "
                "anchored history (verdict deleted); --accept-history-loss "
                "does it anyway\n", self->name);
        return tally_exit_code(rc);
    }
    fprintf(stderr, "tally %s: --accept-history-loss: starting a new history; "
            "the %llu anchored records are lost\n", self->name,
            (unsigned long long)f.anchored_seq);
    return EXIT_OK;
}

int cmd_init(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "name", required_argument, NULL, OPT_NAME },
        { "journal-id", required_argument, NULL, OPT_ID },
        { "cipher", required_argument, NULL, OPT_CIPHER },
        { "compress", no_argument, NULL, OPT_COMPRESS },
        { "segment-size", required_argument, NULL, OPT_SEGMENT_SIZE },
        { "accept-history-loss", no_argument, NULL, OPT_ACCEPT_LOSS },
        { "padding", required_argument, NULL, OPT_PADDING },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    tally_options opt;
    const char *key_file = NULL, *dir, *key_path;
    uint8_t id[TALLY_ID_BYTES], *key = NULL;
    char id_hex[2 * TALLY_ID_BYTES + 1];
    struct anchor_opts ao;
    int c, rc, have_id = 0, accept_loss = 0;

    anchor_opts_init(&ao);
    memset(&opt, 0, sizeof opt);
    opt.name = "default";
    opt.cipher = TALLY_CIPHER_AES256GCM;
    opt.segment_size = TALLY_DEFAULT_SEGMENT_SIZE;
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
            opt.name = optarg;
            break;
        case OPT_ID:
            if (cli_unhex(optarg, id, sizeof id) < 0)
                return cli_usage_error(self, "--journal-id must be %u hex digits",
                                       2 * TALLY_ID_BYTES);
            have_id = 1;
            break;
        case OPT_CIPHER:
            if (strcmp(optarg, "aes256gcm") == 0)
                opt.cipher = TALLY_CIPHER_AES256GCM;
            else if (strcmp(optarg, "xchacha20poly1305") == 0)
                opt.cipher = TALLY_CIPHER_XCHACHA20POLY1305;
            else
                return cli_usage_error(self, "unknown cipher '%s' (aes256gcm or "
                                       "xchacha20poly1305)", optarg);
            break;
        case OPT_COMPRESS:
            opt.compress = 1;
            break;
        case OPT_SEGMENT_SIZE:
            if (cli_parse_size(optarg, &opt.segment_size) < 0 ||
                opt.segment_size < 4096)
                return cli_usage_error(self, "--segment-size must be a byte count "
                                       "of at least 4K (suffix K, M or G allowed)");
            break;
        case OPT_ACCEPT_LOSS:
            accept_loss = 1;
            break;
        case OPT_PADDING:
            if (tally_padding_parse(optarg, &opt.padding) < 0)
                return cli_usage_error(self, "unknown padding policy '%s' "
                                       "(none, block:N with N 16-16M, or "
                                       "buckets)", optarg);
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
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE or "
                               "TALLY_KEY_FILE");
    rc = anchor_opts_finish(self, &ao, ANCHOR_NEED_CONTRACT | ANCHOR_NEED_SENDER);
    if (rc == EXIT_OK && accept_loss && !anchor_opts_configured(&ao))
        rc = cli_usage_error(self, "--accept-history-loss applies only with an "
                             "anchor target");
    if (rc == EXIT_OK)
        rc = cli_key_load(self, key_path, &key);
    if (rc != EXIT_OK) {
        anchor_opts_free(&ao);
        return rc;
    }
    if (anchor_opts_configured(&ao)) {
        if (!have_id && (rc = tally_journal_id(key, opt.name, id)) < 0) {
            cli_key_free(key);
            anchor_opts_free(&ao);
            return cli_fail(self, "deriving the journal id of", dir, rc, NULL);
        }
        rc = check_history(self, &ao, dir, id, key, accept_loss);
        anchor_opts_free(&ao);
        if (rc != EXIT_OK) {
            cli_key_free(key);
            return rc;
        }
    }

    opt.master_key = key;
    if (have_id)
        opt.journal_id = id;
    rc = tally_init(dir, &opt);
    if (rc < 0) {
        int status = cli_fail(self, "creating journal", dir, rc, NULL);
        if (rc == TALLY_ECIPHER)
            fprintf(stderr, "tally init: this CPU has no AES-GCM; use "
                            "--cipher xchacha20poly1305\n");
        cli_key_free(key);
        return status;
    }
    if (!have_id) {
        rc = tally_journal_id(key, opt.name, id);
        if (rc < 0) {
            cli_key_free(key);
            return cli_fail(self, "deriving the journal id of", dir, rc, NULL);
        }
    }
    cli_key_free(key);
    cli_hex(id, sizeof id, id_hex);
    printf("created journal %s: name \"", dir);
    cli_print_escaped(stdout, (const uint8_t *)opt.name, strlen(opt.name), 0);
    printf("\", id %s, cipher %s%s", id_hex, cli_cipher_name(opt.cipher),
           opt.compress ? ", compressed" : "");
    if (opt.padding.kind != TALLY_PAD_NONE) {
        char pad[40];
        tally_padding_format(&opt.padding, pad, sizeof pad);
        printf(", padding %s", pad);
    }
    printf("\n");
    return cli_flush_stdout(self);
}
