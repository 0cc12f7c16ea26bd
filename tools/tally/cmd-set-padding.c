/*
 * cmd-set-padding.c — `tally set-padding DIR POLICY`: records a new padding
 * policy in the metadata (FORMAT.md §3.3 PADDING, §4.2), for the segments
 * writers start from then on (tally_set_padding). Without POLICY it prints
 * the current one, which needs no key.
 */
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

const char cmd_set_padding_usage[] =
    "Usage: tally set-padding DIR POLICY [--key-file FILE | --key-source SPEC]\n"
    "       tally set-padding DIR\n"
    "\n"
    "Records POLICY as the padding policy of DIR: every record written by a\n"
    "writer opened from then on (the next 'tally append', tallyd start) is\n"
    "padded under it before it is encrypted, so that the storage operator\n"
    "sees only padded sizes (FORMAT.md sections 4.2 and 13). Records already\n"
    "written keep their sizes. The metadata is replaced atomically; its MAC,\n"
    "made with the master key, covers the policy, so the key is needed.\n"
    "DIR must be closed: a running writer holds its lock and set-padding\n"
    "fails. Without POLICY, prints the current policy (no key needed).\n"
    "\n"
    "Policies:\n"
    "  none        no padding (record sizes are visible to the byte)\n"
    "  block:N     pad each record's plaintext to a multiple of N bytes\n"
    "              (16 to 16M; K and M suffixes, powers of 1024)\n"
    "  buckets     pad to the next power of two from 64 B to 16 MiB: at most\n"
    "              20 distinct sizes on disk\n"
    "\n"
    "Options:\n"
    "  --key-file FILE    master key; default $TALLY_KEY_SOURCE, then\n"
    "                     $TALLY_KEY_FILE\n"
    "  --key-source SPEC  or a key source: file:PATH, env:NAME, dstack:[PATH]\n"
    "  -h, --help         show this help and exit\n";

enum { OPT_KEY_FILE = 256 };

int cmd_set_padding(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL, *key_path, *dir;
    uint8_t *key = NULL;
    tally_padding p, old;
    char name[40], oldname[40];
    int c, rc;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case 'h':
            return cli_help(self);
        default:
            return cli_usage_error(self, NULL);
        }
    }
    if (argc - optind < 1 || argc - optind > 2)
        return cli_usage_error(self, "expected DIR and an optional POLICY");
    dir = argv[optind];
    if (argc - optind == 1) {
        rc = tally_get_padding(dir, &p);
        if (rc < 0)
            return cli_fail(self, "reading the padding policy of", dir, rc,
                            NULL);
        tally_padding_format(&p, name, sizeof name);
        printf("%s\n", name);
        return cli_flush_stdout(self);
    }
    if (tally_padding_parse(argv[optind + 1], &p) < 0)
        return cli_usage_error(self, "unknown padding policy '%s' (none, "
                               "block:N with N 16-16M, or buckets)",
                               argv[optind + 1]);
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE, "
                               "--key-source SPEC or TALLY_KEY_SOURCE");
    /* The policy it replaces, for the message; an unknown one is replaced
     * all the same. */
    if (tally_get_padding(dir, &old) < 0)
        snprintf(oldname, sizeof oldname, "unknown");
    else
        tally_padding_format(&old, oldname, sizeof oldname);
    rc = cli_key_load(self, key_path, &key);
    if (rc != EXIT_OK)
        return rc;
    rc = tally_set_padding(dir, key, &p);
    cli_key_free(key);
    if (rc == -EBUSY) {
        cli_error(self, "setting the padding policy of", dir,
                  "a writer holds it (LOCK is taken); close it first");
        return tally_exit_code(rc);
    }
    if (rc < 0)
        return cli_fail(self, "setting the padding policy of", dir, rc, NULL);
    tally_padding_format(&p, name, sizeof name);
    printf("%s: padding %s (was %s); segments started from now on use it\n",
           dir, name, oldname);
    return cli_flush_stdout(self);
}
