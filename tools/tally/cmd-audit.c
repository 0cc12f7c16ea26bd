/*
 * cmd-audit.c — `tally audit DIR`: a complete, read-only audit of a journal
 * (audit/audit.h), with or without the key, with anchors checked online
 * (anchor options) or offline (--evidence FILE), as a report for a human or
 * one JSON document; `--export-evidence FILE` writes the evidence bundle an
 * offline audit needs (FORMAT.md §12) and audits against it.
 */
#include "anchor-opts.h"

#include "audit.h"

/* The help text is longer than the 4095 bytes C99 promises for a string
 * literal; gcc and clang take any length. */
#pragma GCC diagnostic ignored "-Woverlength-strings"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char cmd_audit_usage[] =
    "Usage: tally audit DIR [--key-file FILE | --no-key] [--json]\n"
    "                   [--from SEQ] [--to SEQ]\n"
    "                   [anchor options | --evidence FILE]\n"
    "       tally audit DIR --export-evidence FILE [--key-file FILE]\n"
    "                   [--json] anchor options (--rpc, --contract, --writer)\n"
    "\n"
    "Audits the journal in DIR and says what it proves, or where it breaks.\n"
    "Nothing is written to DIR; a writer may go on appending meanwhile: the\n"
    "head is read first and the audit stops there (the report says when the\n"
    "journal grew during the audit).\n"
    "\n"
    "Without the key: the metadata checksum, every segment header, every\n"
    "frame header, seq density, the whole hash chain and its continuity\n"
    "between segments (pruned records included), and every CHECKPOINT and\n"
    "COMPACTION record: well-formed, and the link it names is the journal's\n"
    "own link at that seq. With the key also the key check value, the\n"
    "metadata MAC, and every record decrypted and authenticated (tag,\n"
    "envelope, record key and type rules, compressed payloads inflate).\n"
    "\n"
    "With anchor options, every CHECKPOINT record is checked against the\n"
    "chain (an Anchored event with the same seq, head, block number and\n"
    "hash and transaction) and the freshness verdict is given (see 'tally\n"
    "help status'). With --evidence FILE the same is done without any\n"
    "network, against a bundle written earlier by --export-evidence: the\n"
    "bundle's headers, transactions, receipts and state proofs are verified\n"
    "first (an altered bundle fails with exit 3), and the verdict is the one\n"
    "at the bundle's block. What stays trusted is that its block hashes are\n"
    "those of the chain (README \"Auditing\").\n"
    "\n"
    "The report: journal id, name, cipher, segments and files, records (seq\n"
    "range, kinds, pruned), time range, head, anchors recorded in the\n"
    "journal (count, latest seq, block and age, unanchored tail),\n"
    "compactions, the anchor check, and a verdict line; on failure the first\n"
    "bad place (segment file, byte offset, seq) and what is wrong there.\n"
    "--json prints the same as one JSON document (fields: README\n"
    "\"Auditing\"). A progress bar (records/s, MB/s, ETA) is drawn on stderr\n"
    "when it is a terminal and the audit takes more than a second.\n"
    "\n"
    "Options:\n"
    "  --key-file FILE    audit with this master key; default\n"
    "                     $TALLY_KEY_FILE; without either, keyless\n"
    "  --no-key           keyless even if TALLY_KEY_FILE is set\n"
    "  --from SEQ         start at SEQ: the reading starts at the segment\n"
    "                     that holds it and the link before SEQ is taken as\n"
    "                     stored (the chain before it is not checked). Here\n"
    "                     --from is a seq: name the writer account of the\n"
    "                     anchor options with --writer ADDR.\n"
    "  --to SEQ           stop after SEQ instead of the head\n"
    "  --evidence FILE    check the anchors offline against this bundle\n"
    "  --export-evidence FILE\n"
    "                     fetch everything an offline audit needs from the\n"
    "                     chain (needs anchor options), write it to FILE\n"
    "                     (replaced atomically), then audit against it\n"
    "  --json             print one JSON document\n"
    "  -h, --help         show this help and exit\n"
    "\n"
    ANCHOR_OPTS_HELP
    "\n"
    "Environment:\n"
    "  TALLY_KEY_FILE  key file used when neither --key-file nor --no-key is\n"
    "                  given\n"
    ANCHOR_ENV_HELP
    "\n"
    "Exit status: 0 when everything checked verifies; 3 integrity (the first\n"
    "bad place is reported; a torn tail counts); 4 freshness (rolled back,\n"
    "forked, stale anchor, a CHECKPOINT record that names another link than\n"
    "the journal's); 5 key; 1 operational (also: no verdict possible, an\n"
    "anchor configuration mismatch, a bundle for another journal).\n";

/* ---- progress bar ------------------------------------------------------------- */

struct bar {
    int shown;
};

static void fmt_bytes(uint64_t b, char *out, size_t n)
{
    if (b >= 1000000000ull)
        snprintf(out, n, "%.2f GB", (double)b / 1e9);
    else if (b >= 1000000ull)
        snprintf(out, n, "%.1f MB", (double)b / 1e6);
    else
        snprintf(out, n, "%.1f kB", (double)b / 1e3);
}

static void draw_bar(void *ctx, const tally_audit_progress *p)
{
    struct bar *b = ctx;
    double s = (double)p->elapsed_ns / 1e9;
    if (p->bytes_done >= p->bytes_total && p->elapsed_ns > 0) {
        if (b->shown)
            fputs("\r\033[K", stderr); /* the report follows: no bar left */
        b->shown = 0;
        return;
    }
    if (s < 1.0)
        return; /* a short audit draws nothing */
    double frac = p->bytes_total ? (double)p->bytes_done / (double)p->bytes_total
                                 : 0.0;
    double mbs = (double)p->bytes_done / s / 1e6, rps = (double)p->records / s;
    double eta = frac > 0.0 ? s * (1.0 - frac) / frac : 0.0;
    char done[24], total[24], bar[21];
    int filled = (int)(frac * 20.0);
    for (int i = 0; i < 20; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[20] = '\0';
    fmt_bytes(p->bytes_done, done, sizeof done);
    fmt_bytes(p->bytes_total, total, sizeof total);
    fprintf(stderr, "\r[%s] %3d%% %s/%s  %.0f rec/s  %.0f MB/s  ETA %d:%02d\033[K",
            bar, (int)(frac * 100.0), done, total, rps, mbs, (int)eta / 60,
            (int)eta % 60);
    b->shown = 1;
}

/* ---- the report ------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fmt_age(uint64_t then_ns, char *out, size_t n)
{
    uint64_t now = now_ns();
    if (then_ns == 0 || then_ns > now) {
        snprintf(out, n, "%s", then_ns ? "in the future" : "unknown");
        return;
    }
    uint64_t s = (now - then_ns) / 1000000000u;
    if (s < 120)
        snprintf(out, n, "%" PRIu64 " s ago", s);
    else if (s < 7200)
        snprintf(out, n, "%" PRIu64 " min ago", s / 60);
    else if (s < 172800)
        snprintf(out, n, "%" PRIu64 " h ago", s / 3600);
    else
        snprintf(out, n, "%" PRIu64 " days ago", s / 86400);
}

static const char *mode_name(int mode)
{
    return mode == TALLY_AUDIT_ANCHORS_TARGET     ? "chain"
           : mode == TALLY_AUDIT_ANCHORS_EVIDENCE ? "evidence"
                                                  : "none";
}

static const char *exit_kind(int status)
{
    switch (status) {
    case EXIT_INTEGRITY:
        return "integrity";
    case EXIT_FRESHNESS:
        return "freshness";
    case EXIT_KEY:
        return "key";
    default:
        return "operational";
    }
}

/* Whether the failure's byte offset means something (a place in a segment
 * file), not for the metadata or a bundle. */
static int has_offset(const tally_audit_report *r)
{
    return r->file[0] && r->where != TALLY_AUDIT_METADATA &&
           r->where != TALLY_AUDIT_EVIDENCE;
}

static void print_text(const char *dir, const tally_audit_report *r,
                       const char *evidence_path, int status)
{
    char id[2 * TALLY_ID_BYTES + 1], head[2 * TALLY_HASH_BYTES + 1];
    char t0[40], t1[40], b[24], age[32], addr[TALLY_ADDRESS_STRLEN];
    int have_meta = r->cipher != 0;

    cli_hex(r->journal_id, sizeof r->journal_id, id);
    cli_hex(r->head, sizeof r->head, head);
    printf("audit of %s: %s%s\n", dir,
           r->keyed ? "with the key (structure, chain, CHECKPOINT and "
                      "COMPACTION records, every record authenticated)"
                    : "without the key (structure, chain, CHECKPOINT and "
                      "COMPACTION records; records not decrypted)",
           r->partial ? ", partial" : "");
    if (have_meta) {
        printf("  journal id    %s\n", id);
        fputs("  name          ", stdout);
        cli_print_escaped(stdout, (const uint8_t *)r->name, strlen(r->name), 0);
        fputc('\n', stdout);
        printf("  cipher        %s, compression %s, %" PRIu32 " key epoch%s%s\n",
               cli_cipher_name(r->cipher), r->compress ? "on" : "off",
               r->epochs, r->epochs == 1 ? "" : "s",
               r->epochs_forgotten ? " (some forgotten)" : "");
        fmt_bytes(r->bytes, b, sizeof b);
        printf("  segments      %" PRIu64 " in %" PRIu64 " file%s, %s read\n",
               r->segments, r->files, r->files == 1 ? "" : "s", b);
    }
    if (r->records > 0) {
        printf("  records       %" PRIu64 " (seq %" PRIu64 "-%" PRIu64 "): %"
               PRIu64 " sealed, %" PRIu64 " clear, %" PRIu64 " pruned, %"
               PRIu64 " snapshot%s\n",
               r->records, r->first_seq, r->last_seq, r->sealed, r->clear,
               r->pruned, r->snapshots, r->snapshots == 1 ? "" : "s");
        if (r->unreadable)
            printf("                %" PRIu64 " sealed records of a forgotten "
                   "key epoch (chain checked, not decrypted)\n",
                   r->unreadable);
        cli_format_ts(r->first_ts_ns, t0);
        cli_format_ts(r->last_ts_ns, t1);
        printf("  time range    %s .. %s\n", t0, t1);
    } else if (have_meta && r->rc == 0) {
        printf("  records       none\n");
    }
    if (have_meta && (r->rc == 0 || r->records > 0))
        printf("  head          seq %" PRIu64 ", link %s%s\n", r->head_seq,
               head, r->rc == 0 ? "" : " (before the failure)");
    if (r->partial)
        printf("  range         seq %" PRIu64 " to %" PRIu64 " (head at start "
               "%" PRIu64 ")%s\n", r->from_seq, r->to_seq, r->start_head_seq,
               r->from_seq > 1 ? "; the link before the range is taken as "
                                 "stored" : "");
    if (r->live)
        printf("  live          a writer appended during the audit: the "
               "journal grew to seq %" PRIu64 "; audited up to seq %" PRIu64
               " (the head at start)\n", r->end_head_seq, r->to_seq);
    if (have_meta) {
        if (r->has_checkpoint) {
            tally_eth_address_format(r->checkpoint.contract, addr);
            fmt_age(r->checkpoint.anchored_ns, age, sizeof age);
            printf("  anchors       %" PRIu64 " CHECKPOINT record%s (%" PRIu64
                   " checked against the journal's links); latest: seq %"
                   PRIu64 " in block %" PRIu64 " (chain %" PRIu64 ", %s), %s "
                   "(record seq %" PRIu64 ")\n",
                   r->checkpoints, r->checkpoints == 1 ? "" : "s",
                   r->checkpoint_links, r->checkpoint.seq,
                   r->checkpoint.block_number, r->checkpoint.chain_id,
                   r->checkpoint.backend == TALLY_BACKEND_FILE ? "anchor file"
                                                               : addr,
                   age, r->checkpoint_record_seq);
        } else {
            printf("  anchors       no CHECKPOINT record\n");
        }
        printf("  unanchored    %" PRIu64 " record%s after the latest anchor\n",
               r->unanchored_tail, r->unanchored_tail == 1 ? "" : "s");
        if (r->compactions) {
            cli_format_ts(r->last_compaction_ns, t0);
            printf("  compactions   %" PRIu64 " (last: record seq %" PRIu64
                   ", finished %s); %" PRIu64 " records pruned by them, %"
                   PRIu64 " last links checked\n",
                   r->compactions, r->last_compaction_seq, t0,
                   r->compaction_pruned, r->compaction_links);
        } else {
            printf("  compactions   none\n");
        }
    }
    if (r->anchor_mode == TALLY_AUDIT_ANCHORS_TARGET) {
        printf("  chain         %" PRIu64 " CHECKPOINT record%s match the "
               "anchor target (%" PRIu64 " of another configuration)\n",
               r->anchors_checked, r->anchors_checked == 1 ? "" : "s",
               r->anchors_foreign);
    } else if (r->has_evidence) {
        cli_format_ts(r->evidence.as_of_time * 1000000000ull, t0);
        cli_hex(r->evidence.as_of_hash, 32, head);
        printf("  evidence      %s: %zu anchor%s proven to their block "
               "headers; latest state at block %" PRIu64 " (%s, hash %s)\n",
               evidence_path ? evidence_path : "bundle", r->evidence.anchors,
               r->evidence.anchors == 1 ? "" : "s", r->evidence.as_of_block,
               t0, head);
        printf("                %" PRIu64 " CHECKPOINT record%s match its "
               "anchors (%" PRIu64 " of another configuration); trusted: "
               "that its block hashes are the chain's\n",
               r->anchors_checked, r->anchors_checked == 1 ? "" : "s",
               r->anchors_foreign);
    }
    if (r->has_freshness)
        printf("  freshness     %s: %.*s\n",
               tally_verdict_name(r->freshness.verdict),
               (int)strnlen(r->freshness.message, sizeof r->freshness.message),
               r->freshness.message);
    if (r->note[0])
        printf("  note          %s\n", r->note);
    double s = (double)r->elapsed_ns / 1e9;
    fmt_bytes(r->bytes, b, sizeof b);
    printf("  elapsed       %.2f s (%.0f records/s, %.1f MB/s)\n", s,
           s > 0 ? (double)r->records / s : 0.0,
           s > 0 ? (double)r->bytes / s / 1e6 : 0.0);
    if (r->rc == 0) {
        printf("verdict: OK: %" PRIu64 " records up to seq %" PRIu64
               " verified%s%s%s\n",
               r->records, r->head_seq,
               r->keyed ? " and authenticated" : " (chain, without the key)",
               r->anchor_mode != TALLY_AUDIT_ANCHORS_NONE && r->has_freshness
                   ? ", anchors match, "
                   : r->anchor_mode != TALLY_AUDIT_ANCHORS_NONE
                       ? ", anchors match"
                       : "; anchors not checked against a chain",
               r->has_freshness ? tally_verdict_name(r->freshness.verdict)
                                : "");
    } else {
        printf("verdict: FAILED (%s, exit %d)", exit_kind(status), status);
        if (has_offset(r))
            printf(": %s, offset %" PRIu64, r->file, r->offset);
        else if (r->file[0])
            printf(": %s", r->file);
        if (r->seq)
            printf(", seq %" PRIu64, r->seq);
        if (r->where != TALLY_AUDIT_NOWHERE)
            printf(" (%s)", tally_audit_where_name(r->where));
        printf(": %.*s\n", (int)strnlen(r->message, sizeof r->message),
               r->message[0] ? r->message : tally_strerror(r->rc));
    }
}

/* ---- JSON ---------------------------------------------------------------------------- */

/* 64-bit values are written as exact integers (cJSON's numbers are
 * doubles). */
static cJSON *num(uint64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRIu64, v);
    return cJSON_CreateRaw(s);
}

static cJSON *hexs(const uint8_t *d, size_t n)
{
    char s[2 * 64 + 1];
    cli_hex(d, n, s);
    return cJSON_CreateString(s);
}

/* A library string (fixed buffer, maybe not valid UTF-8). */
static cJSON *text(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    char buf[1024];
    if (n >= sizeof buf)
        n = sizeof buf - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (!cli_utf8_valid((const uint8_t *)buf, n))
        return cJSON_CreateString("?");
    return cJSON_CreateString(buf);
}

static cJSON *addr_json(const uint8_t a[TALLY_ADDRESS_BYTES])
{
    char s[TALLY_ADDRESS_STRLEN];
    tally_eth_address_format(a, s);
    return cJSON_CreateString(s);
}

static void add(cJSON *o, const char *k, cJSON *v)
{
    cJSON_AddItemToObject(o, k, v ? v : cJSON_CreateNull());
}

static cJSON *report_json(const char *dir, const tally_audit_report *r,
                          const char *evidence_path, int status)
{
    cJSON *o = cJSON_CreateObject(), *x, *y;
    add(o, "ok", cJSON_CreateBool(r->rc == 0));
    add(o, "exit", num((uint64_t)status));
    add(o, "dir", text(dir, 4096));
    add(o, "keyed", cJSON_CreateBool(r->keyed));
    add(o, "partial", cJSON_CreateBool(r->partial));

    x = cJSON_CreateObject();
    add(x, "id", hexs(r->journal_id, 32));
    add(x, "name", text(r->name, sizeof r->name));
    add(x, "cipher", cJSON_CreateString(cli_cipher_name(r->cipher)));
    add(x, "compress", cJSON_CreateBool(r->compress));
    add(x, "segment_size", num(r->segment_size));
    add(x, "epochs", num(r->epochs));
    add(x, "epochs_forgotten", num(r->epochs_forgotten));
    add(x, "meta_generation", num(r->meta_generation));
    add(o, "journal", x);

    add(o, "files", num(r->files));
    add(o, "segments", num(r->segments));
    add(o, "bytes", num(r->bytes));
    x = cJSON_CreateObject();
    add(x, "total", num(r->records));
    add(x, "sealed", num(r->sealed));
    add(x, "clear", num(r->clear));
    add(x, "pruned", num(r->pruned));
    add(x, "snapshots", num(r->snapshots));
    add(x, "unreadable", num(r->unreadable));
    add(o, "records", x);
    add(o, "first_seq", num(r->first_seq));
    add(o, "last_seq", num(r->last_seq));
    add(o, "first_ts", num(r->first_ts_ns));
    add(o, "last_ts", num(r->last_ts_ns));
    x = cJSON_CreateObject();
    add(x, "seq", num(r->head_seq));
    add(x, "link", hexs(r->head, 32));
    add(o, "head", x);
    x = cJSON_CreateObject();
    add(x, "from", num(r->from_seq));
    add(x, "to", num(r->to_seq));
    add(x, "start_head_seq", num(r->start_head_seq));
    add(x, "end_head_seq", num(r->end_head_seq));
    add(x, "live", cJSON_CreateBool(r->live));
    add(o, "range", x);

    x = cJSON_CreateObject();
    add(x, "checkpoints", num(r->checkpoints));
    add(x, "links_checked", num(r->checkpoint_links));
    if (r->has_checkpoint) {
        const tally_checkpoint_info *c = &r->checkpoint;
        y = cJSON_CreateObject();
        add(y, "seq", num(c->seq));
        add(y, "head", hexs(c->head, 32));
        add(y, "record_seq", num(r->checkpoint_record_seq));
        add(y, "backend", cJSON_CreateString(c->backend == TALLY_BACKEND_FILE
                                                 ? "file" : "ethereum"));
        add(y, "chain_id", num(c->chain_id));
        add(y, "contract", addr_json(c->contract));
        add(y, "writer", addr_json(c->writer));
        add(y, "block", num(c->block_number));
        add(y, "block_hash", hexs(c->block_hash, 32));
        add(y, "tx", hexs(c->tx_hash, 32));
        add(y, "anchored_ns", num(c->anchored_ns));
        uint64_t now = now_ns();
        add(y, "age_s", num(now > c->anchored_ns
                                ? (now - c->anchored_ns) / 1000000000u : 0));
        add(x, "latest", y);
    } else {
        add(x, "latest", NULL);
    }
    add(x, "unanchored_tail", num(r->unanchored_tail));
    add(o, "anchors", x);

    x = cJSON_CreateObject();
    add(x, "count", num(r->compactions));
    add(x, "links_checked", num(r->compaction_links));
    add(x, "pruned", num(r->compaction_pruned));
    add(x, "last_seq", num(r->last_compaction_seq));
    add(x, "last_ns", num(r->last_compaction_ns));
    add(o, "compactions", x);

    x = cJSON_CreateObject();
    add(x, "mode", cJSON_CreateString(mode_name(r->anchor_mode)));
    add(x, "checked", num(r->anchors_checked));
    add(x, "foreign", num(r->anchors_foreign));
    if (r->has_freshness) {
        const tally_freshness *f = &r->freshness;
        y = cJSON_CreateObject();
        add(y, "verdict", cJSON_CreateString(tally_verdict_name(f->verdict)));
        add(y, "anchored_seq", num(f->anchored_seq));
        add(y, "anchored_head", hexs(f->anchored_head, 32));
        add(y, "anchored_block", num(f->anchored_block));
        add(y, "unanchored_tail", num(f->unanchored_tail));
        add(y, "behind", num(f->behind));
        add(y, "message", text(f->message, sizeof f->message));
        add(x, "freshness", y);
    } else {
        add(x, "freshness", NULL);
    }
    if (r->has_evidence) {
        const tally_evidence_info *e = &r->evidence;
        y = cJSON_CreateObject();
        add(y, "file", evidence_path ? text(evidence_path, 4096) : NULL);
        add(y, "chain_id", num(e->chain_id));
        add(y, "contract", addr_json(e->contract));
        add(y, "writer", addr_json(e->writer));
        add(y, "created_ns", num(e->created_ns));
        add(y, "anchors", num(e->anchors));
        add(y, "as_of_block", num(e->as_of_block));
        add(y, "as_of_hash", hexs(e->as_of_hash, 32));
        add(y, "as_of_time", num(e->as_of_time));
        add(y, "latest_seq", num(e->latest.seq));
        add(y, "trusted", cJSON_CreateString("block hashes"));
        add(x, "evidence", y);
    } else {
        add(x, "evidence", NULL);
    }
    add(o, "anchor_check", x);

    if (r->rc != 0) {
        x = cJSON_CreateObject();
        add(x, "where", cJSON_CreateString(tally_audit_where_name(r->where)));
        add(x, "file", text(r->file, sizeof r->file));
        add(x, "offset", num(r->offset));
        add(x, "seq", num(r->seq));
        add(x, "error", cJSON_CreateString(tally_strerror(r->rc)));
        add(x, "message", text(r->message, sizeof r->message));
        add(o, "failure", x);
    } else {
        add(o, "failure", NULL);
    }
    add(o, "note", r->note[0] ? text(r->note, sizeof r->note) : NULL);
    add(o, "elapsed_ns", num(r->elapsed_ns));
    return o;
}

static int print_report(const struct cli_cmd *self, const char *dir,
                        const tally_audit_report *r, const char *evidence_path,
                        int json)
{
    int status = tally_exit_code(r->rc);
    if (json) {
        cJSON *o = report_json(dir, r, evidence_path, status);
        char *s = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        if (!s) {
            cli_error(self, "printing the report of", dir, strerror(ENOMEM));
            return EXIT_OPERATIONAL;
        }
        puts(s);
        free(s);
    } else {
        print_text(dir, r, evidence_path, status);
    }
    if (r->rc != 0) {
        fprintf(stderr, "tally %s: %s: ", self->name, dir);
        if (has_offset(r))
            fprintf(stderr, "%s: offset %" PRIu64 ", seq %" PRIu64 ": ",
                    r->file, r->offset, r->seq);
        else if (r->file[0])
            fprintf(stderr, "%s: ", r->file);
        fprintf(stderr, "%.*s\n", (int)strnlen(r->message, sizeof r->message),
                r->message[0] ? r->message : tally_strerror(r->rc));
    }
    if (cli_flush_stdout(self) != EXIT_OK && status == EXIT_OK)
        status = EXIT_OPERATIONAL;
    return status;
}

/* A failure before the audit could start (the bundle does not load). */
static int early_failure(const struct cli_cmd *self, const char *dir, int rc,
                         tally_audit_where where, const char *file,
                         const char *msg, const char *evidence_path, int json)
{
    tally_audit_report *r = calloc(1, sizeof *r);
    if (!r) {
        cli_error(self, "auditing", dir, strerror(ENOMEM));
        return EXIT_OPERATIONAL;
    }
    r->rc = rc;
    r->where = where;
    snprintf(r->file, sizeof r->file, "%s", file);
    snprintf(r->message, sizeof r->message, "%s", msg);
    int status = print_report(self, dir, r, evidence_path, json);
    free(r);
    return status;
}

/* ---- the command ---------------------------------------------------------------------- */

enum { OPT_KEY_FILE = 256, OPT_NO_KEY, OPT_JSON, OPT_FROM, OPT_TO,
       OPT_EVIDENCE, OPT_EXPORT };

static int journal_id_of(const char *dir, uint8_t jid[TALLY_ID_BYTES])
{
    tally_iter *it = NULL;
    int rc = tally_iter_open(&it, dir, NULL, 0, TALLY_ITER_TOLERATE_TAIL);
    if (rc < 0)
        return rc;
    tally_iter_id(it, jid);
    tally_iter_free(it);
    return 0;
}

int cmd_audit(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "key-file", required_argument, NULL, OPT_KEY_FILE },
        { "no-key", no_argument, NULL, OPT_NO_KEY },
        { "json", no_argument, NULL, OPT_JSON },
        /* before the anchor options: here --from is a seq (the writer is
         * --writer ADDR, as for 'tally cat') */
        { "from", required_argument, NULL, OPT_FROM },
        { "to", required_argument, NULL, OPT_TO },
        { "evidence", required_argument, NULL, OPT_EVIDENCE },
        { "export-evidence", required_argument, NULL, OPT_EXPORT },
        { "help", no_argument, NULL, 'h' },
        ANCHOR_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct anchor_opts ao;
    struct anchor a = { NULL, NULL };
    const char *key_file = NULL, *key_path = NULL, *dir, *evidence = NULL;
    const char *export = NULL;
    uint8_t *key = NULL;
    tally_evidence *ev = NULL;
    tally_audit_options o;
    tally_audit_report *r = NULL;
    struct bar bar = { 0 };
    int c, rc, json = 0, no_key = 0, status = EXIT_OK;

    memset(&o, 0, sizeof o);
    anchor_opts_init(&ao);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_NO_KEY:
            no_key = 1;
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_TO:
            if (cli_parse_u64(optarg, &o.to_seq) < 0 || o.to_seq == 0) {
                status = cli_usage_error(self, "--to must be a seq >= 1");
                goto out;
            }
            break;
        case OPT_EVIDENCE:
            evidence = optarg;
            break;
        case OPT_EXPORT:
            export = optarg;
            break;
        case 'h':
            anchor_opts_free(&ao);
            return cli_help(self);
        case OPT_FROM:
            if (cli_parse_u64(optarg, &o.from_seq) < 0 || o.from_seq == 0) {
                status = cli_usage_error(self, "--from must be a seq (1 or "
                                         "more)");
                goto out;
            }
            break;
        default:
            rc = anchor_opt(self, &ao, c, optarg);
            if (rc == ANCHOR_OPT_NONE) {
                status = cli_usage_error(self, NULL);
                goto out;
            }
            if (rc != EXIT_OK) {
                status = rc;
                goto out;
            }
        }
    }
    if (argc - optind != 1) {
        status = cli_usage_error(self, "expected exactly one DIR argument");
        goto out;
    }
    dir = argv[optind];
    if (no_key && key_file != NULL) {
        status = cli_usage_error(self, "--key-file and --no-key exclude each "
                                 "other");
        goto out;
    }
    if (evidence && export) {
        status = cli_usage_error(self, "--evidence and --export-evidence "
                                 "exclude each other");
        goto out;
    }
    if (o.to_seq && o.from_seq > o.to_seq) {
        status = cli_usage_error(self, "--from is above --to");
        goto out;
    }
    /* The environment's anchor target applies only when no bundle is
     * given: an offline audit must not reach for the network. */
    if (evidence == NULL) {
        status = anchor_opts_finish(self, &ao, ANCHOR_NEED_CONTRACT |
                                               ANCHOR_NEED_SENDER);
        if (status != EXIT_OK)
            goto out;
    } else if (ao.n_rpc > 0 || ao.anchor_file != NULL || ao.contract != NULL ||
               ao.from != NULL || ao.signer_key_file != NULL) {
        status = cli_usage_error(self, "--evidence excludes the anchor "
                                 "options: the bundle is the anchor source");
        goto out;
    }
    if (export && !anchor_opts_configured(&ao)) {
        status = cli_usage_error(self, "--export-evidence needs anchor "
                                 "options: --rpc URL (or TALLY_RPC_URL), "
                                 "--contract, --from or --signer-key-file");
        goto out;
    }
    if (export && ao.anchor_file != NULL) {
        status = cli_usage_error(self, "--export-evidence needs a chain: an "
                                 "anchor file is its own evidence");
        goto out;
    }
    if (!no_key)
        key_path = cli_key_path(key_file);
    if (key_path != NULL) {
        status = cli_key_load(self, key_path, &key);
        if (status != EXIT_OK)
            goto out;
    }
    if (anchor_opts_configured(&ao)) {
        status = anchor_open(self, &ao, 0, &a);
        if (status != EXIT_OK)
            goto out;
    }

    if (export) {
        uint8_t jid[TALLY_ID_BYTES], contract[TALLY_ADDRESS_BYTES];
        uint8_t writer[TALLY_ADDRESS_BYTES];
        tally_evidence_export_report xr;
        rc = journal_id_of(dir, jid);
        if (rc < 0) {
            status = cli_fail(self, "reading the journal id of", dir, rc, NULL);
            goto out;
        }
        if (tally_eth_address_parse(ao.contract, contract) < 0 ||
            tally_eth_sender(a.eth, writer) < 0) {
            status = cli_usage_error(self, "the contract and the writer "
                                     "(--from or --signer-key-file) are "
                                     "needed");
            goto out;
        }
        rc = tally_evidence_export(a.eth, contract, writer, jid, export, &xr);
        anchor_warn_disagreement(self, &a, rc);
        if (rc < 0) {
            status = cli_fail(self, "exporting evidence to", export, rc,
                              xr.message);
            goto out;
        }
        fprintf(stderr, "tally %s: evidence written to %s: %zu anchor%s, "
                "latest state at block %" PRIu64 ", %" PRIu64 " bytes\n",
                self->name, export, xr.anchors, xr.anchors == 1 ? "" : "s",
                xr.as_of_block, xr.bytes);
        /* The audit that follows uses the bundle, as an offline one will. */
        anchor_close(&a);
        evidence = export;
    }
    if (evidence) {
        char err[512];
        rc = tally_evidence_load(&ev, evidence, err, sizeof err);
        if (rc < 0) {
            const char *base = strrchr(evidence, '/');
            status = early_failure(self, dir, rc, TALLY_AUDIT_EVIDENCE,
                                   base ? base + 1 : evidence, err, evidence,
                                   json);
            goto out;
        }
        o.evidence = ev;
    }
    o.master_key = key;
    o.target = a.target;
    if (isatty(STDERR_FILENO)) {
        o.progress = draw_bar;
        o.progress_ctx = &bar;
        o.progress_ms = 200;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        cli_error(self, "auditing", dir, strerror(ENOMEM));
        status = EXIT_OPERATIONAL;
        goto out;
    }
    rc = tally_audit(dir, &o, r);
    if (bar.shown)
        fputs("\r\033[K", stderr);
    cli_key_free(key);
    key = NULL;
    if (a.eth)
        anchor_warn_disagreement(self, &a, rc);
    status = print_report(self, dir, r, evidence, json);
out:
    free(r);
    tally_evidence_free(ev);
    cli_key_free(key);
    anchor_close(&a);
    anchor_opts_free(&ao);
    return status;
}
