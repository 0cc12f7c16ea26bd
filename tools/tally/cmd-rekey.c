/*
 * cmd-rekey.c — `tally rekey DIR`: starts a new key epoch (a new data key
 * for the segments written from now on), or, with --from-key-*, moves the
 * journal to a new master key by re-wrapping every epoch's data key
 * (FORMAT.md §3.2, §3.4; tally_rekey / tally_rewrap).
 */
#include "common.h"

#include <getopt.h>
#include <string.h>

const char cmd_rekey_usage[] =
    "Usage: tally rekey DIR [--key-file FILE | --key-source SPEC]\n"
    "       tally rekey DIR (--from-key-file FILE | --from-key-source SPEC)\n"
    "                       (--key-file FILE | --key-source SPEC)\n"
    "\n"
    "The first form starts a new key epoch: a new random data key, wrapped\n"
    "under the master key in DIR's metadata, becomes the current epoch. The\n"
    "next writer to open DIR writes its segments under it (each segment\n"
    "header names its epoch); records of older epochs stay readable. Rekey\n"
    "before 'tally forget' so that old records sit in epochs of their own.\n"
    "\n"
    "The second form rotates the master key (a KMS rotation, or moving from\n"
    "a key file to the dstack KMS): the data key of every epoch is unwrapped\n"
    "with the old master key (--from-key-*) and wrapped under the new one\n"
    "(--key-*), in one atomic replace of the metadata. No record is\n"
    "rewritten, so the chain and the anchors are untouched, and the journal\n"
    "id stays what it was; afterwards only the new key opens the journal.\n"
    "The journal id is no longer the one derived from the new key and the\n"
    "name: commands that derive it (status of a missing DIR) need\n"
    "--journal-id, which rekey prints.\n"
    "\n"
    "Both need DIR closed: a running writer (tally append, tallyd) holds its\n"
    "lock and rekey fails.\n"
    "\n"
    "Options:\n"
    "  --key-file FILE         the master key (the new one with --from-*);\n"
    "                          default $TALLY_KEY_SOURCE, then $TALLY_KEY_FILE\n"
    "  --key-source SPEC       the same as a key source: file:PATH, env:NAME\n"
    "                          (64 hex digits), dstack:[PATH] (the dstack\n"
    "                          KMS; default path /tally/journal). README \"Keys\"\n"
    "  --from-key-file FILE    the current master key, to rotate away from\n"
    "  --from-key-source SPEC  the same as a key source\n"
    "  -h, --help              show this help and exit\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_SOURCE, TALLY_KEY_FILE  the master key when no option names\n"
    "                  it\n"
    "  DSTACK_SIMULATOR_ENDPOINT  dstack: agent socket or http(s):// URL\n";

enum { OPT_KEY_FILE = 256, OPT_FROM_KEY };

int cmd_rekey(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "from-key-file", required_argument, NULL, OPT_FROM_KEY },
        { "from-key-source", required_argument, NULL, OPT_FROM_KEY },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL, *from_key = NULL, *key_path, *dir;
    uint8_t *key = NULL, *old_key = NULL;
    tally_epoch_report rep;
    int c, rc;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_FROM_KEY:
            from_key = optarg;
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
    if (from_key != NULL && key_file == NULL)
        return cli_usage_error(self, "rotating needs the new key too: "
                               "--key-file FILE or --key-source SPEC");
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE, "
                               "--key-source SPEC or TALLY_KEY_SOURCE");

    if (from_key == NULL) {
        rc = cli_key_load(self, key_path, &key);
        if (rc != EXIT_OK)
            return rc;
        rc = tally_rekey(dir, key, &rep);
        cli_key_free(key);
        if (rc < 0)
            return cli_fail(self, "starting a key epoch in", dir, rc,
                            rep.message);
        printf("%s: epoch %u started; the next writer writes its segments "
               "under it\n", dir, rep.epoch);
        return cli_flush_stdout(self);
    }

    rc = cli_key_load(self, from_key, &old_key);
    if (rc != EXIT_OK)
        return rc;
    rc = cli_key_load(self, key_path, &key);
    if (rc != EXIT_OK) {
        cli_key_free(old_key);
        return rc;
    }
    rc = tally_rewrap(dir, old_key, key, &rep);
    cli_key_free(old_key);
    cli_key_free(key);
    if (rc < 0)
        return cli_fail(self, "re-wrapping the epoch keys of", dir, rc,
                        rep.message);

    /* The id, for --journal-id: it no longer derives from the new key. */
    char idhex[2 * TALLY_ID_BYTES + 1] = "?";
    tally_iter *it = NULL;
    if (tally_iter_open(&it, dir, NULL, 0, TALLY_ITER_NO_DECRYPT) == 0) {
        uint8_t id[TALLY_ID_BYTES];
        tally_iter_id(it, id);
        cli_hex(id, sizeof id, idhex);
        tally_iter_free(it);
    }
    printf("%s: %u epoch key%s now wrapped under the new master key; journal "
           "id %s unchanged; the old key no longer opens it\n", dir,
           rep.epochs, rep.epochs == 1 ? " is" : "s are", idhex);
    return cli_flush_stdout(self);
}
