/*
 * cmd-init.c — `tally init DIR`: creates a journal (metadata with a fresh
 * data key wrapped under the master key, FORMAT.md §3).
 */
#include "common.h"

#include <getopt.h>
#include <string.h>

const char cmd_init_usage[] =
    "Usage: tally init DIR --key-file FILE [--name NAME] [--journal-id HEX]\n"
    "                  [--cipher aes256gcm|xchacha20poly1305] [--compress]\n"
    "                  [--segment-size BYTES]\n"
    "\n"
    "Creates a journal in DIR (created if missing; it must not hold a journal\n"
    "already) and prints one line: its directory, name, journal id and cipher.\n"
    "\n"
    "Options:\n"
    "  --key-file FILE      master key (see 'tally keygen'); default\n"
    "                       $TALLY_KEY_FILE. Required.\n"
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
    "  -h, --help           show this help and exit\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE  key file used when --key-file is not given\n";

enum { OPT_KEY_FILE = 256, OPT_NAME, OPT_ID, OPT_CIPHER, OPT_COMPRESS,
       OPT_SEGMENT_SIZE };

int cmd_init(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "name", required_argument, NULL, OPT_NAME },
        { "journal-id", required_argument, NULL, OPT_ID },
        { "cipher", required_argument, NULL, OPT_CIPHER },
        { "compress", no_argument, NULL, OPT_COMPRESS },
        { "segment-size", required_argument, NULL, OPT_SEGMENT_SIZE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    tally_options opt;
    const char *key_file = NULL, *dir, *key_path;
    uint8_t id[TALLY_ID_BYTES], *key = NULL;
    char id_hex[2 * TALLY_ID_BYTES + 1];
    int c, rc, have_id = 0;

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
        case 'h':
            return cli_help(self);
        default:
            return cli_usage_error(self, NULL);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(self, "expected exactly one DIR argument");
    dir = argv[optind];
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE or "
                               "TALLY_KEY_FILE");
    rc = cli_key_load(self, key_path, &key);
    if (rc != EXIT_OK)
        return rc;

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
    printf("\", id %s, cipher %s%s\n", id_hex, cli_cipher_name(opt.cipher),
           opt.compress ? ", compressed" : "");
    return cli_flush_stdout(self);
}
