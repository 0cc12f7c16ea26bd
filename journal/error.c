/*
 * error.c — tally_strerror (a superset of strerror(3)) and the mapping of
 * errors to the CLI's exit statuses.
 */
#include <string.h>

#include "tally.h"

const char *tally_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case TALLY_EINTEGRITY:
        return "integrity check failed (tampered, corrupt or truncated)";
    case TALLY_EKEY:
        return "wrong or unusable key";
    case TALLY_EROLLBACK:
        return "journal is behind its anchor (rollback)";
    case TALLY_EFORK:
        return "journal differs from its anchor (fork)";
    case TALLY_ESTALE:
        return "anchor source is older than the journal (stale)";
    case TALLY_EDELETED:
        return "journal is gone but anchored (deleted)";
    case TALLY_EPOISONED:
        return "an earlier write or sync failed; reopen the journal";
    case TALLY_ETOOBIG:
        return "record payload or key over the limit";
    case TALLY_EFORMAT:
        return "unsupported format version or incompatible flag";
    case TALLY_ECIPHER:
        return "cipher not available on this CPU (AES-256-GCM needs AES-NI; "
               "use xchacha20poly1305)";
    case TALLY_ENOJOURNAL:
        return "no journal in this directory";
    case TALLY_EEXIST:
        return "a journal already exists there";
    case TALLY_ETORN:
        return "the tail of the journal is torn (recovery would cut it)";
    case TALLY_EPRUNED:
        return "record body removed (compacted or its key forgotten)";
    case TALLY_EKEYPERM:
        return "key file is readable or writable by group or others "
               "(chmod 600 it)";
    case TALLY_ECHAIN:
        return "RPC endpoints disagree, or the chain is not the configured one";
    case TALLY_EREVERTED:
        return "the anchor contract refused the call (reverted)";
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        const char *s = strerrordesc_np(-err);
        if (s)
            return s;
    }
    return "unknown error";
}

int tally_exit_code(int err)
{
    switch (err) {
    case 0:
        return 0;
    case TALLY_EINTEGRITY:
    case TALLY_ETORN:
    case TALLY_EFORMAT:
        return 3;
    case TALLY_EROLLBACK:
    case TALLY_EFORK:
    case TALLY_ESTALE:
    case TALLY_EDELETED:
        return 4;
    case TALLY_EKEY:
    case TALLY_ECIPHER:
    case TALLY_EKEYPERM:
        return 5;
    default:
        return 1;
    }
}
