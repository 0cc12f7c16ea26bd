/*
 * replay.c — tally_replay: an application's startup replay, from the newest
 * SNAPSHOT record on (FORMAT.md §11.6), so that its cost follows what
 * happened since the snapshot, not the journal's age.
 */
#include <errno.h>

#include "compact.h"

int tally_replay(const char *dir, const uint8_t *master_key,
                 tally_replay_fn fn, void *ctx, uint64_t *ret_count)
{
    if (!dir || !fn)
        return -EINVAL;
    tally_iter *it;
    int rc = tally_iter_open(&it, dir, master_key, 0,
                             TALLY_ITER_FROM_SNAPSHOT |
                                 TALLY_ITER_TOLERATE_TAIL);
    if (rc < 0)
        return rc;
    uint64_t n = 0;
    tally_record r;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        if (r.kind == 3)
            continue; /* pruned: nothing to replay */
        n++;
        rc = fn(ctx, &r);
        if (rc != 0)
            break;
    }
    tally_iter_free(it);
    if (rc != 0)
        return rc;
    if (ret_count)
        *ret_count = n;
    return 0;
}
