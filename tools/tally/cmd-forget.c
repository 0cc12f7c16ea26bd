/*
 * cmd-forget.c — `tally forget DIR --before SEQ`: crypto-erasure. Destroys
 * the wrapped data keys of the old epochs whose records all come before
 * SEQ (tally_forget, FORMAT.md §3.4); the records stay in the chain.
 */
#include "common.h"

#include <getopt.h>
#include <string.h>

const char cmd_forget_usage[] =
    "Usage: tally forget DIR --before SEQ [--key-file FILE | --key-source SPEC]\n"
    "\n"
    "Destroys, in DIR's metadata, the wrapped data keys of the oldest key\n"
    "epochs all of whose records have a seq below SEQ. Their record bodies\n"
    "can then no longer be decrypted with the master key: 'tally cat' skips\n"
    "them (--all lists them as \"forgotten\"). Their frames stay, so the hash\n"
    "chain, the anchors and 'tally verify' (with or without the key) still\n"
    "pass. An epoch that holds a record at or after SEQ is kept, and so is\n"
    "the current epoch: run 'tally rekey DIR' first, so that the records to\n"
    "forget sit in epochs of their own. This cannot be undone.\n"
    "\n"
    "What it does not do: a copy of the metadata taken before (a backup, a\n"
    "snapshot of the disk, an EPOCH reply of tallyd) still holds the wrapped\n"
    "keys, and with the master key opens those records. Rotate the master key\n"
    "as well ('tally rekey --from-key-source OLD --key-source NEW') and\n"
    "destroy the old one where you can. FORMAT.md section 3.4 has the whole\n"
    "threat model.\n"
    "\n"
    "Needs DIR closed (no running writer).\n"
    "\n"
    "Options:\n"
    "  --before SEQ      forget the epochs whose records are all below SEQ\n"
    "  --key-file FILE   master key; default $TALLY_KEY_SOURCE, then\n"
    "                    $TALLY_KEY_FILE. Required.\n"
    "  --key-source SPEC the same as a key source: file:PATH, env:NAME,\n"
    "                    dstack:[PATH] (README \"Keys\")\n"
    "  -h, --help        show this help and exit\n"
    "\n"
    "Environment:\n"
    "  TALLY_KEY_SOURCE, TALLY_KEY_FILE  the master key when no option names\n"
    "                  it\n";

enum { OPT_KEY_FILE = 256, OPT_BEFORE };

int cmd_forget(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "before", required_argument, NULL, OPT_BEFORE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL, *key_path, *dir;
    uint64_t before = 0;
    uint8_t *key = NULL;
    tally_epoch_report rep;
    int c, rc;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_BEFORE:
            if (cli_parse_u64(optarg, &before) < 0 || before == 0)
                return cli_usage_error(self, "--before must be a seq (1 or "
                                       "more)");
            break;
        case 'h':
            return cli_help(self);
        default:
            return cli_usage_error(self, NULL);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(self, "expected exactly one DIR argument");
    if (before == 0)
        return cli_usage_error(self, "--before SEQ is required");
    dir = argv[optind];
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE, "
                               "--key-source SPEC or TALLY_KEY_SOURCE");
    rc = cli_key_load(self, key_path, &key);
    if (rc != EXIT_OK)
        return rc;
    rc = tally_forget(dir, key, before, &rep);
    cli_key_free(key);
    if (rc < 0)
        return cli_fail(self, "forgetting epoch keys of", dir, rc,
                        rep.message);

    if (rep.epochs > 0)
        printf("%s: forgot the data keys of %u epoch%s\n", dir, rep.epochs,
               rep.epochs == 1 ? "" : "s");
    else
        printf("%s: nothing to forget\n", dir);
    if (rep.forgotten_through > 0)
        printf("%s: records up to seq %llu are in forgotten epochs and can no "
               "longer be decrypted\n", dir,
               (unsigned long long)rep.forgotten_through);
    if (rep.kept_epoch != 0) {
        if (rep.kept_epoch == rep.epoch)
            printf("%s: epoch %u is kept: it is the current epoch ('tally "
                   "rekey %s' starts a new one)\n", dir, rep.kept_epoch, dir);
        else
            printf("%s: epoch %u is kept: it holds records at or after seq "
                   "%llu (its first is %llu)\n", dir, rep.kept_epoch,
                   (unsigned long long)before,
                   (unsigned long long)rep.kept_first_seq);
    }
    return cli_flush_stdout(self);
}
