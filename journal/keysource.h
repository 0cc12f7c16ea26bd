/*
 * keysource.h — where a 32-byte key comes from: a key file, an environment
 * variable, or the dstack guest agent (a TEE's key management service,
 * reached over a Unix socket). One interface for the journal's master key
 * (`--key-source`) and the anchor signer's key (`--signer-key-source`).
 *
 * Built as its own static library (tally_keysource, `keysource_dep`)
 * because the dstack source links libcurl and cJSON, which libtally itself
 * does not. README "Keys" describes the sources for users; docs/FORMAT.md
 * §2 says where the master key sits in the key hierarchy.
 *
 * Specs:
 *   file:PATH     a key file, as tally_key_load (32 raw bytes or 64 hex
 *                 digits; mode 0600)
 *   env:NAME      64 hex digits in the environment variable NAME
 *   dstack:PATH   the key the dstack guest agent derives for this app and
 *                 PATH (`POST /GetKey`); "dstack:" alone means
 *                 TALLY_KEYSOURCE_DSTACK_PATH
 *
 * The same rules as tally.h: 0 or a negative code, the output is written
 * only on success (and wiped on failure), the library never prints. A
 * failure leaves a message in err naming the source, the socket or file and
 * what went wrong, never key material.
 */
#ifndef TALLY_KEYSOURCE_H
#define TALLY_KEYSOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The dstack paths tally asks for when a spec names none. */
#define TALLY_KEYSOURCE_DSTACK_PATH "/tally/journal"
#define TALLY_KEYSOURCE_DSTACK_ANCHOR_PATH "/tally/anchor"

/* Default timeout of a request to the dstack agent (connect + answer). */
#define TALLY_KEYSOURCE_TIMEOUT_MS 10000u

/* The sockets the dstack SDKs try, in this order. */
#define TALLY_KEYSOURCE_DSTACK_SOCKETS                                       \
    { "/var/run/dstack.sock", "/run/dstack.sock",                            \
      "/var/run/dstack/dstack.sock", "/run/dstack/dstack.sock" }

enum {
    /* env: after reading the variable, overwrite its value in place and
     * remove it from the environment, so that neither /proc/PID/environ
     * nor a child process sees the key. Changes the process environment:
     * for a program's main thread at startup, not for a library caller. */
    TALLY_KEYSOURCE_SCRUB_ENV = 1u << 0,
};

typedef struct tally_keysource_opts {
    /* dstack: a Unix socket path or an http(s):// base URL of the agent;
     * NULL takes $DSTACK_SIMULATOR_ENDPOINT, and without it the first of
     * TALLY_KEYSOURCE_DSTACK_SOCKETS that exists. */
    const char *dstack_endpoint;
    /* dstack: limit of each request in ms (0: $TALLY_KEYSOURCE_TIMEOUT_MS
     * if set, else TALLY_KEYSOURCE_TIMEOUT_MS). */
    unsigned timeout_ms;
    unsigned flags; /* TALLY_KEYSOURCE_* */
} tally_keysource_opts;

/* 1 if spec starts with a known scheme (file:, env:, dstack:), else 0. */
int tally_keysource_is_spec(const char *spec);

/* Loads the key that spec names into out (TALLY_KEY_BYTES; ideally
 * sodium_malloc'd). opt may be NULL (defaults). Errors: -EINVAL for a
 * malformed spec; TALLY_EKEYPERM for a key file others can read; TALLY_EKEY
 * for a key that is missing, malformed or that the agent would not give
 * (no agent, refused, garbage, wrong length, timeout); -ENOENT/-EACCES...
 * for a key file that cannot be opened; -ENOMEM. err (may be NULL) gets a
 * one-line message. */
int tally_keysource_load(const char *spec, const tally_keysource_opts *opt,
                         uint8_t out[static TALLY_KEY_BYTES], char *err,
                         size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
