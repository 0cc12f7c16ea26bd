/*
 * fuzz.h — what the libFuzzer harnesses of tests/stress/fuzz share.
 *
 * Each harness defines LLVMFuzzerTestOneInput. Built with clang and
 * -Dfuzz=true it links libFuzzer (the long run fuzzes each for a fixed
 * time); built without, fuzz-main.c gives it a main() that runs the files
 * and directories named on the command line through it (the short run
 * replays the committed seed corpora that way: a cheap regression test, and
 * under the sanitizer build a memory-error check too).
 *
 * The journal harnesses work on real files in a private directory (under
 * $STRESS_FUZZ_TMP, else /dev/shm when there is one): the fixture
 * metadata (fuzz/fixture/, made by stress-fuzz-mkseeds with FUZZ_KEY) and
 * the fuzzed segment files, or a fuzzed metadata file. A harness that finds the library contradicting
 * itself (a check that passes with the key but fails without it, a journal
 * that recovery opened but that no longer verifies, ...) aborts, which the
 * fuzzer reports like a crash.
 */
#ifndef TALLY_FUZZ_H
#define TALLY_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fixture's master key: bytes 0x00..0x1f (a test key, nothing secret). */
extern const uint8_t fuzz_key[TALLY_KEY_BYTES];

/* Separates the files of one input of the recovery harness. */
#define FUZZ_FILE_SEP "\n--tally-next-file--\n"

/* The private working directory (created once, removed at exit). */
const char *fuzz_workdir(void);
/* An empty journal directory under it ("<workdir>/j"), holding the fixture
 * metadata when with_meta. Returns its path. */
const char *fuzz_reset_dir(int with_meta);
/* Writes a file into the journal directory of fuzz_reset_dir. */
void fuzz_put(const char *name, const void *p, size_t len);
/* The fixture metadata (read once from STRESS_FUZZ_FIXTURE/tally.meta). */
const uint8_t *fuzz_fixture_meta(size_t *ret_len);

/* Makes the bytes of a segment file self-consistent where a mutation
 * would otherwise stop the reader at the first hash: recomputes every
 * segment header's header_hash and every frame's link (and, for SEALED and
 * CLEAR frames, nothing else: tags still need the key) in place, walking
 * headers and frames by their length fields. */
void fuzz_rechain(uint8_t *p, size_t len);

/* Reports a contradiction and aborts. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
