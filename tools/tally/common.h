/*
 * common.h — what the `tally` subcommands share: the command table entry,
 * exit statuses, error reporting, key loading and the small encoders (hex,
 * JSON strings, base64) the output formats need.
 *
 * Each subcommand lives in its own cmd-*.c and exports one run function;
 * main.c lists them in a table that drives dispatch and help.
 */
#ifndef TALLY_CLI_COMMON_H
#define TALLY_CLI_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tally.h"

/* Exit statuses, the same for every subcommand (README "Exit status"). */
enum {
    EXIT_OK = 0,
    EXIT_OPERATIONAL = 1,
    EXIT_USAGE = 2,
    EXIT_INTEGRITY = 3,
    EXIT_FRESHNESS = 4,
    EXIT_KEY = 5,
};

struct cli_cmd;
typedef int (*cli_run_fn)(const struct cli_cmd *self, int argc, char **argv);

/* One row of the command table in main.c. */
struct cli_cmd {
    const char *name;
    cli_run_fn run;
    const char *summary; /* one line, for `tally --help` */
    const char *usage;   /* the full text of `tally help NAME` */
};

/* How messages name the command: "tally NAME: ..." for a subcommand, or
 * "NAME: ..." for a program of its own that reuses these helpers (tallyd),
 * whose row has no run function. Use as "%s%s: ...", CLI_WHO(self). */
#define CLI_WHO(self) ((self)->run != NULL ? "tally " : ""), (self)->name

/* The subcommands (one file each). */
int cmd_keygen(const struct cli_cmd *self, int argc, char **argv);
int cmd_init(const struct cli_cmd *self, int argc, char **argv);
int cmd_append(const struct cli_cmd *self, int argc, char **argv);
int cmd_cat(const struct cli_cmd *self, int argc, char **argv);
int cmd_head(const struct cli_cmd *self, int argc, char **argv);
int cmd_verify(const struct cli_cmd *self, int argc, char **argv);
int cmd_compact(const struct cli_cmd *self, int argc, char **argv); /* cmd-compact.c */
/* the offline audit (cmd-audit.c, audit/audit.h) */
int cmd_audit(const struct cli_cmd *self, int argc, char **argv);
/* anchoring (cmd-anchor-deploy.c, cmd-checkpoint.c, cmd-status.c) */
int cmd_anchor_deploy(const struct cli_cmd *self, int argc, char **argv);
int cmd_checkpoint(const struct cli_cmd *self, int argc, char **argv);
int cmd_status(const struct cli_cmd *self, int argc, char **argv);
/* key epochs (cmd-rekey.c, cmd-forget.c) */
int cmd_rekey(const struct cli_cmd *self, int argc, char **argv);
int cmd_forget(const struct cli_cmd *self, int argc, char **argv);
/* leakage (cmd-set-padding.c, cmd-stat.c) */
int cmd_set_padding(const struct cli_cmd *self, int argc, char **argv);
int cmd_stat(const struct cli_cmd *self, int argc, char **argv);
#ifdef TALLY_WITH_TALLYD
/* tallyd verbs (tools/tallyd/cli.c), when nanomsg is there */
int cmd_send(const struct cli_cmd *self, int argc, char **argv);
int cmd_follow(const struct cli_cmd *self, int argc, char **argv);
#endif

/* The footer every help text ends with: the shared exit statuses. */
extern const char cli_exit_status_help[];

/* Prints self's help to stdout and returns EXIT_OK (or EXIT_OPERATIONAL if
 * stdout cannot be written). */
int cli_help(const struct cli_cmd *self);

/* Reports a usage error ("tally CMD: ...", then a hint to --help) on stderr
 * and returns EXIT_USAGE. */
int cli_usage_error(const struct cli_cmd *self, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reports "tally CMD: <what> <path>: <why>" on stderr. */
void cli_error(const struct cli_cmd *self, const char *what, const char *path,
               const char *why);

/* Like cli_error with tally_strerror(err) as the reason (or msg, when the
 * library left a more precise one with the place of the failure), and
 * returns tally_exit_code(err). */
int cli_fail(const struct cli_cmd *self, const char *what, const char *path,
             int err, const char *msg);

/* Prepares getopt_long for a subcommand's argv (argv[0] = its name). */
void cli_getopt_reset(void);

/* Resolves the key: the --key-file / --key-source argument if given, else
 * $TALLY_KEY_SOURCE, else $TALLY_KEY_FILE, else NULL. The result is a key
 * source spec (file:PATH, env:NAME, dstack:[PATH]; journal/keysource.h)
 * or, without one of those prefixes, a key file path. */
const char *cli_key_path(const char *opt_path);

/* Loads the master key that path (a key file path or a key source spec,
 * see cli_key_path) names into sodium_malloc'd memory (*ret_key, release
 * with cli_key_free). An env: source is removed from the environment once
 * read. Returns EXIT_OK, or reports the failure (never the key bytes) and
 * returns EXIT_KEY (a key that cannot be loaded is an unavailable key;
 * EXIT_USAGE for a malformed spec). */
int cli_key_load(const struct cli_cmd *self, const char *path,
                 uint8_t **ret_key);
void cli_key_free(uint8_t *key);

/* Strict unsigned parsers: the whole string must be a number.
 * cli_parse_u64: decimal. cli_parse_size: decimal with an optional K, M, G
 * (powers of 1024) suffix. cli_parse_u16: decimal or 0x-hex. */
int cli_parse_u64(const char *s, uint64_t *ret);
int cli_parse_size(const char *s, uint64_t *ret);
int cli_parse_u16(const char *s, uint16_t *ret);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void cli_hex(const uint8_t *in, size_t n, char *out);
/* Parses exactly 2n hex digits into out; 0 or -1. */
int cli_unhex(const char *s, uint8_t *out, size_t n);

/* 1 if the n bytes are well-formed UTF-8 (no overlongs, surrogates or code
 * points above U+10FFFF). */
int cli_utf8_valid(const uint8_t *s, size_t n);

/* Writes s as a JSON string literal (quotes included); s must be valid
 * UTF-8 (cli_utf8_valid). */
void cli_json_string(FILE *f, const uint8_t *s, size_t n);
/* Writes the standard base64 (RFC 4648, padded) of s as a JSON string. */
int cli_json_base64(FILE *f, const uint8_t *s, size_t n);

/* Writes bytes for a human reader on one line: printable text as is
 * (UTF-8 kept when the whole string is valid UTF-8), backslash, control
 * bytes and (when not valid UTF-8) bytes >= 0x80 as \n, \t, \r, \\ or
 * \xNN; with escape_space, spaces too (so a field stays one word). */
void cli_print_escaped(FILE *f, const uint8_t *s, size_t n, int escape_space);

/* ns since the Unix epoch as "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ" (UTC). */
void cli_format_ts(uint64_t ts_ns, char out[static 40]);

/* The CLI's name of a cipher ("aes256gcm", "xchacha20poly1305", "?"). */
const char *cli_cipher_name(int cipher);

/* Flushes stdout; on failure reports it and returns EXIT_OPERATIONAL. */
int cli_flush_stdout(const struct cli_cmd *self);

#endif
