/*
 * cli.c — the `send` and `follow` verbs over tallyd, as functions of the
 * client library so that the `tally` command can list them in its table
 * (and tally-client-cli.c runs them on their own). Output formats follow
 * `tally cat`: one text line or one JSON object per record.
 */
#include "tally-client.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "common.h" /* tools/tally: the CLI's one key loader */
#include "wire.h"

const char tally_client_send_usage[] =
    "Usage: tally send --connect URL [--type T] [--key K] [--push]\n"
    "                  [--batch N] [--timeout MS]\n"
    "\n"
    "Appends one record per line of stdin (without its newline) through the\n"
    "tallyd listening at URL (its --append socket). Lines that arrive\n"
    "together go in one request, up to --batch lines (default 64); each\n"
    "request waits until tallyd acknowledges it as durable. Each request\n"
    "carries a random request id: a request nanomsg resends after a daemon\n"
    "restart is stored once (README \"tallyd\": delivery guarantees).\n"
    "\n"
    "Options:\n"
    "  --connect URL  the daemon's append URL (ipc://... or tcp://...)\n"
    "  --dir DIR      instead of --connect: the daemon's default URL for DIR\n"
    "  --type T       record type, 0..65279 (default 0)\n"
    "  --key K        record key for every record (default empty)\n"
    "  --push         fire and forget through the daemon's pull socket\n"
    "  --batch N      most lines per request (1..4096)\n"
    "  --timeout MS   how long to wait for an acknowledgement (default 30000)\n"
    "\n"
    "Prints a summary (records, seqs, head) to stderr. Exit status as for\n"
    "every tally command: 0 ok, 1 operational, 2 usage.\n";

const char tally_client_follow_usage[] =
    "Usage: tally follow --connect URL [--from SEQ] [--type T] [--json]\n"
    "                    [--dir DIR] [--key-file FILE | --key-source SPEC]\n"
    "                    [--until SEQ] [--idle-exit MS]\n"
    "\n"
    "Prints the records tallyd commits, in seq order, each once: first the\n"
    "records from --from on (range requests, or the files when --dir is\n"
    "given), then the live publications, joined on seq without a gap.\n"
    "Checks every link against the previous one and stops with exit status\n"
    "4 if the daemon's journal goes back or a seq comes back changed, 3 if\n"
    "the chain breaks.\n"
    "\n"
    "Output: SEQ TIMESTAMP TYPE KEY PAYLOAD as 'tally cat' prints it, or with\n"
    "--json {\"seq\":N,\"ts\":NS,\"type\":T,\"key\":...,\"payload\":...,\n"
    "\"link\":\"HEX\"} (key_b64/payload_b64 when not UTF-8; \"encrypted\":true\n"
    "when the record came as stored and no key was given).\n"
    "\n"
    "Options:\n"
    "  --connect URL    the daemon's append URL (requests, range)\n"
    "  --publish URL    its publish URL (default: from its status)\n"
    "  --dir DIR        catch up from the files in DIR (with a key; without\n"
    "                   one, from the daemon, which sends plaintext over\n"
    "                   ipc://); without --connect, the daemon's default\n"
    "                   URL for DIR\n"
    "  --from SEQ       first seq (default: only new records)\n"
    "  --type T         only records of type T\n"
    "  --key-file FILE  decrypt records published as stored (tcp://), and\n"
    "                   read DIR; default $TALLY_KEY_SOURCE, $TALLY_KEY_FILE\n"
    "  --key-source SPEC  the key from a key source instead: file:PATH,\n"
    "                   env:NAME, dstack:[PATH] (README \"Keys\")\n"
    "  --until SEQ      exit 0 once SEQ was printed\n"
    "  --idle-exit MS   exit 0 after MS without a publication\n"
    "  --json           JSON lines\n";

/* ---- shared bits ------------------------------------------------------------ */

static volatile int g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int parse_u64(const char *s, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    if (!*s || *s == '-')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *ret = v;
    return 0;
}

static int parse_type(const char *s, uint16_t *ret)
{
    uint64_t v;

    if (parse_u64(s, &v) < 0 || v > 0xFFFF || !wire_type_allowed((uint16_t)v))
        return -1;
    *ret = (uint16_t)v;
    return 0;
}

static int usage_error(const char *verb, const char *msg)
{
    fprintf(stderr, "tally %s: %s\nRun 'tally %s --help' for its options.\n",
            verb, msg, verb);
    return 2;
}

static int resolve_url(const char *connect, const char *dir, char *out,
                       size_t outlen)
{
    tally_client_urls u;

    if (connect) {
        snprintf(out, outlen, "%s", connect);
        return 0;
    }
    if (dir && tally_client_default_urls(dir, &u) == 0) {
        snprintf(out, outlen, "%s", u.append_url);
        return 0;
    }
    return -1;
}

/* ---- send --------------------------------------------------------------- */

/* A line reader that knows whether a whole line is already buffered, so
 * that lines which arrive together are sent together. */
typedef struct lines {
    char *buf;
    size_t len, cap, start;
    bool eof;
} lines;

static int lines_fill(lines *l)
{
    ssize_t n;

    if (l->start > 0) {
        memmove(l->buf, l->buf + l->start, l->len - l->start);
        l->len -= l->start;
        l->start = 0;
    }
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 65536;
        char *p;

        if (cap > TALLY_MAX_PAYLOAD + 2)
            return -E2BIG;
        p = realloc(l->buf, cap);
        if (!p)
            return -ENOMEM;
        l->buf = p;
        l->cap = cap;
    }
    do
        n = read(0, l->buf + l->len, l->cap - l->len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        l->eof = true;
    l->len += (size_t)n;
    return 0;
}

/* A whole line buffered: 1 and *ret, *ret_len; 0 none. At end of input a
 * last line without newline counts. */
static int lines_get(lines *l, char **ret, size_t *ret_len)
{
    char *nl;

    /* Nothing buffered (buf may still be NULL: memchr must not see it). */
    if (l->len == l->start)
        return 0;
    nl = memchr(l->buf + l->start, '\n', l->len - l->start);

    if (!nl && !(l->eof && l->len > l->start))
        return 0;
    *ret = l->buf + l->start;
    if (nl) {
        *ret_len = (size_t)(nl - *ret);
        l->start += *ret_len + 1;
    } else {
        *ret_len = l->len - l->start;
        l->start = l->len;
    }
    return 1;
}

int tally_client_cmd_send(int argc, char **argv)
{
    enum { OPT_CONNECT = 256, OPT_DIR, OPT_TYPE, OPT_KEY, OPT_PUSH, OPT_BATCH, OPT_TIMEOUT,
           OPT_HELP };
    static const struct option longopts[] = {
        { "connect", required_argument, NULL, OPT_CONNECT },
        { "dir", required_argument, NULL, OPT_DIR },
        { "type", required_argument, NULL, OPT_TYPE },
        { "key", required_argument, NULL, OPT_KEY },
        { "push", no_argument, NULL, OPT_PUSH },
        { "batch", required_argument, NULL, OPT_BATCH },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
    };
    const char *connect = NULL, *dir = NULL, *key = "";
    char url[TALLY_CLIENT_MAX_URL + 1];
    uint16_t type = 0;
    uint64_t batch = 64, timeout = 0, sent = 0, first = 0, last = 0, dups = 0;
    bool push = false;
    tally_client_options opt;
    tally_client_ack ack;
    tally_client *c;
    tally_record_in *recs;
    lines l;
    int opt_c, rc, status = 0;

    optind = 0;
    while ((opt_c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt_c) {
        case OPT_CONNECT: connect = optarg; break;
        case OPT_DIR: dir = optarg; break;
        case OPT_TYPE:
            if (parse_type(optarg, &type) < 0)
                return usage_error("send", "--type takes 0..65279");
            break;
        case OPT_KEY:
            key = optarg;
            if (strlen(key) > TALLY_MAX_RKEY)
                return usage_error("send", "--key is over 1024 bytes");
            break;
        case OPT_PUSH: push = true; break;
        case OPT_BATCH:
            if (parse_u64(optarg, &batch) < 0 || batch == 0 ||
                batch > WIRE_MAX_BATCH)
                return usage_error("send", "--batch takes 1..4096");
            break;
        case OPT_TIMEOUT:
            if (parse_u64(optarg, &timeout) < 0 || timeout > INT32_MAX)
                return usage_error("send", "bad --timeout");
            break;
        case 'h':
        case OPT_HELP: fputs(tally_client_send_usage, stdout); return 0;
        default: return usage_error("send", "unknown option");
        }
    }
    if (optind != argc)
        return usage_error("send", "unexpected argument");
    if (resolve_url(connect, dir, url, sizeof url) < 0)
        return usage_error("send", "give --connect URL (or --dir DIR)");
    if (sodium_init() < 0)
        return 1;
    memset(&opt, 0, sizeof opt);
    opt.timeout_ms = (int)timeout;
    rc = tally_client_connect(&c, url, &opt);
    if (rc < 0) {
        fprintf(stderr, "tally send: connecting to %s: %s\n", url,
                tally_strerror(rc));
        return 1;
    }
    recs = calloc((size_t)batch, sizeof *recs);
    if (!recs) {
        tally_client_close(c);
        return 1;
    }
    memset(&l, 0, sizeof l);
    for (;;) {
        size_t n = 0, bytes = 0;
        char *line;
        size_t len;

        /* take the lines that are here, waiting only for the first */
        while (n < batch && bytes < (4u << 20)) {
            if (lines_get(&l, &line, &len)) {
                recs[n].type = type;
                recs[n].key = key;
                recs[n].key_len = strlen(key);
                recs[n].payload = line;
                recs[n].payload_len = len;
                recs[n].ts_ns = 0;
                bytes += len;
                n++;
                continue;
            }
            if (l.eof)
                break;
            if (n > 0) {
                struct pollfd p = { .fd = 0, .events = POLLIN };

                if (poll(&p, 1, 0) <= 0)
                    break;
            }
            /* the lines taken so far point into l.buf, which a refill
             * moves: send them first */
            if (n > 0 && l.start > 0)
                break;
            rc = lines_fill(&l);
            if (rc < 0) {
                fprintf(stderr, "tally send: reading stdin: %s\n",
                        rc == -E2BIG ? "line over 16 MiB" : strerror(-rc));
                status = 1;
                goto out;
            }
        }
        if (n == 0)
            break;
        if (push)
            rc = tally_client_push(c, recs, n);
        else
            rc = tally_client_append(c, recs, n, &ack);
        if (rc < 0) {
            fprintf(stderr, "tally send: %s\n", tally_client_errmsg(c));
            status = rc == -ETIMEDOUT || rc == -EAGAIN ? 1
                                                       : tally_exit_code(rc);
            goto out;
        }
        if (!push) {
            if (!first)
                first = ack.first_seq;
            last = ack.first_seq + ack.count - 1;
            dups += ack.duplicate != 0;
        }
        sent += n;
    }
    if (push)
        fprintf(stderr, "tally send: pushed %" PRIu64 " records\n", sent);
    else if (sent) {
        char hex[65];

        sodium_bin2hex(hex, sizeof hex, ack.head_link, 32);
        fprintf(stderr, "tally send: %" PRIu64 " records, seqs %" PRIu64
                "..%" PRIu64 ", head %" PRIu64 " %s\n", sent, first, last,
                ack.head_seq, hex);
        if (dups)
            fprintf(stderr, "tally send: %" PRIu64 " requests were resent "
                    "after a reconnect and had been committed already (stored "
                    "once)\n", dups);
    } else
        fputs("tally send: no records\n", stderr);
out:
    if (push && status == 0) {
        /* nanomsg sends in the background: give it a moment before the
         * socket closes and drops what is queued */
        struct timespec ts = { 0, 200000000 };

        nanosleep(&ts, NULL);
    }
    free(l.buf);
    free(recs);
    tally_client_close(c);
    return status;
}

/* ---- follow ----------------------------------------------------------------- */

static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;

        if (b < 0x80) {
            i++;
            continue;
        }
        if ((b & 0xE0) == 0xC0)
            k = 1, cp = b & 0x1F;
        else if ((b & 0xF0) == 0xE0)
            k = 2, cp = b & 0x0F;
        else if ((b & 0xF8) == 0xF0)
            k = 3, cp = b & 0x07;
        else
            return false;
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) ||
            (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

/* As `tally cat`: backslash, control bytes and non-UTF-8 bytes escaped;
 * in a key also spaces and a lone "-". */
static void print_escaped(const uint8_t *s, size_t n, bool is_key)
{
    bool valid = utf8_valid(s, n);

    if (is_key && n == 0) {
        fputc('-', stdout);
        return;
    }
    if (is_key && n == 1 && s[0] == '-') {
        fputs("\\x2d", stdout);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t b = s[i];

        if (b == '\\')
            fputs("\\\\", stdout);
        else if (b == '\n')
            fputs("\\n", stdout);
        else if (b == '\t')
            fputs("\\t", stdout);
        else if (b == '\r')
            fputs("\\r", stdout);
        else if (b < 0x20 || b == 0x7F || (is_key && b == ' ') ||
                 (!valid && b >= 0x80))
            printf("\\x%02x", b);
        else
            fputc(b, stdout);
    }
}

static void print_json_field(const char *name, const uint8_t *s, size_t n)
{
    if (utf8_valid(s, n)) {
        printf(",\"%s\":\"", name);
        for (size_t i = 0; i < n; i++) {
            uint8_t b = s[i];

            if (b == '"' || b == '\\')
                printf("\\%c", b);
            else if (b < 0x20 || b == 0x7F)
                printf("\\u%04x", b);
            else
                fputc(b, stdout);
        }
        fputc('"', stdout);
    } else {
        size_t len = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = malloc(len);

        if (!b64)
            return;
        sodium_bin2base64(b64, len, s, n, sodium_base64_VARIANT_ORIGINAL);
        printf(",\"%s_b64\":\"%s\"", name, b64);
        free(b64);
    }
}

typedef struct follow_out {
    bool json;
} follow_out;

static int print_record(void *ctx, const tally_client_record *r)
{
    const follow_out *o = ctx;
    char hex[65];

    sodium_bin2hex(hex, sizeof hex, r->link, 32);
    if (o->json) {
        printf("{\"seq\":%" PRIu64 ",\"ts\":%" PRIu64 ",\"type\":%u", r->seq,
               r->ts_ns, (unsigned)r->type);
        if (r->decrypted) {
            print_json_field("key", r->key, r->key_len);
            print_json_field("payload", r->payload, r->payload_len);
        } else {
            fputs(",\"encrypted\":true", stdout);
        }
        printf(",\"link\":\"%s\"}\n", hex);
    } else {
        time_t sec = (time_t)(r->ts_ns / 1000000000u);
        struct tm tm;
        char ts[32];

        gmtime_r(&sec, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        printf("%" PRIu64 " %s.%09" PRIu64 "Z %u ", r->seq, ts,
               r->ts_ns % 1000000000u, (unsigned)r->type);
        if (r->decrypted) {
            print_escaped(r->key, r->key_len, true);
            fputc(' ', stdout);
            print_escaped(r->payload, r->payload_len, false);
        } else {
            fputs("- (encrypted)", stdout);
        }
        fputc('\n', stdout);
    }
    if (fflush(stdout) != 0)
        return -EPIPE;
    return 0;
}

/* follow's row, for the messages of the shared CLI helpers */
static int follow_row(const struct cli_cmd *self, int argc, char **argv)
{
    (void)self;
    return tally_client_cmd_follow(argc, argv);
}

int tally_client_cmd_follow(int argc, char **argv)
{
    enum { OPT_CONNECT = 256, OPT_PUBLISH, OPT_DIR, OPT_FROM, OPT_TYPE, OPT_KEYFILE,
           OPT_UNTIL, OPT_IDLE, OPT_JSON, OPT_HELP };
    static const struct option longopts[] = {
        { "connect", required_argument, NULL, OPT_CONNECT },
        { "publish", required_argument, NULL, OPT_PUBLISH },
        { "dir", required_argument, NULL, OPT_DIR },
        { "from", required_argument, NULL, OPT_FROM },
        { "type", required_argument, NULL, OPT_TYPE },
        { "key-file", required_argument, NULL, OPT_KEYFILE },
        { "key-source", required_argument, NULL, OPT_KEYFILE },
        { "until", required_argument, NULL, OPT_UNTIL },
        { "idle-exit", required_argument, NULL, OPT_IDLE },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
    };
    const char *connect = NULL, *publish = NULL, *dir = NULL;
    /* the row the key loader names in its messages ("tally follow: ...") */
    static const struct cli_cmd self = { "follow", follow_row, NULL, NULL };
    const char *key_file = NULL;
    char url[TALLY_CLIENT_MAX_URL + 1];
    uint64_t from = 0, until = 0, idle = 0;
    tally_client_follow_options fo;
    tally_client_options opt;
    follow_out out = { false };
    struct sigaction sa;
    uint8_t *key = NULL;
    tally_client *c;
    int opt_c, rc;

    memset(&fo, 0, sizeof fo);
    optind = 0;
    while ((opt_c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt_c) {
        case OPT_CONNECT: connect = optarg; break;
        case OPT_PUBLISH: publish = optarg; break;
        case OPT_DIR: dir = optarg; break;
        case OPT_FROM:
            if (parse_u64(optarg, &from) < 0 || from == 0)
                return usage_error("follow", "--from takes a seq >= 1");
            break;
        case OPT_TYPE:
            if (parse_type(optarg, &fo.type) < 0)
                return usage_error("follow", "--type takes 0..65279");
            fo.filter_type = 1;
            break;
        case OPT_KEYFILE: key_file = optarg; break;
        case OPT_UNTIL:
            if (parse_u64(optarg, &until) < 0)
                return usage_error("follow", "bad --until");
            break;
        case OPT_IDLE:
            if (parse_u64(optarg, &idle) < 0 || idle > INT32_MAX)
                return usage_error("follow", "bad --idle-exit");
            break;
        case OPT_JSON: out.json = true; break;
        case 'h':
        case OPT_HELP: fputs(tally_client_follow_usage, stdout); return 0;
        default: return usage_error("follow", "unknown option");
        }
    }
    if (optind != argc)
        return usage_error("follow", "unexpected argument");
    if (resolve_url(connect, dir, url, sizeof url) < 0)
        return usage_error("follow", "give --connect URL (or --dir DIR)");
    if (sodium_init() < 0)
        return 1;
    /* --key-file / --key-source, else $TALLY_KEY_SOURCE, $TALLY_KEY_FILE:
     * the key is optional here (stored publications stay undecrypted) */
    key_file = cli_key_path(key_file);
    if (key_file) {
        rc = cli_key_load(&self, key_file, &key);
        if (rc != EXIT_OK)
            return rc;
    }
    memset(&opt, 0, sizeof opt);
    opt.publish_url = publish;
    opt.master_key = key;
    rc = tally_client_connect(&c, url, &opt);
    cli_key_free(key); /* the handle keeps its own copy */
    if (rc < 0) {
        fprintf(stderr, "tally follow: connecting to %s: %s\n", url,
                tally_strerror(rc));
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fo.from_seq = from;
    /* the files give ciphertext to a follower without the key, the daemon
     * plaintext over ipc:// (and checked frames over tcp://) */
    fo.dir = key_file ? dir : NULL;
    fo.on_record = print_record;
    fo.ctx = &out;
    fo.until_seq = until;
    fo.idle_timeout_ms = (int)idle;
    fo.stop = &g_stop;
    rc = tally_client_follow(c, &fo);
    if (rc < 0) {
        fprintf(stderr, "tally follow: %s\n", tally_client_errmsg(c));
        rc = rc == -EPIPE ? 1 : (rc == -ETIMEDOUT || rc == -EAGAIN)
                                    ? 1 : tally_exit_code(rc);
    } else {
        rc = 0;
    }
    tally_client_close(c);
    return rc;
}
