/*
 * main.c — the `tally` command: a table of subcommands drives dispatch,
 * `tally --help`, `tally help CMD` and `tally CMD --help`. Each subcommand
 * is one cmd-*.c file; adding one is adding a row here.
 */
#include "common.h"
#ifdef TALLY_WITH_TALLYD
#include "tally-client.h"
#endif

#include <stdio.h>
#include <string.h>

#include <sodium.h>

extern const char cmd_keygen_usage[];
extern const char cmd_init_usage[];
extern const char cmd_append_usage[];
extern const char cmd_cat_usage[];
extern const char cmd_head_usage[];
extern const char cmd_verify_usage[];
extern const char cmd_compact_usage[];
extern const char cmd_anchor_deploy_usage[];
extern const char cmd_checkpoint_usage[];
extern const char cmd_status_usage[];
extern const char cmd_audit_usage[];
extern const char cmd_rekey_usage[];
extern const char cmd_forget_usage[];
extern const char cmd_set_padding_usage[];
extern const char cmd_stat_usage[];

static const struct cli_cmd commands[] = {
    { "keygen", cmd_keygen, "create a new random master key file", cmd_keygen_usage },
    { "init",   cmd_init,   "create a journal in a directory", cmd_init_usage },
    { "append", cmd_append, "append records read from stdin", cmd_append_usage },
    { "cat",    cmd_cat,    "decrypt and print records", cmd_cat_usage },
    { "head",   cmd_head,   "print the last seq and chain link (no key needed)", cmd_head_usage },
    { "verify", cmd_verify, "check a whole journal, with or without the key", cmd_verify_usage },
    { "compact", cmd_compact, "prune superseded records, merge small segments", cmd_compact_usage },
    { "audit",  cmd_audit,  "full offline audit: report, JSON, anchors, evidence bundles", cmd_audit_usage },
    { "status", cmd_status, "freshness verdict of a journal against its anchor", cmd_status_usage },
    { "checkpoint", cmd_checkpoint, "anchor the head on a chain (once or every N s)", cmd_checkpoint_usage },
    { "anchor-deploy", cmd_anchor_deploy, "deploy the JournalAnchor contract, print its address", cmd_anchor_deploy_usage },
    { "rekey",  cmd_rekey,  "start a new key epoch, or move to a new master key", cmd_rekey_usage },
    { "forget", cmd_forget, "destroy the keys of old epochs (crypto-erasure)", cmd_forget_usage },
    { "set-padding", cmd_set_padding, "pad new records to hide their sizes (none, block:N, buckets)", cmd_set_padding_usage },
    { "stat",   cmd_stat,   "what the files reveal without the key (--leakage: sizes, times)", cmd_stat_usage },
#ifdef TALLY_WITH_TALLYD
    { "send",   cmd_send,   "append lines of stdin through a running tallyd", tally_client_send_usage },
    { "follow", cmd_follow, "print what a running tallyd commits, live", tally_client_follow_usage },
#endif
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const struct cli_cmd *find_cmd(const char *name)
{
    size_t i;

    for (i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void general_usage(FILE *f)
{
    size_t i;

    fputs("Usage: tally COMMAND [ARGS...]\n"
          "       tally help [COMMAND]\n"
          "       tally --help | --version\n"
          "\n"
          "tally keeps an append-only, encrypted, hash-chained journal in a\n"
          "directory (format: docs/FORMAT.md).\n"
          "\n"
          "Commands:\n", f);
    for (i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fputs("\n"
          "Run 'tally help COMMAND' or 'tally COMMAND --help' for its options.\n"
          "\n"
          "Environment:\n"
          "  TALLY_KEY_FILE  key file to use when --key-file is not given\n"
          "  TALLY_KEY_SOURCE  key source (file:PATH, env:NAME, dstack:PATH) to\n"
          "                  use when no key option is given; before\n"
          "                  TALLY_KEY_FILE\n"
          "  DSTACK_SIMULATOR_ENDPOINT  the dstack agent's socket or URL\n"
          "  TALLY_RPC_URL, TALLY_CONTRACT, TALLY_SIGNER_KEY_FILE\n"
          "                  the anchor target when no anchor option is given\n"
          "                  (commands that take anchor options; README\n"
          "                  \"Anchoring on a chain\")\n"
          "\n", f);
    fputs(cli_exit_status_help, f);
}

static int print_general_help(void)
{
    general_usage(stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("tally: writing help to stdout");
        return EXIT_OPERATIONAL;
    }
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    const struct cli_cmd *cmd;
    char prog[64];

    if (sodium_init() < 0) {
        fputs("tally: initialising libsodium failed\n", stderr);
        return EXIT_OPERATIONAL;
    }
    if (argc < 2) {
        fputs("tally: no command given\n"
              "Try 'tally --help'.\n", stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc == 2)
            return print_general_help();
        fputs("tally: --help takes no arguments\n"
              "Try 'tally help COMMAND'.\n", stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("tally %s (libsodium %s)\n", TALLY_VERSION_STRING,
               sodium_version_string());
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_OPERATIONAL;
    }
    if (strcmp(argv[1], "help") == 0) {
        if (argc == 2)
            return print_general_help();
        if (argc > 3) {
            fputs("tally help: give at most one command\n", stderr);
            return EXIT_USAGE;
        }
        cmd = find_cmd(argv[2]);
        if (cmd == NULL) {
            fprintf(stderr, "tally help: unknown command '%s'\n"
                            "Try 'tally --help'.\n", argv[2]);
            return EXIT_USAGE;
        }
        return cli_help(cmd);
    }
    cmd = find_cmd(argv[1]);
    if (cmd == NULL) {
        fprintf(stderr, "tally: unknown command '%s'\n"
                        "Try 'tally --help'.\n", argv[1]);
        return EXIT_USAGE;
    }
    /* The subcommand sees argv[0] = "tally CMD", so that getopt's own
     * messages name the command they are about. */
    snprintf(prog, sizeof prog, "tally %s", cmd->name);
    argv[1] = prog;
    cli_getopt_reset();
    return cmd->run(cmd, argc - 1, argv + 1);
}
