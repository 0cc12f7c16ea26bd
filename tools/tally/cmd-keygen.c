/*
 * cmd-keygen.c — `tally keygen FILE`: writes a new random master key.
 */
#include "common.h"

#include <getopt.h>

const char cmd_keygen_usage[] =
    "Usage: tally keygen FILE\n"
    "\n"
    "Creates a new master key: 32 random bytes written to FILE, which must\n"
    "not exist yet; it is created with mode 0600 and fsynced. Prints nothing.\n"
    "Keep the file safe and private: without it a journal can neither be read\n"
    "nor appended to. The key never appears in output or messages.\n"
    "\n"
    "Options:\n"
    "  -h, --help  show this help and exit\n";

int cmd_keygen(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c, rc;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': return cli_help(self);
        default: return cli_usage_error(self, NULL);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(self, "expected exactly one FILE argument");
    rc = tally_keygen(argv[optind]);
    if (rc < 0)
        return cli_fail(self, "writing key file", argv[optind], rc, NULL);
    return EXIT_OK;
}
