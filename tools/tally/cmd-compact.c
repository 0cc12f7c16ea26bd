/*
 * cmd-compact.c — `tally compact DIR`: opens the journal for writing and
 * runs the compactor on it (compact/compact.h, FORMAT.md §11), then prints
 * its report for a human or as JSON.
 */
#include "common.h"
#include "compact.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

const char cmd_compact_usage[] =
    "Usage: tally compact DIR [--key-file FILE | --key-source SPEC]\n"
    "                     [--dry-run] [--json] [--retention SECONDS]\n"
    "                     [--target-size SIZE] [--no-merge]\n"
    "\n"
    "Shrinks the sealed segments of the journal in DIR (docs/FORMAT.md §11):\n"
    "  - the body of a record superseded by a newer record with the same\n"
    "    record key is removed, and so is every body before the newest\n"
    "    SNAPSHOT record; a tombstone (record key, empty payload) goes too\n"
    "    once it is older than --retention;\n"
    "  - small segment files are merged into files near the target size.\n"
    "A removed body leaves its frame header, record hash and link, so the\n"
    "chain, the head and every anchored checkpoint verify exactly as before,\n"
    "with and without the key; 'tally cat --all' lists such records as\n"
    "pruned. CHECKPOINT and COMPACTION records are never pruned, nothing is\n"
    "re-encrypted, and the segment being written is never touched. Every\n"
    "file is replaced atomically (temporary file, fsync, rename, directory\n"
    "fsync), so a crash leaves the journal as before or as after. A\n"
    "COMPACTION record describing the run is appended (readable without the\n"
    "key).\n"
    "\n"
    "compact opens DIR for writing: while another writer has it open (tally\n"
    "append, tallyd, an application) it fails with \"another writer holds\n"
    "it\" (exit 1). A long-running writer compacts through its own handle\n"
    "instead (tally_compact()). Readers may go on reading meanwhile.\n"
    "\n"
    "Options:\n"
    "  --key-file FILE      master key; default $TALLY_KEY_SOURCE, then\n"
    "                       $TALLY_KEY_FILE. Required: the record keys are\n"
    "                       inside the encrypted records\n"
    "  --key-source SPEC    the same as a key source (file:, env:, dstack:)\n"
    "  --dry-run            report what would be done; write nothing\n"
    "  --json               print the report as one JSON object\n"
    "  --retention SECONDS  prune tombstones older than this (0: all of\n"
    "                       them); default: keep tombstones\n"
    "  --target-size SIZE   size of a merged file (K, M, G suffixes);\n"
    "                       default: the journal's segment size\n"
    "  --no-merge           prune in place only\n"
    "  -h, --help           show this help and exit\n"
    "\n"
    "Output: what was examined (the sealed seqs and files), the records\n"
    "pruned and why, files and bytes before and after, bytes read and\n"
    "written, the time taken and the seq of the COMPACTION record.\n";

enum {
    OPT_KEY_FILE = 256, OPT_DRY_RUN, OPT_JSON, OPT_RETENTION, OPT_TARGET,
    OPT_NO_MERGE
};

static void print_mib(const char *label, uint64_t bytes)
{
    printf("%s%.2f MiB", label, (double)bytes / (1024.0 * 1024.0));
}

static void print_human(const char *dir, const tally_compact_report *r)
{
    double secs = (double)r->elapsed_ns / 1e9;

    if (r->records == 0 && r->files_before == 0) {
        printf("%s: no sealed segments to compact (%.3f s)\n", dir, secs);
        return;
    }
    printf("%s: %s sealed seqs %llu..%llu (%llu files)%s\n", dir,
           r->dry_run ? "would compact" : "compacted",
           (unsigned long long)r->first_seq, (unsigned long long)r->last_seq,
           (unsigned long long)r->files_before,
           r->dry_run ? " [dry run]" : "");
    printf("  pruned   %llu records (before snapshot %llu, superseded %llu, "
           "tombstones %llu); %llu were pruned before\n",
           (unsigned long long)r->records_pruned,
           (unsigned long long)r->pruned_by_snapshot,
           (unsigned long long)r->pruned_superseded,
           (unsigned long long)r->pruned_tombstones,
           (unsigned long long)r->already_pruned);
    if (r->snapshot_seq)
        printf("  snapshot newest SNAPSHOT record at seq %llu\n",
               (unsigned long long)r->snapshot_seq);
    printf("  files    %llu -> %llu (%llu %s, %llu segments merged, "
           "%llu leftovers removed)\n",
           (unsigned long long)r->files_before,
           (unsigned long long)r->files_after,
           (unsigned long long)r->files_rewritten,
           r->dry_run ? "to write" : "written",
           (unsigned long long)r->segments_merged,
           (unsigned long long)r->leftovers_removed);
    print_mib("  bytes    ", r->bytes_before);
    print_mib(" -> ", r->bytes_after);
    print_mib(" (read ", r->bytes_read);
    print_mib(", written ", r->bytes_written);
    printf(")\n  time     %.3f s\n", secs);
    if (r->compaction_seq)
        printf("  record   COMPACTION at seq %llu\n",
               (unsigned long long)r->compaction_seq);
    else if (!r->dry_run)
        printf("  record   none (nothing to do)\n");
}

static void print_json(const char *dir, const tally_compact_report *r)
{
    fputs("{\"dir\":", stdout);
    cli_json_string(stdout, (const uint8_t *)dir, strlen(dir));
    printf(",\"dry_run\":%s,\"first_seq\":%llu,\"last_seq\":%llu,"
           "\"records\":%llu,\"already_pruned\":%llu,\"snapshot_seq\":%llu,"
           "\"records_pruned\":%llu,\"pruned_by_snapshot\":%llu,"
           "\"pruned_superseded\":%llu,\"pruned_tombstones\":%llu,"
           "\"files_before\":%llu,\"files_after\":%llu,"
           "\"files_rewritten\":%llu,\"segments_merged\":%llu,"
           "\"leftovers_removed\":%llu,\"bytes_before\":%llu,"
           "\"bytes_after\":%llu,\"bytes_read\":%llu,\"bytes_written\":%llu,"
           "\"compaction_seq\":%llu,\"elapsed_ns\":%llu}\n",
           r->dry_run ? "true" : "false",
           (unsigned long long)r->first_seq, (unsigned long long)r->last_seq,
           (unsigned long long)r->records,
           (unsigned long long)r->already_pruned,
           (unsigned long long)r->snapshot_seq,
           (unsigned long long)r->records_pruned,
           (unsigned long long)r->pruned_by_snapshot,
           (unsigned long long)r->pruned_superseded,
           (unsigned long long)r->pruned_tombstones,
           (unsigned long long)r->files_before,
           (unsigned long long)r->files_after,
           (unsigned long long)r->files_rewritten,
           (unsigned long long)r->segments_merged,
           (unsigned long long)r->leftovers_removed,
           (unsigned long long)r->bytes_before,
           (unsigned long long)r->bytes_after,
           (unsigned long long)r->bytes_read,
           (unsigned long long)r->bytes_written,
           (unsigned long long)r->compaction_seq,
           (unsigned long long)r->elapsed_ns);
}

int cmd_compact(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "key-source", required_argument, NULL, OPT_KEY_FILE },
        { "dry-run", no_argument, NULL, OPT_DRY_RUN },
        { "json", no_argument, NULL, OPT_JSON },
        { "retention", required_argument, NULL, OPT_RETENTION },
        { "target-size", required_argument, NULL, OPT_TARGET },
        { "no-merge", no_argument, NULL, OPT_NO_MERGE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *key_file = NULL, *key_path, *dir;
    tally_compact_options co;
    tally_compact_report rep;
    tally_options opt;
    tally_recovery rec;
    uint8_t *key = NULL;
    tally *t = NULL;
    uint64_t secs;
    int c, rc, json = 0, status;

    memset(&co, 0, sizeof co);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_DRY_RUN:
            co.dry_run = 1;
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_RETENTION:
            if (cli_parse_u64(optarg, &secs) < 0 ||
                secs > UINT64_MAX / 1000000000u)
                return cli_usage_error(self, "--retention must be a number "
                                       "of seconds");
            /* 0 s: every tombstone is past (the library's 0 keeps them). */
            co.tombstone_retention_ns = secs ? secs * 1000000000u : 1;
            break;
        case OPT_TARGET:
            if (cli_parse_size(optarg, &co.target_size) < 0 ||
                co.target_size < 4096)
                return cli_usage_error(self, "--target-size must be a size "
                                       "of 4K or more");
            break;
        case OPT_NO_MERGE:
            co.no_merge = 1;
            break;
        case 'h':
            return cli_help(self);
        default:
            return cli_usage_error(self, NULL);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(self, "expected exactly one DIR argument");
    dir = argv[optind];
    key_path = cli_key_path(key_file);
    if (key_path == NULL)
        return cli_usage_error(self, "a key is needed: --key-file FILE, "
                               "--key-source SPEC or TALLY_KEY_SOURCE");
    rc = cli_key_load(self, key_path, &key);
    if (rc != EXIT_OK)
        return rc;
    memset(&opt, 0, sizeof opt);
    opt.master_key = key;
    opt.sync = TALLY_SYNC_BATCH;
    rc = tally_open(&t, dir, &opt, &rec);
    cli_key_free(key); /* the handle keeps its own copy */
    if (rc == -EBUSY) {
        cli_error(self, "opening journal", dir,
                  "another writer holds it (LOCK is taken)");
        return tally_exit_code(rc);
    }
    if (rc < 0)
        return cli_fail(self, "opening journal", dir, rc, rec.message);
    if (rec.cut_bytes > 0) {
        fprintf(stderr, "tally compact: recovered: cut %llu bytes from %.*s",
                (unsigned long long)rec.cut_bytes,
                (int)strnlen(rec.segment, sizeof rec.segment), rec.segment);
        if (rec.cut_first_seq > 0)
            fprintf(stderr, ", records from seq %llu lost (never synced)",
                    (unsigned long long)rec.cut_first_seq);
        fputc('\n', stderr);
    }

    rc = tally_compact(t, &co, &rep);
    status = EXIT_OK;
    if (rc < 0)
        status = cli_fail(self, "compacting", dir, rc, rep.message);
    else if (json)
        print_json(dir, &rep);
    else
        print_human(dir, &rep);
    rc = tally_close(t);
    if (rc < 0 && status == EXIT_OK)
        status = cli_fail(self, "closing journal", dir, rc, NULL);
    if (status == EXIT_OK)
        status = cli_flush_stdout(self);
    return status;
}
