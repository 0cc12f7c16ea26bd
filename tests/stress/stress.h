/*
 * stress.h — what the programs of tests/stress share: a seeded random
 * generator (runs are reproducible from the seed they print), the payload
 * that encodes its own seq (so a record found at the wrong place, or with
 * the wrong bytes, is caught without a side table), running the `tally`
 * CLI as a child process, and whole-directory snapshots.
 *
 * These are test programs: on an unexpected failure they print what and
 * where on stderr and exit 1 (st_fail), never carry on.
 */
#ifndef TALLY_STRESS_H
#define TALLY_STRESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tally.h"

/* ---- failing ---------------------------------------------------------- */

/* The program's name in messages ("stress-crashloop"). */
extern const char *st_prog;

/* Prints "PROG: FAIL: ..." and exits 1. */
void st_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Prints "PROG: ..." on stderr. */
void st_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- random -------------------------------------------------------------- */

typedef struct st_rng {
    uint64_t s;
} st_rng;

void st_rng_seed(st_rng *r, uint64_t seed);
uint64_t st_rng_next(st_rng *r);
/* Uniform in [0, n) (n > 0). */
uint64_t st_rng_below(st_rng *r, uint64_t n);
/* A seed from the clock and pid, for runs not given one. */
uint64_t st_seed_default(void);

/* ---- self-describing payloads ---------------------------------------------- */

#define ST_PAYLOAD_MAX 512
/* The payload of the record with this seq: "seq=<n>;" followed by a filler
 * whose length and letters are a function of seq (0..~300 bytes), never a
 * newline. Returns its length. */
size_t st_payload(uint64_t seq, char out[static ST_PAYLOAD_MAX]);
/* 1 if p (len bytes) is exactly st_payload(seq). */
int st_payload_ok(uint64_t seq, const void *p, size_t len);

/* ---- time ----------------------------------------------------------------- */

uint64_t st_now_ms(void);
void st_sleep_ms(unsigned ms);

/* ---- processes -------------------------------------------------------------- */

/* Starts argv[0] (a path) with stdin/stdout/stderr on the given fds (-1:
 * /dev/null). The child closes every other descriptor. Returns its pid. */
pid_t st_spawn(char *const argv[], int in_fd, int out_fd, int err_fd);

/* Waits for pid; returns its exit status, or 128 + signal. */
int st_wait(pid_t pid);

/* Runs argv to completion with stdin from /dev/null; stdout and stderr are
 * captured into malloc'd NUL-terminated strings (either pointer may be
 * NULL to discard). Kills it and fails the program after timeout_ms.
 * Returns the exit status. */
int st_run(char *const argv[], char **ret_out, char **ret_err,
           unsigned timeout_ms);

/* ---- files ---------------------------------------------------------------- */

/* Reads a whole file (NULL if it does not exist; fails on other errors). */
uint8_t *st_read_file(const char *path, size_t *ret_len);
void st_write_file(const char *path, const void *p, size_t len);
/* Removes a directory tree (quietly ignores what is not there). */
void st_rmrf(const char *path);
/* mkdtemp under base (default $TMPDIR or /tmp); malloc'd path. */
char *st_mkdtemp(const char *base, const char *tag);
/* Copies every regular file of src into dst (created if missing). */
void st_copy_dir(const char *src, const char *dst);

/* Loads a key file with tally_key_load into out; fails the program on error. */
void st_load_key(const char *path, uint8_t out[static TALLY_KEY_BYTES]);

/* ---- checking a journal ------------------------------------------------------- */

typedef struct st_journal_check {
    uint64_t records;  /* seqs 1..records, dense */
    uint64_t head_seq;
    uint8_t head[TALLY_HASH_BYTES];
} st_journal_check;

/* Reads the whole journal with the key: seqs dense from 1, every payload is
 * st_payload(seq) (or, for seqs below payload_from, not checked). flags are
 * tally_iter_open's (TALLY_ITER_TOLERATE_TAIL: a torn tail ends it quietly). On a
 * mismatch or a reader error, writes a message into err and returns -1;
 * 0 on success. links (may be NULL) receives link_seq for seq 1..nlinks. */
int st_check_journal(const char *dir, const uint8_t *key, unsigned flags,
                     uint64_t payload_from,
                     uint8_t (*links)[TALLY_HASH_BYTES], uint64_t nlinks,
                     st_journal_check *ret, char *err, size_t errlen);

#endif
