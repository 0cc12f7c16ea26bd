/*
 * cmd-stat.c — `tally stat DIR [--leakage] [--json]`: what the files of a
 * journal tell whoever holds them without the key (FORMAT.md §13): record
 * counts by what is visible of their kind, and with --leakage the
 * histograms an operator can draw — on-disk frame sizes of the records
 * whose type is hidden, their timestamps and the gaps between them, and the
 * sizes and modification times of the segment files — so that a user can
 * see what a padding policy or batched flushes change on their own data.
 *
 * It reads through the keyless iterator (the chain is checked as it goes)
 * and never needs a key or the writer's lock; a live journal's growing
 * tail is read up to its last whole record.
 */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

const char cmd_stat_usage[] =
    "Usage: tally stat DIR [--leakage] [--json]\n"
    "\n"
    "Prints what the files of the journal in DIR reveal without the key:\n"
    "its padding policy, record counts by what is visible of their kind\n"
    "(records whose type is hidden, PAD, CHECKPOINT, COMPACTION, pruned),\n"
    "and the segment files. No key and no lock are needed, and a journal\n"
    "being written can be read; the chain is checked along the way (a\n"
    "damaged journal gives exit 3).\n"
    "\n"
    "With --leakage, also what an operator of the storage can learn from\n"
    "them (FORMAT.md section 13):\n"
    "  - the histogram of on-disk frame sizes of the records whose type is\n"
    "    hidden (each size, or power-of-two classes when there are many),\n"
    "    with the number of distinct sizes and their entropy in bits per\n"
    "    record: how much a size tells about a record;\n"
    "  - their write times: distinct timestamps, the resolution they share,\n"
    "    the histogram of gaps between consecutive records, and of records\n"
    "    over the journal's time span;\n"
    "  - each segment file's size and modification time, and whether the\n"
    "    sizes are whole blocks.\n"
    "Run it on a copy of real data under each policy to compare them.\n"
    "\n"
    "Options:\n"
    "  --leakage     the histograms above\n"
    "  --json        one JSON object on stdout instead of text (timestamps\n"
    "                in ms since the Unix epoch)\n"
    "  -h, --help    show this help and exit\n";

#define MAX_LISTED 40      /* sizes listed one by one up to this many */
#define TIME_SLICES 24
#define GAP_BINS 13        /* 0, <1us, 1us..10us, ..., >=1000 s */

struct file_info {
    char name[32];
    uint64_t size;
    uint64_t mtime_ns;
};

struct acc {
    uint64_t records, sealed, clear, pruned, pads, checkpoints, compactions;
    uint64_t pad_bytes, frame_bytes;
    uint32_t *sizes;       /* on-disk frame sizes of sealed records */
    uint64_t *ts;          /* timestamps of sealed records, in order */
    size_t n, cap;
    uint64_t first_ts, last_ts;
    struct file_info *files;
    size_t nfiles;
};

struct size_count {
    uint32_t size;
    uint64_t count;
};

static int push(struct acc *a, uint32_t size, uint64_t ts)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 4096;
        uint32_t *s = realloc(a->sizes, cap * sizeof *s);
        if (s == NULL)
            return -ENOMEM;
        a->sizes = s;
        uint64_t *t = realloc(a->ts, cap * sizeof *t);
        if (t == NULL)
            return -ENOMEM;
        a->ts = t;
        a->cap = cap;
    }
    a->sizes[a->n] = size;
    a->ts[a->n] = ts;
    a->n++;
    return 0;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

static int cmp_name(const void *x, const void *y)
{
    return strcmp(((const struct file_info *)x)->name,
                  ((const struct file_info *)y)->name);
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* The segment files (FORMAT.md §1: 16 hex digits and ".seg"), with the
 * size and mtime anyone listing the directory sees. */
static int list_files(const char *dir, struct acc *a)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l != 20 || strcmp(e->d_name + 16, ".seg") != 0 ||
            strspn(e->d_name, "0123456789abcdef") != 16)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) < 0)
            continue; /* removed meanwhile (a compaction) */
        struct file_info *f = realloc(a->files, (a->nfiles + 1) * sizeof *f);
        if (f == NULL) {
            rc = -ENOMEM;
            break;
        }
        a->files = f;
        f += a->nfiles++;
        memcpy(f->name, e->d_name, l + 1);
        f->size = (uint64_t)st.st_size;
        f->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u +
                      (uint64_t)st.st_mtim.tv_nsec;
    }
    closedir(d);
    if (a->nfiles > 1)
        qsort(a->files, a->nfiles, sizeof *a->files, cmp_name);
    return rc;
}

/* ---- the figures, computed once for both outputs -------------------------- */

struct figures {
    struct size_count *sc;  /* distinct sizes, ascending */
    size_t nsc;
    double size_bits;       /* entropy of the size, bits per record */
    uint64_t distinct_ts, ts_gcd;
    uint64_t gaps[GAP_BINS];
    uint64_t slices[TIME_SLICES];
    uint64_t file_gcd, files_4k;
};

static const char *gap_label[GAP_BINS] = {
    "0 (same timestamp)", "< 1 us", "1 us - 10 us", "10 us - 100 us",
    "100 us - 1 ms", "1 ms - 10 ms", "10 ms - 100 ms", "100 ms - 1 s",
    "1 s - 10 s", "10 s - 100 s", "100 s - 1000 s", ">= 1000 s", "negative",
};

static int compute(struct acc *a, struct figures *f)
{
    memset(f, 0, sizeof *f);
    uint32_t *s = malloc((a->n ? a->n : 1) * sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    memcpy(s, a->sizes, a->n * sizeof *s);
    qsort(s, a->n, sizeof *s, cmp_u32);
    f->sc = malloc((a->n ? a->n : 1) * sizeof *f->sc);
    if (f->sc == NULL) {
        free(s);
        return -ENOMEM;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (f->nsc && f->sc[f->nsc - 1].size == s[i])
            f->sc[f->nsc - 1].count++;
        else
            f->sc[f->nsc++] = (struct size_count){ s[i], 1 };
    }
    free(s);
    for (size_t i = 0; i < f->nsc; i++) {
        double p = (double)f->sc[i].count / (double)a->n;
        f->size_bits -= p * log2(p);
    }

    /* timestamps in the order of the records (seq order) */
    uint64_t prev = 0;
    for (size_t i = 0; i < a->n; i++) {
        uint64_t t = a->ts[i];
        f->ts_gcd = gcd64(f->ts_gcd, t);
        if (i == 0 || t != prev)
            f->distinct_ts++;
        if (i > 0) {
            int bin;
            if (t < prev) {
                bin = GAP_BINS - 1;
            } else if (t == prev) {
                bin = 0;
            } else {
                uint64_t d = t - prev, lim = 1000;
                bin = 1;
                while (bin < GAP_BINS - 2 && d >= lim) {
                    lim *= 10;
                    bin++;
                }
            }
            f->gaps[bin]++;
        }
        prev = t;
    }
    uint64_t span = a->last_ts - a->first_ts;
    for (size_t i = 0; i < a->n; i++) {
        uint64_t k = span ? (uint64_t)((double)(a->ts[i] - a->first_ts) /
                                       (double)span * TIME_SLICES)
                          : 0;
        if (k >= TIME_SLICES)
            k = TIME_SLICES - 1;
        f->slices[k]++;
    }
    for (size_t i = 0; i < a->nfiles; i++) {
        f->file_gcd = gcd64(f->file_gcd, a->files[i].size);
        if (a->files[i].size % 4096 == 0)
            f->files_4k++;
    }
    return 0;
}

/* ---- text -------------------------------------------------------------------- */

static void bar(uint64_t n, uint64_t max)
{
    int w = max ? (int)((double)n / (double)max * 40.0 + 0.5) : 0;
    if (n > 0 && w == 0)
        w = 1;
    for (int i = 0; i < w; i++)
        putchar('#');
    putchar('\n');
}

static void print_text(const char *dir, const char *pad, const struct acc *a,
                       const struct figures *f, int leakage)
{
    char t0[40], t1[40];
    uint64_t bytes = 0;
    for (size_t i = 0; i < a->nfiles; i++)
        bytes += a->files[i].size;
    printf("journal %s: padding %s\n", dir, pad);
    printf("records: %llu (%llu sealed, type hidden; %llu PAD; %llu "
           "CHECKPOINT; %llu COMPACTION; %llu pruned)\n",
           (unsigned long long)a->records, (unsigned long long)a->sealed,
           (unsigned long long)a->pads, (unsigned long long)a->checkpoints,
           (unsigned long long)a->compactions, (unsigned long long)a->pruned);
    printf("frames: %llu bytes, %llu of them PAD records\n",
           (unsigned long long)a->frame_bytes,
           (unsigned long long)a->pad_bytes);
    printf("files: %zu segment files, %llu bytes", a->nfiles,
           (unsigned long long)bytes);
    if (a->nfiles)
        printf(" (sizes share a factor of %llu; %llu of %zu are whole 4 KiB "
               "blocks)", (unsigned long long)f->file_gcd,
               (unsigned long long)f->files_4k, a->nfiles);
    printf("\n");
    if (!leakage)
        return;

    printf("\nWhat the files tell without the key (FORMAT.md section 13)\n");
    printf("\nframe sizes of the %zu sealed records (64 + body_len bytes):\n",
           a->n);
    printf("  %zu distinct sizes, %.2f bits per record (entropy of the "
           "size)\n", f->nsc, f->size_bits);
    uint64_t max = 0;
    if (f->nsc <= MAX_LISTED) {
        for (size_t i = 0; i < f->nsc; i++)
            if (f->sc[i].count > max)
                max = f->sc[i].count;
        for (size_t i = 0; i < f->nsc; i++) {
            printf("  %10u  %10llu  ", f->sc[i].size,
                   (unsigned long long)f->sc[i].count);
            bar(f->sc[i].count, max);
        }
    } else {
        /* power-of-two classes, with how many distinct sizes each holds */
        uint64_t cnt[33] = { 0 }, dis[33] = { 0 };
        for (size_t i = 0; i < f->nsc; i++) {
            int k = 0;
            while (k < 32 && (1ull << (k + 1)) <= f->sc[i].size)
                k++;
            cnt[k] += f->sc[i].count;
            dis[k]++;
        }
        for (int k = 0; k < 33; k++)
            if (cnt[k] > max)
                max = cnt[k];
        printf("  %-22s %10s %9s\n", "size class (bytes)", "records",
               "distinct");
        for (int k = 0; k < 33; k++) {
            if (!cnt[k])
                continue;
            char lab[32];
            snprintf(lab, sizeof lab, "%llu - %llu", 1ull << k,
                     (1ull << (k + 1)) - 1);
            printf("  %-22s %10llu %9llu  ", lab, (unsigned long long)cnt[k],
                   (unsigned long long)dis[k]);
            bar(cnt[k], max);
        }
    }

    printf("\nwrite times (frame timestamps of the sealed records):\n");
    if (a->n == 0) {
        printf("  none\n");
    } else {
        cli_format_ts(a->first_ts, t0);
        cli_format_ts(a->last_ts, t1);
        printf("  from %s to %s\n", t0, t1);
        printf("  %llu distinct timestamps; all are multiples of %llu ns\n",
               (unsigned long long)f->distinct_ts,
               (unsigned long long)f->ts_gcd);
        printf("  gaps between consecutive records:\n");
        max = 0;
        for (int i = 0; i < GAP_BINS; i++)
            if (f->gaps[i] > max)
                max = f->gaps[i];
        for (int i = 0; i < GAP_BINS; i++) {
            if (!f->gaps[i])
                continue;
            printf("    %-20s %10llu  ", gap_label[i],
                   (unsigned long long)f->gaps[i]);
            bar(f->gaps[i], max);
        }
        uint64_t span = a->last_ts - a->first_ts;
        printf("  records over time (%d slices of %.3f s):\n", TIME_SLICES,
               (double)span / 1e9 / TIME_SLICES);
        max = 0;
        for (int i = 0; i < TIME_SLICES; i++)
            if (f->slices[i] > max)
                max = f->slices[i];
        for (int i = 0; i < TIME_SLICES; i++) {
            cli_format_ts(a->first_ts + (uint64_t)((double)span *
                                                   i / TIME_SLICES), t0);
            printf("    %s %10llu  ", t0, (unsigned long long)f->slices[i]);
            bar(f->slices[i], max);
        }
    }

    printf("\nsegment files (size, modification time):\n");
    size_t from = a->nfiles > 20 ? a->nfiles - 20 : 0;
    if (from)
        printf("  ... %zu earlier files\n", from);
    for (size_t i = from; i < a->nfiles; i++) {
        cli_format_ts(a->files[i].mtime_ns, t0);
        printf("  %s %12llu  %s\n", a->files[i].name,
               (unsigned long long)a->files[i].size, t0);
    }
}

/* ---- JSON -------------------------------------------------------------------- */

static cJSON *num(double v)
{
    return cJSON_CreateNumber(v);
}

static double ms(uint64_t ns)
{
    return (double)(ns / 1000000u) + (double)(ns % 1000000u) / 1e6;
}

static int print_json(const char *dir, const char *pad, const struct acc *a,
                      const struct figures *f, int leakage)
{
    cJSON *o = cJSON_CreateObject(), *x, *y, *z;
    if (o == NULL)
        return -ENOMEM;
    cJSON_AddItemToObject(o, "dir", cJSON_CreateString(dir));
    cJSON_AddItemToObject(o, "padding", cJSON_CreateString(pad));
    x = cJSON_AddObjectToObject(o, "records");
    cJSON_AddItemToObject(x, "total", num((double)a->records));
    cJSON_AddItemToObject(x, "sealed", num((double)a->sealed));
    cJSON_AddItemToObject(x, "pad", num((double)a->pads));
    cJSON_AddItemToObject(x, "checkpoint", num((double)a->checkpoints));
    cJSON_AddItemToObject(x, "compaction", num((double)a->compactions));
    cJSON_AddItemToObject(x, "pruned", num((double)a->pruned));
    cJSON_AddItemToObject(o, "frame_bytes", num((double)a->frame_bytes));
    cJSON_AddItemToObject(o, "pad_bytes", num((double)a->pad_bytes));
    x = cJSON_AddArrayToObject(o, "files");
    for (size_t i = 0; i < a->nfiles; i++) {
        y = cJSON_CreateObject();
        cJSON_AddItemToObject(y, "name", cJSON_CreateString(a->files[i].name));
        cJSON_AddItemToObject(y, "size", num((double)a->files[i].size));
        cJSON_AddItemToObject(y, "mtime_ms", num(ms(a->files[i].mtime_ns)));
        cJSON_AddItemToArray(x, y);
    }
    cJSON_AddItemToObject(o, "file_size_gcd", num((double)f->file_gcd));
    if (leakage) {
        x = cJSON_AddObjectToObject(o, "leakage");
        y = cJSON_AddObjectToObject(x, "frame_sizes");
        cJSON_AddItemToObject(y, "records", num((double)a->n));
        cJSON_AddItemToObject(y, "distinct", num((double)f->nsc));
        cJSON_AddItemToObject(y, "entropy_bits", num(f->size_bits));
        z = cJSON_AddArrayToObject(y, "histogram");
        for (size_t i = 0; i < f->nsc; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddItemToObject(e, "size", num(f->sc[i].size));
            cJSON_AddItemToObject(e, "count", num((double)f->sc[i].count));
            cJSON_AddItemToArray(z, e);
        }
        y = cJSON_AddObjectToObject(x, "write_times");
        cJSON_AddItemToObject(y, "first_ms", num(ms(a->first_ts)));
        cJSON_AddItemToObject(y, "last_ms", num(ms(a->last_ts)));
        cJSON_AddItemToObject(y, "distinct_timestamps",
                              num((double)f->distinct_ts));
        cJSON_AddItemToObject(y, "resolution_ns", num((double)f->ts_gcd));
        z = cJSON_AddArrayToObject(y, "gaps");
        for (int i = 0; i < GAP_BINS; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddItemToObject(e, "range", cJSON_CreateString(gap_label[i]));
            cJSON_AddItemToObject(e, "count", num((double)f->gaps[i]));
            cJSON_AddItemToArray(z, e);
        }
        z = cJSON_AddArrayToObject(y, "slices");
        for (int i = 0; i < TIME_SLICES; i++)
            cJSON_AddItemToArray(z, num((double)f->slices[i]));
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s == NULL)
        return -ENOMEM;
    puts(s);
    cJSON_free(s);
    return 0;
}

enum { OPT_LEAKAGE = 256, OPT_JSON };

int cmd_stat(const struct cli_cmd *self, int argc, char **argv)
{
    static const struct option opts[] = {
        { "leakage", no_argument, NULL, OPT_LEAKAGE },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c, rc, leakage = 0, json = 0, status = EXIT_OK;
    const char *dir;
    struct acc a;
    struct figures f;
    tally_padding p;
    char pad[40];

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LEAKAGE:
            leakage = 1;
            break;
        case OPT_JSON:
            json = 1;
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
    memset(&a, 0, sizeof a);
    memset(&f, 0, sizeof f);

    rc = tally_get_padding(dir, &p);
    if (rc == TALLY_EFORMAT)
        snprintf(pad, sizeof pad, "unknown (a later version's)");
    else if (rc < 0)
        return cli_fail(self, "reading the metadata of", dir, rc, NULL);
    else
        tally_padding_format(&p, pad, sizeof pad);

    tally_iter *it;
    rc = tally_iter_open(&it, dir, NULL, 0, TALLY_ITER_TOLERATE_TAIL);
    if (rc < 0)
        return cli_fail(self, "opening journal", dir, rc, NULL);
    tally_record r;
    while ((rc = tally_iter_next(it, &r)) == 1) {
        a.records++;
        a.frame_bytes += 64u + r.body_len;
        if (r.kind == 3) {
            a.pruned++;
            continue;
        }
        if (r.kind == 2) {
            a.clear++;
            if (r.type == TALLY_TYPE_PAD) {
                a.pads++;
                a.pad_bytes += 64u + r.body_len;
            } else if (r.type == TALLY_TYPE_CHECKPOINT) {
                a.checkpoints++;
            } else if (r.type == TALLY_TYPE_COMPACTION) {
                a.compactions++;
            }
            continue;
        }
        a.sealed++;
        if (a.n == 0)
            a.first_ts = a.last_ts = r.ts_ns;
        if (r.ts_ns < a.first_ts)
            a.first_ts = r.ts_ns;
        if (r.ts_ns > a.last_ts)
            a.last_ts = r.ts_ns;
        if (push(&a, 64u + r.body_len, r.ts_ns) < 0) {
            rc = -ENOMEM;
            break;
        }
    }
    if (rc < 0) {
        status = cli_fail(self, "reading journal", dir, rc,
                          tally_iter_errmsg(it));
        tally_iter_free(it);
        goto out;
    }
    tally_iter_free(it);
    rc = list_files(dir, &a);
    if (rc == 0)
        rc = compute(&a, &f);
    if (rc < 0) {
        status = cli_fail(self, "reading", dir, rc, NULL);
        goto out;
    }
    if (json) {
        if (print_json(dir, pad, &a, &f, leakage) < 0) {
            cli_error(self, "writing JSON for", dir, strerror(ENOMEM));
            status = EXIT_OPERATIONAL;
            goto out;
        }
    } else {
        print_text(dir, pad, &a, &f, leakage);
    }
    status = cli_flush_stdout(self);
out:
    free(a.sizes);
    free(a.ts);
    free(a.files);
    free(f.sc);
    return status;
}
