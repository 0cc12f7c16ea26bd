/*
 * test-keys-source.c — the key sources of journal/keysource.h against real
 * files, real environment variables and a real HTTP server on a Unix
 * socket: the dstack agent stand-in (dstack-standin.py, tests only), which
 * derives keys as the agent does and answers as a broken one can.
 *
 * Checked: file: and env: (good, malformed, missing, scrubbed); dstack:
 * the simulator's known value for /encryption/db, the default path, the
 * request the agent receives, socket and http:// endpoints and
 * DSTACK_SIMULATOR_ENDPOINT, a chunked answer; and every failure — agent
 * missing, 400 with its message, 500, garbage, non-hex, short and long
 * keys, no key, a closed connection, an agent that never answers (the
 * timeout) — gives TALLY_EKEY with a message naming the socket, never the
 * key, and leaves the output wiped.
 *
 * argv: PYTHON STANDIN
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "keysource.h"

static const char *python, *standin;

/* dstack's simulator (sdk/simulator/appkeys.json, k256_key) and the key
 * the agent derives from it for /encryption/db. */
static const char *SIM_APP_KEY =
    "d6e88992cdeeee35fe70b5db61ab66cdb191fb9b6ec9313757ef162dd7214d5d";
static const char *KNOWN_DB_KEY =
    "ce74bf621800ada4674765daccaf3a8b444d3212dbe97eecb220fed46f116424";

/* ---- the stand-in ------------------------------------------------------- */

typedef struct agent {
    pid_t pid;
    int in_fd; /* its stdin: closing it stops it */
    char dir[PATH_MAX];
    char sock[PATH_MAX];
    char log[PATH_MAX];
    char url[64]; /* http://127.0.0.1:PORT for --tcp */
} agent;

static void agent_start(agent *a, const char *mode, bool tcp)
{
    memset(a, 0, sizeof *a);
    char *d = tu_mkdtemp("agent");
    snprintf(a->dir, sizeof a->dir, "%s", d);
    free(d);
    tu_path(a->sock, sizeof a->sock, a->dir, "dstack.sock");
    tu_path(a->log, sizeof a->log, a->dir, "requests.log");
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        if (tcp)
            execl(python, python, standin, "--tcp", "127.0.0.1:0", "--mode",
                  mode, "--log", a->log, (char *)NULL);
        else
            execl(python, python, standin, "--socket", a->sock, "--mode", mode,
                  "--log", a->log, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    a->pid = pid;
    a->in_fd = in[1];
    char line[256];
    size_t n = 0;
    for (;;) {
        struct pollfd p = { .fd = out[0], .events = POLLIN };
        if (poll(&p, 1, 20000) <= 0)
            fail_msg("the stand-in did not start");
        ssize_t r = read(out[0], line + n, sizeof line - 1 - n);
        if (r <= 0)
            fail_msg("the stand-in exited before it was ready");
        n += (size_t)r;
        line[n] = '\0';
        if (strchr(line, '\n'))
            break;
    }
    close(out[0]);
    unsigned port = 0;
    if (tcp) {
        assert_int_equal(sscanf(line, "ready port %u", &port), 1);
        snprintf(a->url, sizeof a->url, "http://127.0.0.1:%u", port);
    } else {
        assert_non_null(strstr(line, "ready"));
    }
}

static void agent_stop(agent *a)
{
    close(a->in_fd);
    kill(a->pid, SIGTERM);
    (void)waitpid(a->pid, NULL, 0);
    tu_rmrf(a->dir);
}

/* HKDF-SHA256(salt "RATLS", ikm, info = path), 32 bytes (RFC 5869, one
 * block): computed here independently of the stand-in. */
static void hkdf_ratls(const uint8_t *ikm, size_t ikm_len, const char *path,
                       uint8_t out[32])
{
    uint8_t prk[32];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const uint8_t *)"RATLS", 5);
    crypto_auth_hmacsha256_update(&st, ikm, ikm_len);
    crypto_auth_hmacsha256_final(&st, prk);
    crypto_auth_hmacsha256_init(&st, prk, sizeof prk);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)path, strlen(path));
    const uint8_t one = 1;
    crypto_auth_hmacsha256_update(&st, &one, 1);
    crypto_auth_hmacsha256_final(&st, out);
}

static int load(const char *spec, const char *endpoint, unsigned timeout_ms,
                uint8_t out[32], char *err, size_t errlen)
{
    tally_keysource_opts o = { .dstack_endpoint = endpoint,
                               .timeout_ms = timeout_ms };
    return tally_keysource_load(spec, &o, out, err, errlen);
}

static void assert_hex(const uint8_t k[32], const char *hex)
{
    char h[65];
    tu_hex(h, k, 32);
    assert_string_equal(h, hex);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* ---- file: --------------------------------------------------------------- */

static void test_file(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("ks-file");
    char raw[PATH_MAX], hex[PATH_MAX], open_[PATH_MAX], bad[PATH_MAX],
        spec[PATH_MAX + 8], err[512];
    uint8_t key[32], want[32], got[32];
    tu_key(want, 3);
    tu_path(raw, sizeof raw, dir, "raw.key");
    tu_path(hex, sizeof hex, dir, "hex.key");
    tu_path(open_, sizeof open_, dir, "open.key");
    tu_path(bad, sizeof bad, dir, "bad.key");
    tu_write(raw, want, 32);
    char h[66];
    tu_hex(h, want, 32);
    strcat(h, "\n");
    tu_write(hex, h, 65);
    tu_write(open_, want, 32);
    tu_write(bad, "0123", 4);
    assert_int_equal(chmod(raw, 0600), 0);
    assert_int_equal(chmod(hex, 0600), 0);
    assert_int_equal(chmod(open_, 0644), 0);
    assert_int_equal(chmod(bad, 0600), 0);

    snprintf(spec, sizeof spec, "file:%s", raw);
    assert_int_equal(load(spec, NULL, 0, got, err, sizeof err), 0);
    assert_memory_equal(got, want, 32);
    snprintf(spec, sizeof spec, "file:%s", hex);
    memset(got, 0, sizeof got);
    assert_int_equal(load(spec, NULL, 0, got, err, sizeof err), 0);
    assert_memory_equal(got, want, 32);

    memset(key, 0xAA, sizeof key);
    snprintf(spec, sizeof spec, "file:%s", open_);
    assert_int_equal(load(spec, NULL, 0, key, err, sizeof err), TALLY_EKEYPERM);
    assert_true(all_zero(key, 32));
    assert_non_null(strstr(err, open_));
    snprintf(spec, sizeof spec, "file:%s", bad);
    assert_int_equal(load(spec, NULL, 0, key, err, sizeof err), TALLY_EKEY);
    snprintf(spec, sizeof spec, "file:%s/missing", dir);
    assert_int_equal(load(spec, NULL, 0, key, err, sizeof err), -ENOENT);
    assert_int_equal(load("file:", NULL, 0, key, err, sizeof err), -EINVAL);
    tu_rmrf(dir);
    free(dir);
}

/* ---- env: ---------------------------------------------------------------- */

static void test_env(void **state)
{
    (void)state;
    uint8_t want[32], got[32];
    char h[65], err[512];
    tu_key(want, 9);
    tu_hex(h, want, 32);

    assert_int_equal(setenv("TALLY_TEST_KEY", h, 1), 0);
    assert_int_equal(load("env:TALLY_TEST_KEY", NULL, 0, got, err, sizeof err),
                     0);
    assert_memory_equal(got, want, 32);
    /* Upper case hex is hex too. */
    char up[65];
    for (int i = 0; i < 65; i++)
        up[i] = (char)((h[i] >= 'a' && h[i] <= 'f') ? h[i] - 32 : h[i]);
    assert_int_equal(setenv("TALLY_TEST_KEY", up, 1), 0);
    memset(got, 0, sizeof got);
    assert_int_equal(load("env:TALLY_TEST_KEY", NULL, 0, got, err, sizeof err),
                     0);
    assert_memory_equal(got, want, 32);

    /* Scrubbed: the value's bytes are overwritten and the variable gone. */
    assert_int_equal(setenv("TALLY_TEST_KEY", h, 1), 0);
    char *v = getenv("TALLY_TEST_KEY");
    tally_keysource_opts o = { .flags = TALLY_KEYSOURCE_SCRUB_ENV };
    memset(got, 0, sizeof got);
    assert_int_equal(tally_keysource_load("env:TALLY_TEST_KEY", &o, got, err,
                                          sizeof err), 0);
    assert_memory_equal(got, want, 32);
    assert_null(getenv("TALLY_TEST_KEY"));
    assert_true(all_zero((const uint8_t *)v, 64)); /* setenv never frees */

    /* Not set, not hex, short, long, empty name. */
    memset(got, 0xAA, sizeof got);
    assert_int_equal(load("env:TALLY_TEST_KEY", NULL, 0, got, err, sizeof err),
                     TALLY_EKEY);
    assert_non_null(strstr(err, "TALLY_TEST_KEY"));
    assert_true(all_zero(got, 32));
    char bad[70];
    snprintf(bad, sizeof bad, "%s", h);
    bad[10] = 'g';
    assert_int_equal(setenv("TALLY_TEST_KEY", bad, 1), 0);
    assert_int_equal(load("env:TALLY_TEST_KEY", NULL, 0, got, err, sizeof err),
                     TALLY_EKEY);
    assert_null(strstr(err, bad + 11)); /* the value is not repeated */
    bad[10] = h[10];
    bad[62] = '\0';
    assert_int_equal(setenv("TALLY_TEST_KEY", bad, 1), 0);
    assert_int_equal(load("env:TALLY_TEST_KEY", NULL, 0, got, err, sizeof err),
                     TALLY_EKEY);
    snprintf(bad, sizeof bad, "%s00", h);
    assert_int_equal(setenv("TALLY_TEST_KEY", bad, 1), 0);
    assert_int_equal(load("env:TALLY_TEST_KEY", NULL, 0, got, err, sizeof err),
                     TALLY_EKEY);
    assert_int_equal(unsetenv("TALLY_TEST_KEY"), 0);
    assert_int_equal(load("env:", NULL, 0, got, err, sizeof err), -EINVAL);
}

static void test_spec(void **state)
{
    (void)state;
    uint8_t got[32];
    char err[512];
    const char *pasted =
        "cafe0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab";
    assert_int_equal(load(pasted, NULL, 0, got, err, sizeof err), -EINVAL);
    assert_null(strstr(err, "cafe")); /* a pasted key is not echoed */
    assert_int_equal(tally_keysource_is_spec("dstack:"), 1);
    assert_int_equal(tally_keysource_is_spec("env:X"), 1);
    assert_int_equal(tally_keysource_is_spec("file:/k"), 1);
    assert_int_equal(tally_keysource_is_spec("/k"), 0);
    assert_int_equal(tally_keysource_is_spec("dstak:/x"), 0);
}

/* ---- dstack: ------------------------------------------------------------- */

static void test_dstack_known_value(void **state)
{
    (void)state;
    agent a;
    agent_start(&a, "ok", false);
    uint8_t got[32], want[32], app[32];
    char err[512];
    assert_int_equal(load("dstack:/encryption/db", a.sock, 0, got, err,
                          sizeof err), 0);
    assert_hex(got, KNOWN_DB_KEY);

    /* The default path, checked against an HKDF computed here. */
    assert_int_equal(tu_unhex(app, sizeof app, SIM_APP_KEY), 32);
    hkdf_ratls(app, 32, TALLY_KEYSOURCE_DSTACK_PATH, want);
    assert_int_equal(load("dstack:", a.sock, 0, got, err, sizeof err), 0);
    assert_memory_equal(got, want, 32);
    hkdf_ratls(app, 32, "/encryption/db", want);
    assert_hex(want, KNOWN_DB_KEY);
    hkdf_ratls(app, 32, TALLY_KEYSOURCE_DSTACK_ANCHOR_PATH, want);
    assert_int_equal(load("dstack:/tally/anchor", a.sock, 0, got, err,
                          sizeof err), 0);
    assert_memory_equal(got, want, 32);

    /* What the agent received: POST /GetKey, JSON, the three fields. */
    size_t len;
    char *log = (char *)tu_read(a.log, &len);
    assert_non_null(log);
    log = realloc(log, len + 1);
    log[len] = '\0';
    assert_non_null(strstr(log, "\"target\": \"/GetKey\""));
    assert_non_null(strstr(log, "\"content_type\": \"application/json\""));
    assert_non_null(strstr(log, "\\\"path\\\":\\\"/encryption/db\\\""));
    assert_non_null(strstr(log, "\\\"path\\\":\\\"/tally/journal\\\""));
    assert_non_null(strstr(log, "\\\"purpose\\\":\\\"\\\""));
    assert_non_null(strstr(log, "\\\"algorithm\\\":\\\"secp256k1\\\""));
    free(log);

    /* DSTACK_SIMULATOR_ENDPOINT names the socket when the caller does not. */
    assert_int_equal(setenv("DSTACK_SIMULATOR_ENDPOINT", a.sock, 1), 0);
    memset(got, 0, sizeof got);
    assert_int_equal(tally_keysource_load("dstack:/encryption/db", NULL, got,
                                          err, sizeof err), 0);
    assert_hex(got, KNOWN_DB_KEY);
    assert_int_equal(unsetenv("DSTACK_SIMULATOR_ENDPOINT"), 0);
    agent_stop(&a);
}

static void test_dstack_http_and_chunked(void **state)
{
    (void)state;
    agent a;
    uint8_t got[32];
    char err[512], url[80];
    agent_start(&a, "ok", true);
    assert_int_equal(load("dstack:/encryption/db", a.url, 0, got, err,
                          sizeof err), 0);
    assert_hex(got, KNOWN_DB_KEY);
    snprintf(url, sizeof url, "%s/", a.url);
    memset(got, 0, sizeof got);
    assert_int_equal(load("dstack:/encryption/db", url, 0, got, err,
                          sizeof err), 0);
    assert_hex(got, KNOWN_DB_KEY);
    agent_stop(&a);

    agent_start(&a, "chunked", false);
    memset(got, 0, sizeof got);
    assert_int_equal(load("dstack:/encryption/db", a.sock, 0, got, err,
                          sizeof err), 0);
    assert_hex(got, KNOWN_DB_KEY);
    agent_stop(&a);
}

/* One broken agent: TALLY_EKEY, a message with the socket and what, no key
 * (neither the good one nor what the agent sent), output wiped. */
static void expect_failure(const char *mode, const char *what)
{
    agent a;
    agent_start(&a, mode, false);
    uint8_t got[32];
    char err[512];
    memset(got, 0xAA, sizeof got);
    int rc = load("dstack:/encryption/db", a.sock, 3000, got, err, sizeof err);
    if (rc != TALLY_EKEY)
        fail_msg("mode %s: %d (%s)", mode, rc, err);
    assert_true(all_zero(got, 32));
    if (!strstr(err, a.sock) || !strstr(err, what))
        fail_msg("mode %s: message \"%s\" lacks the socket or \"%s\"", mode,
                 err, what);
    assert_null(strstr(err, KNOWN_DB_KEY + 2));
    assert_null(strstr(err, "ce74bf62"));
    agent_stop(&a);
}

static void test_dstack_refusals(void **state)
{
    (void)state;
    expect_failure("400", "stand-in refusal");
    expect_failure("400", "HTTP 400");
    expect_failure("500", "HTTP 500");
    expect_failure("garbage", "not a JSON object");
    expect_failure("nonhex", "not hex");
    expect_failure("short", "62 characters");
    expect_failure("long", "66 characters");
    expect_failure("nokey", "without a \"key\"");
    expect_failure("close", "without an answer");
}

static void test_dstack_timeout(void **state)
{
    (void)state;
    agent a;
    agent_start(&a, "hang", false);
    uint8_t got[32];
    char err[512];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(load("dstack:", a.sock, 400, got, err, sizeof err),
                     TALLY_EKEY);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s >= 0.35 && s < 3.0);
    assert_non_null(strstr(err, "did not answer within 400 ms"));
    assert_non_null(strstr(err, a.sock));
    /* The environment's timeout when the caller gives none. */
    assert_int_equal(setenv("TALLY_KEYSOURCE_TIMEOUT_MS", "300", 1), 0);
    assert_int_equal(load("dstack:", a.sock, 0, got, err, sizeof err),
                     TALLY_EKEY);
    assert_non_null(strstr(err, "within 300 ms"));
    assert_int_equal(unsetenv("TALLY_KEYSOURCE_TIMEOUT_MS"), 0);
    agent_stop(&a);
}

static void test_dstack_missing(void **state)
{
    (void)state;
    uint8_t got[32];
    char err[512];
    char *dir = tu_mkdtemp("ks-missing");
    char sock[PATH_MAX];
    tu_path(sock, sizeof sock, dir, "nobody.sock");
    assert_int_equal(load("dstack:", sock, 1000, got, err, sizeof err),
                     TALLY_EKEY);
    assert_non_null(strstr(err, sock));
    assert_non_null(strstr(err, "cannot reach"));
    /* A socket file nobody listens on. */
    tu_write(sock, "", 0);
    assert_int_equal(load("dstack:", sock, 1000, got, err, sizeof err),
                     TALLY_EKEY);
    assert_non_null(strstr(err, sock));
    tu_rmrf(dir);
    free(dir);

    /* No endpoint given: the SDKs' socket paths, none of which exists
     * here (skipped on a machine that runs a dstack agent). */
    struct stat st;
    if (stat("/var/run/dstack.sock", &st) == 0 ||
        stat("/run/dstack.sock", &st) == 0 ||
        stat("/var/run/dstack/dstack.sock", &st) == 0 ||
        stat("/run/dstack/dstack.sock", &st) == 0)
        return;
    assert_int_equal(unsetenv("DSTACK_SIMULATOR_ENDPOINT"), 0);
    assert_int_equal(tally_keysource_load("dstack:", NULL, got, err,
                                          sizeof err), TALLY_EKEY);
    assert_non_null(strstr(err, "/var/run/dstack.sock"));
    assert_non_null(strstr(err, "/run/dstack/dstack.sock"));
    assert_non_null(strstr(err, "DSTACK_SIMULATOR_ENDPOINT"));
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PYTHON STANDIN\n", argv[0]);
        return 2;
    }
    python = argv[1];
    standin = argv[2];
    if (sodium_init() < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_spec),
        cmocka_unit_test(test_dstack_known_value),
        cmocka_unit_test(test_dstack_http_and_chunked),
        cmocka_unit_test(test_dstack_refusals),
        cmocka_unit_test(test_dstack_timeout),
        cmocka_unit_test(test_dstack_missing),
    };
    return cmocka_run_group_tests(tests, NULL, tu_cleanup);
}
