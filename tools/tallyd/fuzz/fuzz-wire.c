/*
 * fuzz-wire.c — libFuzzer harness for the tallyd message parsers
 * (wire.c, docs/FORMAT.md §10): the first byte picks the parser, the rest
 * is the message. Build with clang and -Dfuzz=true, then e.g.
 *   build/tools/tallyd/fuzz/fuzz-wire -max_total_time=60 -max_len=4096
 * A parsed APPEND is also expanded into records and checked to lie inside
 * the message, so an overread shows up under ASan.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wire_request w;
    wire_reply r;
    wire_pub u;
    const char *why;
    uint8_t which;

    if (size < 1)
        return 0;
    which = data[0] % 3;
    data++;
    size--;
    switch (which) {
    case 0:
        if (wire_parse_request(data, size, &w, &why) == 0 &&
            w.op == WIRE_OP_APPEND) {
            tally_record_in *recs = calloc(w.count, sizeof *recs);

            if (!recs)
                return 0;
            wire_append_records(&w, recs);
            for (uint32_t i = 0; i < w.count; i++) {
                const uint8_t *p = recs[i].payload;

                if (p < data || p + recs[i].payload_len > data + size ||
                    !wire_type_allowed(recs[i].type))
                    abort();
            }
            free(recs);
        }
        break;
    case 1:
        if (wire_parse_reply(data, size, &r, &why) == 0) {
            wire_ack a;
            wire_status s;
            wire_range g;
            const uint8_t *pub;
            size_t len;

            (void)wire_parse_ack(&r, &a, &why);
            (void)wire_parse_status(&r, &s, &why);
            if (wire_parse_range(&r, &g, &why) == 0)
                while (wire_range_next(&g, &pub, &len, &why) == 1)
                    (void)wire_parse_pub(pub, len, &u, &why);
        }
        break;
    default:
        (void)wire_parse_pub(data, size, &u, &why);
        break;
    }
    return 0;
}
