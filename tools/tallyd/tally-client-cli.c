/*
 * tally-client-cli.c — `tally-client send|follow|status`: the tallyd verbs
 * as a stand-alone program, until (and besides) the `tally` command lists
 * them. The verbs themselves live in the client library (cli.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "tally-client.h"

static const char usage[] =
    "Usage: tally-client send   --connect URL [--type T] [--key K] ...\n"
    "       tally-client follow --connect URL [--from SEQ] [--type T] "
    "[--json] ...\n"
    "       tally-client status --connect URL\n"
    "\n"
    "Run 'tally-client VERB --help' for the options of a verb.\n";

static int cmd_status(int argc, char **argv)
{
    tally_client *c = NULL;
    tally_client_status st;
    char link[65], jid[65];
    int rc;

    if (argc != 3 || strcmp(argv[1], "--connect") != 0) {
        fputs(usage, stderr);
        return 2;
    }
    rc = tally_client_connect(&c, argv[2], NULL);
    if (rc == 0)
        rc = tally_client_status_get(c, &st);
    if (rc < 0) {
        fprintf(stderr, "tally-client status: %s\n",
                c ? tally_client_errmsg(c) : tally_strerror(rc));
        if (c)
            tally_client_close(c);
        return 1;
    }
    sodium_bin2hex(link, sizeof link, st.head_link, 32);
    sodium_bin2hex(jid, sizeof jid, st.journal_id, 32);
    printf("head %" PRIu64 " %s\ndurable %" PRIu64 "\npublished %" PRIu64
           "\nappended %" PRIu64 "\nuptime_ms %" PRIu64 "\njournal_id %s\n"
           "publish %s\npull %s\nform %s\n",
           st.head_seq, link, st.durable_seq, st.published_seq, st.appended,
           st.uptime_ms, jid, st.publish_url, st.pull_url,
           st.stored ? "stored" : "plain");
    /* the anchoring: one line per figure, "name value", like the rest */
    printf("anchoring %s\n", !st.anchoring ? "off"
                             : st.backend == 2 ? "anchor-file" : "ethereum");
    if (st.anchor_seq) {
        char head[65], tx[65];

        sodium_bin2hex(head, sizeof head, st.anchor_head, 32);
        sodium_bin2hex(tx, sizeof tx, st.anchor_tx, 32);
        printf("anchor %" PRIu64 " %s\n", st.anchor_seq, head);
        if (st.anchor_block)
            printf("anchor_block %" PRIu64 "\n", st.anchor_block);
        if (!sodium_is_zero(st.anchor_tx, 32))
            printf("anchor_tx 0x%s\n", tx);
        if (st.anchor_age_ms != UINT64_MAX)
            printf("anchor_age_ms %" PRIu64 "\n", st.anchor_age_ms);
    } else {
        puts("anchor none");
    }
    if (st.anchoring) {
        printf("anchor_lag_records %" PRIu64 "\nanchor_lag_ms %" PRIu64
               "\ncheckpoint_rounds %" PRIu64 "\ncheckpoint_anchors %" PRIu64
               "\ncheckpoint_failures %" PRIu64 "\n", st.lag_records,
               st.lag_ms, st.rounds, st.anchors, st.failures);
        if (st.consecutive_failures)
            printf("checkpoint_failing %" PRIu64 " %s\n",
                   st.consecutive_failures,
                   st.last_errmsg[0] ? st.last_errmsg
                                     : tally_strerror(st.last_error));
    }
    tally_client_close(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "send") == 0)
        return tally_client_cmd_send(argc - 1, argv + 1);
    if (strcmp(argv[1], "follow") == 0)
        return tally_client_cmd_follow(argc - 1, argv + 1);
    if (strcmp(argv[1], "status") == 0)
        return cmd_status(argc - 1, argv + 1);
    fprintf(stderr, "tally-client: unknown verb '%s'\n%s", argv[1], usage);
    return 2;
}
