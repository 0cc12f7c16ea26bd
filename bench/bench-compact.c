/*
 * bench-compact.c — the compactor's benchmark (issue 4, "Benchmark").
 *
 * One run measures, on the same filesystem and side by side:
 *   raw      sequential write bandwidth: 1 MiB write()s of a file as large
 *            as the journal, then fdatasync (before and after the
 *            compactions, to see the disk's drift);
 *   compact  tally_compact on a journal (default 1 GiB) of 1 KiB records
 *            whose keys make 90 % of them superseded, read cold (the page
 *            cache dropped for its files): MB/s of journal, of bytes read
 *            by all passes and of bytes written, against the raw bandwidth;
 *            peak RSS of that compaction and of one on a journal a quarter
 *            the size with the same keys (each in a forked child);
 *   replay   startup replay of 1 M records (100-byte payloads): the whole
 *            journal with no snapshot, and tally_replay of a journal with a
 *            SNAPSHOT record (64 KiB of state) every 10 k records; cold and
 *            warm page cache.
 *
 * Not a test: bench/run.sh compact builds it in release mode and runs it.
 * Progress goes to stderr, the machine and the table to stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "compact.h"
#include "tally.h"

#define REC_PAYLOAD 1000u   /* compaction journal: 1 KiB frames */
#define REPLAY_PAYLOAD 100u
#define SNAP_PAYLOAD (64u * 1024u)
#define BATCH 256u

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-compact: %s: %s\n", what,
            rc < 0 ? tally_strerror(rc) : strerror(rc));
    exit(1);
}

static uint32_t rnd(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* ---- files ------------------------------------------------------------------- */

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[2048];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        (void)unlink(p);
    }
    closedir(d);
    (void)rmdir(dir);
}

/* Syncs every file of dir and drops it from the page cache, so that the
 * next pass reads from the disk. Returns the bytes of *.seg files. */
static uint64_t evict(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        die("opendir", errno);
    uint64_t bytes = 0;
    struct dirent *e;
    char p[2048];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        int fd = open(p, O_RDONLY);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && strstr(e->d_name, ".seg"))
            bytes += (uint64_t)st.st_size;
        (void)fdatasync(fd);
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    closedir(d);
    return bytes;
}

/* Sequential write bandwidth in MB/s: 1 MiB writes, then fdatasync. */
static double raw_write(const char *base, uint64_t bytes)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/raw.bin", base);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die("raw file", errno);
    size_t chunk = 1u << 20;
    uint8_t *buf = malloc(chunk);
    if (!buf)
        die("malloc", ENOMEM);
    randombytes_buf(buf, chunk);
    double t0 = now();
    for (uint64_t done = 0; done < bytes; done += chunk)
        if (write(fd, buf, chunk) != (ssize_t)chunk)
            die("raw write", errno);
    if (fdatasync(fd) != 0)
        die("raw fdatasync", errno);
    double t = now() - t0;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    unlink(p);
    free(buf);
    return (double)bytes / t / 1e6;
}

/* ---- journals ------------------------------------------------------------------ */

static tally *open_writer(const char *dir, const uint8_t *key, int create)
{
    tally_options o;
    memset(&o, 0, sizeof o);
    o.master_key = key;
    o.sync = TALLY_SYNC_NONE;
    int rc;
    if (create && (rc = tally_init(dir, &o)) != 0)
        die("tally_init", rc);
    tally *t = NULL;
    if ((rc = tally_open(&t, dir, &o, NULL)) != 0)
        die("tally_open", rc);
    return t;
}

/* n records of REC_PAYLOAD bytes over nkeys keys. */
static double build_keyed(const char *dir, const uint8_t *key, uint64_t n,
                          uint32_t nkeys)
{
    tally *t = open_writer(dir, key, 1);
    static uint8_t payload[BATCH][REC_PAYLOAD];
    static char keys[BATCH][24];
    tally_record_in in[BATCH];
    uint32_t s = 12345;
    double t0 = now();
    for (uint64_t i = 0; i < n;) {
        size_t m = n - i < BATCH ? (size_t)(n - i) : BATCH;
        for (size_t j = 0; j < m; j++) {
            /* every key once first (both journals hold all of them: the
             * key table is the same size), then uniformly random */
            uint32_t k = i + j < nkeys ? (uint32_t)(i + j) : rnd(&s) % nkeys;
            int kl = snprintf(keys[j], sizeof keys[j], "account-%08u", k);
            randombytes_buf(payload[j], 64);
            memset(payload[j] + 64, (int)(i + j), REC_PAYLOAD - 64);
            memset(&in[j], 0, sizeof in[j]);
            in[j].type = 1;
            in[j].key = keys[j];
            in[j].key_len = (size_t)kl;
            in[j].payload = payload[j];
            in[j].payload_len = REC_PAYLOAD;
        }
        int rc = tally_append_batch(t, in, m, NULL);
        if (rc != 0)
            die("append", rc);
        i += m;
    }
    int rc = tally_close(t);
    if (rc != 0)
        die("close", rc);
    return now() - t0;
}

static void build_replay(const char *dir, const uint8_t *key, uint64_t n,
                         uint64_t snap_every)
{
    tally *t = open_writer(dir, key, 1);
    static uint8_t payload[BATCH][REPLAY_PAYLOAD];
    uint8_t *state = malloc(SNAP_PAYLOAD);
    if (!state)
        die("malloc", ENOMEM);
    tally_record_in in[BATCH];
    uint64_t i = 0;
    while (i < n) {
        size_t m = 0;
        while (m < BATCH && i < n) {
            memset(&in[m], 0, sizeof in[m]);
            i++;
            /* snapshots half-way between the multiples of snap_every, so
             * that about snap_every / 2 records follow the last one */
            if (snap_every && i % snap_every == snap_every / 2) {
                randombytes_buf(state, SNAP_PAYLOAD);
                in[m].type = TALLY_TYPE_SNAPSHOT;
                in[m].payload = state;
                in[m].payload_len = SNAP_PAYLOAD;
                m++;
                /* the snapshot's bytes must outlive the batch: flush */
                break;
            }
            randombytes_buf(payload[m], REPLAY_PAYLOAD);
            in[m].type = 2;
            in[m].payload = payload[m];
            in[m].payload_len = REPLAY_PAYLOAD;
            m++;
        }
        int rc = tally_append_batch(t, in, m, NULL);
        if (rc != 0)
            die("append", rc);
    }
    int rc = tally_close(t);
    if (rc != 0)
        die("close", rc);
    free(state);
}

/* ---- measurements in forked children ------------------------------------------ */

typedef struct compact_out {
    int rc;
    tally_compact_report rep;
    double secs;
    double cpu; /* user + system of the child, every thread */
} compact_out;

/* Compacts dir in a child; *ret_rss_kb gets its peak RSS. */
static compact_out compact_child(const char *dir, const uint8_t *key,
                                 long *ret_rss_kb)
{
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe", errno);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        close(fds[0]);
        compact_out o;
        memset(&o, 0, sizeof o);
        tally *t = open_writer(dir, key, 0);
        double t0 = now();
        o.rc = tally_compact(t, NULL, &o.rep);
        o.secs = now() - t0;
        (void)tally_close(t);
        ssize_t w = write(fds[1], &o, sizeof o);
        _exit(w == (ssize_t)sizeof o ? 0 : 1);
    }
    close(fds[1]);
    compact_out o;
    memset(&o, 0, sizeof o);
    o.rc = -EIO;
    ssize_t r = read(fds[0], &o, sizeof o);
    close(fds[0]);
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0 || r != (ssize_t)sizeof o)
        die("compaction child", EIO);
    *ret_rss_kb = ru.ru_maxrss;
    o.cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    return o;
}

typedef struct replay_out {
    int rc;
    uint64_t records;
    double secs;
} replay_out;

static int count_rec(void *ctx, const tally_record *r)
{
    (void)r;
    (void)ctx;
    return 0;
}

/* Replays dir in a child (from_snapshot: tally_replay; else the whole
 * journal with the iterator). */
static replay_out replay_child(const char *dir, const uint8_t *key,
                               int from_snapshot, long *ret_rss_kb)
{
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe", errno);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        close(fds[0]);
        replay_out o;
        memset(&o, 0, sizeof o);
        double t0 = now();
        if (from_snapshot) {
            o.rc = tally_replay(dir, key, count_rec, NULL, &o.records);
        } else {
            tally_iter *it;
            o.rc = tally_iter_open(&it, dir, key, 0, 0);
            if (o.rc == 0) {
                tally_record rec;
                while ((o.rc = tally_iter_next(it, &rec)) == 1)
                    o.records++;
                tally_iter_free(it);
            }
        }
        o.secs = now() - t0;
        ssize_t w = write(fds[1], &o, sizeof o);
        _exit(w == (ssize_t)sizeof o ? 0 : 1);
    }
    close(fds[1]);
    replay_out o;
    memset(&o, 0, sizeof o);
    o.rc = -EIO;
    ssize_t r = read(fds[0], &o, sizeof o);
    close(fds[0]);
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0 || r != (ssize_t)sizeof o)
        die("replay child", EIO);
    *ret_rss_kb = ru.ru_maxrss;
    return o;
}

/* ---- main ----------------------------------------------------------------------- */

static void usage(void)
{
    fputs("Usage: bench-compact [--dir DIR] [--mb N] [--replay-records N] "
          "[--quick]\n"
          "  --dir DIR            where to work (default $TMPDIR or /tmp)\n"
          "  --mb N               size of the compaction journal (1024)\n"
          "  --replay-records N   records of the replay journals (1000000)\n"
          "  --quick              --mb 128 --replay-records 200000\n"
          "  --build-only DIR     only write the compaction journal to DIR\n"
          "                       (its key to DIR.key), for profiling\n",
          stderr);
}

int main(int argc, char **argv)
{
    const char *base_dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    uint64_t mb = 1024, replay_n = 1000000;
    const char *build_only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            base_dir = argv[++i];
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--replay-records") && i + 1 < argc)
            replay_n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--build-only") && i + 1 < argc)
            build_only = argv[++i];
        else if (!strcmp(argv[i], "--quick")) {
            mb = 128;
            replay_n = 200000;
        } else {
            usage();
            return 2;
        }
    }
    if (sodium_init() < 0 || mb < 16 || replay_n < 20000) {
        usage();
        return 2;
    }
    char base[1024];
    snprintf(base, sizeof base, "%s/bench-compact-XXXXXX", base_dir);
    if (!mkdtemp(base))
        die("mkdtemp", errno);
    uint8_t *key = sodium_malloc(TALLY_KEY_BYTES);
    randombytes_buf(key, TALLY_KEY_BYTES);
    char big[1100], small[1100], r0[1100], r1[1100];
    snprintf(big, sizeof big, "%s/big", base);
    snprintf(small, sizeof small, "%s/small", base);
    snprintf(r0, sizeof r0, "%s/replay-plain", base);
    snprintf(r1, sizeof r1, "%s/replay-snap", base);

    /* 1 KiB records (frame: 64 + 16 + 20-byte key + 1000 + 16 = 1116 B);
     * keys = 10 % of the big journal's records: 90 % superseded. */
    uint64_t n_big = mb * 1024 * 1024 / 1116;
    uint32_t nkeys = (uint32_t)(n_big / 10);
    uint64_t n_small = n_big / 4;

    if (build_only) {
        /* For profiling: the compaction journal only, key in DIR.key. */
        build_keyed(build_only, key, n_big, nkeys);
        char kp[1100];
        snprintf(kp, sizeof kp, "%s.key", build_only);
        int fd = open(kp, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || write(fd, key, TALLY_KEY_BYTES) != TALLY_KEY_BYTES)
            die("key file", errno);
        close(fd);
        rmdir(base);
        return 0;
    }
    fprintf(stderr, "raw write %llu MiB...\n", (unsigned long long)mb);
    double raw1 = raw_write(base, mb << 20);
    fprintf(stderr, "journal of %llu records over %u keys...\n",
            (unsigned long long)n_big, nkeys);
    double build_secs = build_keyed(big, key, n_big, nkeys);
    uint64_t big_bytes = evict(big);
    fprintf(stderr, "compacting (cold)...\n");
    long rss_big;
    compact_out cb = compact_child(big, key, &rss_big);
    if (cb.rc != 0)
        die("compaction", cb.rc);
    fprintf(stderr, "journal of %llu records over the same keys...\n",
            (unsigned long long)n_small);
    build_keyed(small, key, n_small, nkeys);
    evict(small);
    long rss_small;
    compact_out cs = compact_child(small, key, &rss_small);
    if (cs.rc != 0)
        die("compaction", cs.rc);
    double raw2 = raw_write(base, mb << 20);
    rm_rf(big);
    rm_rf(small);

    fprintf(stderr, "replay journals of %llu records...\n",
            (unsigned long long)replay_n);
    build_replay(r0, key, replay_n, 0);
    build_replay(r1, key, replay_n, 10000);
    uint64_t r0_bytes = evict(r0), r1_bytes = evict(r1);
    long rs0c, rs1c, rs0w, rs1w;
    replay_out p0c = replay_child(r0, key, 0, &rs0c);
    replay_out p1c = replay_child(r1, key, 1, &rs1c);
    replay_out p0w = replay_child(r0, key, 0, &rs0w);
    replay_out p1w = replay_child(r1, key, 1, &rs1w);
    if (p0c.rc || p1c.rc || p0w.rc || p1w.rc)
        die("replay", p0c.rc ? p0c.rc : p1c.rc ? p1c.rc : p0w.rc ? p0w.rc
                                                                : p1w.rc);
    rm_rf(r0);
    rm_rf(r1);
    rmdir(base);

    /* ---- report ---- */
    struct utsname u;
    double load[3] = { 0, 0, 0 };
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    if (uname(&u) == 0)
        printf("- machine: %ld CPUs, Linux %s %s; work dir %s; load average "
               "%.1f at the end (the machine is shared: wall-clock rates "
               "drift with it)\n", sysconf(_SC_NPROCESSORS_ONLN), u.release,
               u.machine, base_dir, load[0]);
    printf("- compaction journal: %llu records of %u-byte payloads over %u "
           "keys (%.0f %% superseded), %.1f MiB, built in %.1f s (%.0f MB/s)\n",
           (unsigned long long)n_big, REC_PAYLOAD, nkeys,
           100.0 * (double)cb.rep.pruned_superseded / (double)n_big,
           (double)big_bytes / 1048576.0, build_secs,
           (double)big_bytes / build_secs / 1e6);
    double raw = (raw1 + raw2) / 2;
    double secs = (double)cb.rep.elapsed_ns / 1e9;
    double mbps_journal = (double)cb.rep.bytes_before / secs / 1e6;
    double mbps_read = (double)cb.rep.bytes_read / secs / 1e6;
    double mbps_written = (double)cb.rep.bytes_written / secs / 1e6;
    printf("\n| case | result | notes |\n| --- | --- | --- |\n");
    printf("| raw sequential write | %.0f MB/s | 1 MiB write()s + fdatasync "
           "of %llu MiB; %.0f before, %.0f after the compactions |\n",
           raw, (unsigned long long)mb, raw1, raw2);
    printf("| compaction, journal throughput | %.0f MB/s | %.1f MiB in "
           "%.2f s, cold cache; %.2fx raw write (target >= 0.5x) |\n",
           mbps_journal, (double)cb.rep.bytes_before / 1048576.0, secs,
           mbps_journal / raw);
    printf("| compaction, CPU | %.2f s | user + system, all threads: %.0f "
           "MB of journal per CPU second |\n", cb.cpu,
           (double)cb.rep.bytes_before / cb.cpu / 1e6);
    printf("| compaction, bytes read | %.0f MB/s | %.1f MiB over its passes "
           "(structure, keys, rewrite) |\n", mbps_read,
           (double)cb.rep.bytes_read / 1048576.0);
    printf("| compaction, bytes written | %.0f MB/s | %.1f MiB -> %.1f MiB, "
           "%llu records pruned, %llu -> %llu files |\n", mbps_written,
           (double)cb.rep.bytes_before / 1048576.0,
           (double)cb.rep.bytes_after / 1048576.0,
           (unsigned long long)cb.rep.records_pruned,
           (unsigned long long)cb.rep.files_before,
           (unsigned long long)cb.rep.files_after);
    printf("| compaction peak RSS | %.1f MiB (%.0f MiB journal) / %.1f MiB "
           "(%.0f MiB journal) | same %u keys; the key table and the bitmap "
           "grow with keys and records after the newest snapshot, not with "
           "the journal |\n",
           (double)rss_small / 1024.0,
           (double)cs.rep.bytes_before / 1048576.0, (double)rss_big / 1024.0,
           (double)cb.rep.bytes_before / 1048576.0, nkeys);
    printf("| startup replay, no snapshot, cold | %.3f s | %llu records, "
           "%.1f MiB; RSS %.1f MiB |\n", p0c.secs,
           (unsigned long long)p0c.records, (double)r0_bytes / 1048576.0,
           (double)rs0c / 1024.0);
    printf("| startup replay from snapshot, cold | %.3f s | %llu records "
           "replayed of %llu (a 64 KiB SNAPSHOT every 10 k), %.1f MiB; RSS "
           "%.1f MiB; %.0fx faster |\n", p1c.secs,
           (unsigned long long)p1c.records, (unsigned long long)replay_n,
           (double)r1_bytes / 1048576.0, (double)rs1c / 1024.0,
           p0c.secs / p1c.secs);
    printf("| startup replay, no snapshot, warm | %.3f s | page cache warm "
           "|\n", p0w.secs);
    printf("| startup replay from snapshot, warm | %.3f s | %.0fx faster |\n",
           p1w.secs, p0w.secs / p1w.secs);
    sodium_free(key);
    return 0;
}
