/*
 * stress-tool.c — small helpers for the shell parts of tests/stress:
 *
 *   stress-tool payloads FROM COUNT [PAUSE_EVERY]
 *       prints COUNT lines, the payloads (stress.h) of seqs FROM, FROM+1, ...
 *       (COUNT 0: without end, until stdout is closed), with a 3 ms pause
 *       after every PAUSE_EVERY lines
 *   stress-tool check DIR KEYFILE MIN [--tolerate-tail]
 *       reads the journal with the key: seqs dense from 1, every payload
 *       the one of its seq, at least MIN records (a torn tail ends it
 *       quietly with --tolerate-tail); prints the record count.
 *       Exit 0, or 1 with the reason on stderr.
 */
#include "stress.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

static int payloads(uint64_t from, uint64_t count, uint64_t pause_every)
{
    char buf[65536];
    size_t len = 0;
    signal(SIGPIPE, SIG_IGN);
    for (uint64_t s = from; count == 0 || s < from + count; s++) {
        if (len + ST_PAYLOAD_MAX + 1 > sizeof buf) {
            if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0)
                return 0; /* the reader is gone: done */
            len = 0;
        }
        len += st_payload(s, buf + len);
        buf[len++] = '\n';
        if (pause_every && (s - from + 1) % pause_every == 0) {
            /* a pause in the input: `--sync none` acknowledges then */
            if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0)
                return 0;
            len = 0;
            st_sleep_ms(3);
        }
    }
    if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0)
        return 0;
    return 0;
}

static int check(const char *dir, const char *keyfile, uint64_t min,
                 unsigned flags)
{
    uint8_t key[TALLY_KEY_BYTES];
    st_load_key(keyfile, key);
    st_journal_check jc;
    char msg[512];
    if (st_check_journal(dir, key, flags, 1, NULL, 0, &jc, msg, sizeof msg) < 0)
        st_fail("%s", msg);
    sodium_memzero(key, sizeof key);
    if (jc.records < min)
        st_fail("%s holds seqs 1..%" PRIu64 ", but seq %" PRIu64 " was "
                "acknowledged: lost", dir, jc.records, min);
    printf("%" PRIu64 "\n", jc.records);
    return 0;
}

int main(int argc, char **argv)
{
    st_prog = "stress-tool";
    if (sodium_init() < 0)
        st_fail("sodium_init failed");
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "payloads") == 0)
        return payloads(strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                        argc == 5 ? strtoull(argv[4], NULL, 10) : 0);
    if ((argc == 5 || (argc == 6 && strcmp(argv[5], "--tolerate-tail") == 0)) &&
        strcmp(argv[1], "check") == 0)
        return check(argv[2], argv[3], strtoull(argv[4], NULL, 10),
                     argc == 6 ? TALLY_ITER_TOLERATE_TAIL : 0);
    fprintf(stderr, "usage: stress-tool payloads FROM COUNT [PAUSE_EVERY] | "
            "check DIR KEYFILE MIN [--tolerate-tail]\n");
    return 2;
}
