/*
 * common.c — helpers shared by the `tally` subcommands: error reporting in
 * one shape ("tally CMD: what path: why"), key loading into locked memory,
 * strict number parsing and the encoders of the human and JSON outputs.
 */
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "keysource.h"

const char cli_exit_status_help[] =
    "Exit status:\n"
    "  0  success\n"
    "  1  operational error (I/O, missing file or directory, journal busy, ...)\n"
    "  2  usage error\n"
    "  3  integrity failure (tampered, corrupt, truncated in the middle)\n"
    "  4  freshness failure (rolled back, forked, deleted, stale anchor)\n"
    "  5  wrong or unavailable key (wrong key, key file missing, unreadable,\n"
    "     malformed or readable by group/others, key agent unreachable or\n"
    "     refusing)\n";

int cli_help(const struct cli_cmd *self)
{
    fputs(self->usage, stdout);
    fputc('\n', stdout);
    fputs(cli_exit_status_help, stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s%s: writing help to stdout: %s\n", CLI_WHO(self),
                strerror(errno));
        return EXIT_OPERATIONAL;
    }
    return EXIT_OK;
}

int cli_usage_error(const struct cli_cmd *self, const char *fmt, ...)
{
    va_list ap;

    if (fmt != NULL) {
        fprintf(stderr, "%s%s: ", CLI_WHO(self));
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    fprintf(stderr, "Try '%s%s --help'.\n", CLI_WHO(self));
    return EXIT_USAGE;
}

void cli_error(const struct cli_cmd *self, const char *what, const char *path,
               const char *why)
{
    fprintf(stderr, "%s%s: %s%s%s: %s\n", CLI_WHO(self), what,
            path != NULL ? " " : "", path != NULL ? path : "", why);
}

int cli_fail(const struct cli_cmd *self, const char *what, const char *path,
             int err, const char *msg)
{
    cli_error(self, what, path,
              msg != NULL && msg[0] != '\0' ? msg : tally_strerror(err));
    return tally_exit_code(err);
}

void cli_getopt_reset(void)
{
    /* GNU getopt: 0 (not 1) re-initialises its internal state too. */
    optind = 0;
    opterr = 1;
}

const char *cli_key_path(const char *opt_path)
{
    const char *env;

    if (opt_path != NULL)
        return opt_path;
    env = getenv("TALLY_KEY_SOURCE");
    if (env != NULL && env[0] != '\0')
        return env;
    env = getenv("TALLY_KEY_FILE");
    return env != NULL && env[0] != '\0' ? env : NULL;
}

int cli_key_load(const struct cli_cmd *self, const char *path,
                 uint8_t **ret_key)
{
    /* env: sources are scrubbed from the environment once read, so that
     * /proc/PID/environ and child processes do not show the key. */
    const tally_keysource_opts ko = { .flags = TALLY_KEYSOURCE_SCRUB_ENV };
    char err[512];
    uint8_t *key;
    int rc;

    key = sodium_malloc(TALLY_KEY_BYTES);
    if (key == NULL) {
        cli_error(self, "allocating locked memory for key", NULL,
                  strerror(ENOMEM));
        return EXIT_OPERATIONAL;
    }
    if (!tally_keysource_is_spec(path)) {
        /* A bare path is a key file: --key-file F is --key-source file:F. */
        rc = tally_key_load(path, key);
        if (rc < 0) {
            sodium_free(key); /* wipes */
            cli_error(self, "loading key file", path, tally_strerror(rc));
            return EXIT_KEY;
        }
        *ret_key = key;
        return EXIT_OK;
    }
    rc = tally_keysource_load(path, &ko, key, err, sizeof err);
    if (rc < 0) {
        sodium_free(key);
        /* The message names the source (a file, a variable's name, the
         * agent's socket), never key bytes. */
        cli_error(self, "loading key from", path, err);
        if (rc == -EINVAL)
            return EXIT_USAGE;
        return rc == -ENOMEM ? EXIT_OPERATIONAL : EXIT_KEY;
    }
    *ret_key = key;
    return EXIT_OK;
}

void cli_key_free(uint8_t *key)
{
    if (key != NULL)
        sodium_free(key); /* sodium_free wipes before releasing */
}

int cli_parse_u64(const char *s, uint64_t *ret)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *ret = v;
    return 0;
}

int cli_parse_size(const char *s, uint64_t *ret)
{
    char buf[32];
    size_t n;
    uint64_t v, mult = 1;

    if (s == NULL)
        return -1;
    n = strlen(s);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n + 1);
    switch (buf[n - 1]) {
    case 'k': case 'K': mult = 1ull << 10; break;
    case 'm': case 'M': mult = 1ull << 20; break;
    case 'g': case 'G': mult = 1ull << 30; break;
    default: break;
    }
    if (mult != 1)
        buf[n - 1] = '\0';
    if (cli_parse_u64(buf, &v) < 0 || v > UINT64_MAX / mult)
        return -1;
    *ret = v * mult;
    return 0;
}

int cli_parse_u16(const char *s, uint16_t *ret)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0')
        return -1;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        if (*s == '\0')
            return -1;
        for (; *s != '\0'; s++) {
            int d;
            if (*s >= '0' && *s <= '9') d = *s - '0';
            else if (*s >= 'a' && *s <= 'f') d = *s - 'a' + 10;
            else if (*s >= 'A' && *s <= 'F') d = *s - 'A' + 10;
            else return -1;
            v = v * 16 + (uint64_t)d;
            if (v > UINT16_MAX)
                return -1;
        }
    } else if (cli_parse_u64(s, &v) < 0 || v > UINT16_MAX) {
        return -1;
    }
    *ret = (uint16_t)v;
    return 0;
}

void cli_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int cli_unhex(const char *s, uint8_t *out, size_t n)
{
    size_t i;

    if (strlen(s) != 2 * n)
        return -1;
    for (i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int cli_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0, len, k;
    uint32_t cp, min;

    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            len = 2; cp = c & 0x1Fu; min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3; cp = c & 0x0Fu; min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4; cp = c & 0x07u; min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

void cli_json_string(FILE *f, const uint8_t *s, size_t n)
{
    size_t i;

    fputc('"', f);
    for (i = 0; i < n; i++) {
        uint8_t c = s[i];
        switch (c) {
        case '"':  fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

int cli_json_base64(FILE *f, const uint8_t *s, size_t n)
{
    const int variant = sodium_base64_VARIANT_ORIGINAL;
    size_t cap = sodium_base64_ENCODED_LEN(n, variant);
    char *b64 = malloc(cap);

    if (b64 == NULL)
        return -ENOMEM;
    sodium_bin2base64(b64, cap, s, n, variant);
    fputc('"', f);
    fputs(b64, f);
    fputc('"', f);
    free(b64);
    return 0;
}

void cli_print_escaped(FILE *f, const uint8_t *s, size_t n, int escape_space)
{
    int utf8 = cli_utf8_valid(s, n);
    size_t i;

    for (i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '\\') {
            fputs("\\\\", f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f || (c == ' ' && escape_space)) {
            fprintf(f, "\\x%02x", c);
        } else if (c >= 0x80 && utf8 && c == 0xC2 && i + 1 < n &&
                   s[i + 1] >= 0x80 && s[i + 1] <= 0x9F) {
            /* A C1 control (U+0080..U+009F) could drive the terminal. */
            fprintf(f, "\\x%02x\\x%02x", c, s[i + 1]);
            i++;
        } else if (c >= 0x80 && !utf8) {
            fprintf(f, "\\x%02x", c);
        } else {
            fputc(c, f);
        }
    }
}

void cli_format_ts(uint64_t ts_ns, char out[static 40])
{
    time_t secs = (time_t)(ts_ns / 1000000000u);
    struct tm tm;
    char date[24];

    if (gmtime_r(&secs, &tm) == NULL ||
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(out, 40, "%llu", (unsigned long long)ts_ns);
        return;
    }
    snprintf(out, 40, "%s.%09uZ", date, (unsigned)(ts_ns % 1000000000u));
}

const char *cli_cipher_name(int cipher)
{
    switch (cipher) {
    case TALLY_CIPHER_AES256GCM: return "aes256gcm";
    case TALLY_CIPHER_XCHACHA20POLY1305: return "xchacha20poly1305";
    default: return "?";
    }
}

int cli_flush_stdout(const struct cli_cmd *self)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error(self, "writing to", "stdout", strerror(errno));
        return EXIT_OPERATIONAL;
    }
    return EXIT_OK;
}
