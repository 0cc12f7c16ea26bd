/*
 * cmd-head.c — `tally head DIR`: the journal's head (seq, link) read from
 * the files alone, without the key (FORMAT.md §4.4).
 */
#include "common.h"

#include <getopt.h>

const char cmd_head_usage[] =
    "Usage: tally head DIR [--json]\n"
    "\n"
    "Prints the head of the journal in DIR: the seq of its last whole record\n"
    "and the chain link stored after it (0 and the genesis link when the\n"
    "journal is empty). Needs no key and takes no lock: it reads the link\n"
    "stored after the last whole frame and does not check the chain (use\n"
    "'tally verify' for that).\n"
    "\n"
    "Output:\n"
    "  seq  N\n"
    "  link HEX      (64 hex digits)\n"
    "or with --json: {\"seq\":N,\"link\":\"HEX\"}\n"
    "\n"
    "Options:\n"
    "  --json      print one JSON object\n"
    "  -h, --help  show this help and exit\n";

enum { OPT_JSON = 256 };

int cmd_head(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    tally_head_info h;
    char link[2 * TALLY_HASH_BYTES + 1];
    int c, rc, json = 0;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
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
    rc = tally_read_head(argv[optind], &h);
    if (rc < 0)
        return cli_fail(self, "reading the head of journal", argv[optind], rc,
                        NULL);
    cli_hex(h.link, sizeof h.link, link);
    if (json)
        printf("{\"seq\":%llu,\"link\":\"%s\"}\n", (unsigned long long)h.seq,
               link);
    else
        printf("seq  %llu\nlink %s\n", (unsigned long long)h.seq, link);
    return cli_flush_stdout(self);
}
