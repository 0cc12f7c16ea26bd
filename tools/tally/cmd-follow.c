/*
 * cmd-follow.c — `tally follow --connect URL [--from SEQ] [--type T]
 * [--json]`: prints the records a running tallyd commits, caught up from
 * --from and then live, without a gap. The verb lives in the tallyd client
 * library (tools/tallyd/cli.c); this is its row in the table.
 */
#include "common.h"

#include "tally-client.h"

int cmd_follow(const struct cli_cmd *self, int argc, char **argv)
{
    (void)self;
    return tally_client_cmd_follow(argc, argv);
}
