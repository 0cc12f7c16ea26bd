/*
 * fuzz-main.c — a main() for the harnesses when they are not built with
 * libFuzzer: runs every file named, and every file in every directory
 * named, through LLVMFuzzerTestOneInput once, each in a child process (so
 * that one input that aborts does not hide the others), and prints how
 * many ran and which failed. Exit 1 if any failed. (The short stress run
 * replays the committed seed corpora and regression inputs this way.)
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned long runs, failures;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 65536;
            uint8_t *b = realloc(buf, cap);
            if (!b) {
                fclose(f);
                free(buf);
                return -1;
            }
            buf = b;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        free(buf);
        return -1;
    }
    if (pid == 0) {
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        exit(0); /* exit handlers run: a leak checker has its say */
    }
    free(buf);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        ;
    runs++;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        failures++;
        fprintf(stderr, "fuzz-main: FAILED: %s (%s %d)\n", path,
                WIFSIGNALED(st) ? "signal" : "exit",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    }
    return 0;
}

int main(int argc, char **argv)
{
    int bad = 0;
    fuzz_workdir(); /* made once here, shared by the children */
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) < 0) {
            fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
            bad = 1;
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) {
            bad |= run_file(argv[i]) < 0;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, alphasort);
        if (n < 0) {
            fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
            bad = 1;
            continue;
        }
        for (int k = 0; k < n; k++) {
            if (names[k]->d_name[0] != '.') {
                char p[8192];
                snprintf(p, sizeof p, "%s/%s", argv[i], names[k]->d_name);
                bad |= run_file(p) < 0;
            }
            free(names[k]);
        }
        free(names);
    }
    printf("fuzz-main inputs=%lu failed=%lu\n", runs, failures);
    return bad || failures;
}
