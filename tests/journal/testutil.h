/*
 * testutil.h — helpers shared by the journal's cmocka tests: a private
 * temporary directory per test, whole-file I/O, snapshots of a journal
 * directory (to damage a copy and restore it), and small journal builders.
 * Every helper fails the running cmocka test on an unexpected error.
 */
#ifndef TALLY_TESTUTIL_H
#define TALLY_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tally.h"

#define TU_MAX_FILES 512

/* A fresh directory "tally-<tag>-XXXXXX" under $TMPDIR (default /tmp);
 * the caller frees the string after tu_rmrf. */
char *tu_mkdtemp(const char *tag);
/* Removes a directory tree (no-op if dir is NULL). */
void tu_rmrf(const char *dir);
/* Group teardown: removes every tu_mkdtemp directory still there, so a
 * failed test (cmocka leaves it by longjmp) leaves nothing behind. */
int tu_cleanup(void **state);
/* dir "/" name into a static-free buffer of PATH_MAX. */
void tu_path(char *out, size_t outsz, const char *dir, const char *name);

/* A deterministic test key: byte i = seed + i. */
void tu_key(uint8_t key[TALLY_KEY_BYTES], uint8_t seed);
/* Options with defaults and the given key. */
tally_options tu_opts(const uint8_t *key);

/* Whole-file helpers: tu_read returns malloc'd bytes (NULL if absent). */
uint8_t *tu_read(const char *path, size_t *ret_len);
void tu_write(const char *path, const void *buf, size_t len);
uint64_t tu_file_size(const char *path);
void tu_truncate(const char *path, uint64_t len);
void tu_flip_bit(const char *path, uint64_t bit);

/* Segment file names of dir in sorted order; returns the count. */
int tu_list_segs(const char *dir, char names[][32], int max);

/* Every regular file of a directory, in memory. */
typedef struct tu_snap {
    int n;
    char name[TU_MAX_FILES][64];
    uint8_t *data[TU_MAX_FILES];
    size_t len[TU_MAX_FILES];
} tu_snap;
tu_snap *tu_snap_take(const char *dir);
/* Makes dir hold exactly the snapshot's files (others removed). */
void tu_snap_restore(const tu_snap *s, const char *dir);
void tu_snap_free(tu_snap *s);

/* Appends one record with a text payload; returns its seq. */
uint64_t tu_append_text(tally *t, uint16_t type, const char *key, const char *text);

/* Reads every record with the iterator (key may be NULL) and checks seqs are
 * dense from 1; returns the count, or a negative error of the iterator. */
int64_t tu_count_records(const char *dir, const uint8_t *key);

/* Hex helpers for messages and JSON vectors. */
void tu_hex(char *out, const uint8_t *in, size_t n);
int tu_unhex(uint8_t *out, size_t outsz, const char *hex);

#endif
