/*
 * record.c — the payload of a COMPACTION record (FORMAT.md §11.5): a fixed
 * part, the seq ranges pruned and the files written. Little-endian, like
 * every integer in the files.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compact-internal.h"
#include "tally-internal.h"

#define RANGE_BYTES 16u
#define FILE_BYTES 40u

int tc_compaction_encode(const tally_compaction_info *in, uint8_t **ret,
                         size_t *ret_len)
{
    size_t len = TALLY_COMPACTION_FIXED_BYTES +
                 (size_t)in->range_count * RANGE_BYTES +
                 (size_t)in->file_count * FILE_BYTES;
    if (len > TALLY_MAX_PAYLOAD)
        return TALLY_ETOOBIG;
    uint8_t *p = calloc(1, len);
    if (!p)
        return -ENOMEM;
    memcpy(p, TALLY_COMPACTION_MAGIC, 4);
    p[4] = 1; /* version */
    p[5] = in->flags;
    le64_put(p + 8, in->started_ns);
    le64_put(p + 16, in->finished_ns);
    le64_put(p + 24, in->first_seq);
    le64_put(p + 32, in->last_seq);
    memcpy(p + 40, in->last_link, 32);
    le64_put(p + 72, in->snapshot_seq);
    le64_put(p + 80, in->tombstone_retention_ns);
    le64_put(p + 88, in->records_pruned);
    le64_put(p + 96, in->pruned_by_snapshot);
    le64_put(p + 104, in->pruned_superseded);
    le64_put(p + 112, in->pruned_tombstones);
    le64_put(p + 120, in->bytes_before);
    le64_put(p + 128, in->bytes_after);
    le32_put(p + 136, in->range_count);
    le32_put(p + 140, in->file_count);
    uint8_t *q = p + TALLY_COMPACTION_FIXED_BYTES;
    for (uint32_t i = 0; i < in->range_count; i++, q += RANGE_BYTES) {
        le64_put(q, in->ranges[i].first_seq);
        le64_put(q + 8, in->ranges[i].last_seq);
    }
    for (uint32_t i = 0; i < in->file_count; i++, q += FILE_BYTES) {
        const tally_compaction_file *f = &in->files[i];
        le64_put(q, f->first_segment);
        le64_put(q + 8, f->last_segment);
        le32_put(q + 16, f->files_replaced);
        le64_put(q + 24, f->bytes_before);
        le64_put(q + 32, f->bytes_after);
    }
    *ret = p;
    *ret_len = len;
    return 0;
}

void tally_compaction_info_free(tally_compaction_info *info)
{
    if (!info)
        return;
    free(info->ranges);
    free(info->files);
    info->ranges = NULL;
    info->files = NULL;
}

int tally_compaction_decode(const uint8_t *p, size_t len,
                            tally_compaction_info *ret)
{
    if (!p || !ret)
        return -EINVAL;
    if (len < TALLY_COMPACTION_FIXED_BYTES ||
        memcmp(p, TALLY_COMPACTION_MAGIC, 4) != 0)
        return TALLY_EINTEGRITY;
    if (p[4] != 1)
        return TALLY_EFORMAT;
    if ((p[5] & ~(TALLY_COMPACTION_COALESCED | TALLY_COMPACTION_PARTIAL)) ||
        le16_get(p + 6) != 0)
        return TALLY_EINTEGRITY;
    tally_compaction_info r;
    memset(&r, 0, sizeof r);
    r.flags = p[5];
    r.started_ns = le64_get(p + 8);
    r.finished_ns = le64_get(p + 16);
    r.first_seq = le64_get(p + 24);
    r.last_seq = le64_get(p + 32);
    memcpy(r.last_link, p + 40, 32);
    r.snapshot_seq = le64_get(p + 72);
    r.tombstone_retention_ns = le64_get(p + 80);
    r.records_pruned = le64_get(p + 88);
    r.pruned_by_snapshot = le64_get(p + 96);
    r.pruned_superseded = le64_get(p + 104);
    r.pruned_tombstones = le64_get(p + 112);
    r.bytes_before = le64_get(p + 120);
    r.bytes_after = le64_get(p + 128);
    r.range_count = le32_get(p + 136);
    r.file_count = le32_get(p + 140);
    uint64_t need = TALLY_COMPACTION_FIXED_BYTES +
                    (uint64_t)r.range_count * RANGE_BYTES +
                    (uint64_t)r.file_count * FILE_BYTES;
    if (need != len)
        return TALLY_EINTEGRITY;
    if (r.range_count) {
        r.ranges = calloc(r.range_count, sizeof *r.ranges);
        if (!r.ranges)
            return -ENOMEM;
    }
    if (r.file_count) {
        r.files = calloc(r.file_count, sizeof *r.files);
        if (!r.files) {
            free(r.ranges);
            return -ENOMEM;
        }
    }
    const uint8_t *q = p + TALLY_COMPACTION_FIXED_BYTES;
    int rc = 0;
    for (uint32_t i = 0; i < r.range_count; i++, q += RANGE_BYTES) {
        r.ranges[i].first_seq = le64_get(q);
        r.ranges[i].last_seq = le64_get(q + 8);
        if (r.ranges[i].first_seq > r.ranges[i].last_seq)
            rc = TALLY_EINTEGRITY;
    }
    for (uint32_t i = 0; i < r.file_count; i++, q += FILE_BYTES) {
        tally_compaction_file *f = &r.files[i];
        f->first_segment = le64_get(q);
        f->last_segment = le64_get(q + 8);
        f->files_replaced = le32_get(q + 16);
        if (le32_get(q + 20) != 0 || f->first_segment > f->last_segment)
            rc = TALLY_EINTEGRITY;
        f->bytes_before = le64_get(q + 24);
        f->bytes_after = le64_get(q + 32);
    }
    if (rc < 0) {
        tally_compaction_info_free(&r);
        return rc;
    }
    *ret = r;
    return 0;
}
