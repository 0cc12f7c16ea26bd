/*
 * cmd-send.c — `tally send --connect URL [--type T] [--key K]`: appends the
 * lines of stdin through a running tallyd. The verb lives in the tallyd
 * client library (tools/tallyd/cli.c); this is its row in the table.
 */
#include "common.h"

#include "tally-client.h"

int cmd_send(const struct cli_cmd *self, int argc, char **argv)
{
    (void)self;
    return tally_client_cmd_send(argc, argv);
}
