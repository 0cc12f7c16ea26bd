/*
 * iolog.h — the log the LD_PRELOAD shim iolog.so writes (iolog.c) and the
 * power-loss replayer reads (powerloss.c).
 *
 * The shim records, in the order they complete, the operations of a process
 * that change the files (content, size: writes, truncates, fallocate) of
 * one directory (IOLOG_DIR) or make them durable,
 * with the data written, plus what the process writes to its stdout (the
 * acknowledgements of `tally append --ack`). Each event is a fixed header
 * followed by name bytes and data bytes. Integers are in host order: the
 * log is read on the machine that wrote it.
 */
#ifndef TALLY_IOLOG_H
#define TALLY_IOLOG_H

#include <stdint.h>

#define IOLOG_MAGIC 0x474f4c49u /* "ILOG" */

enum iolog_op {
    IOLOG_OPEN = 1,   /* name, ino, aux = open flags (only files of the dir) */
    IOLOG_WRITE,      /* ino, off, len, data: len bytes written at off */
    IOLOG_TRUNC,      /* ino, off = new length */
    IOLOG_FSYNC,      /* ino, aux = index of the first event NOT covered:
                       * everything logged before the call started is
                       * durable once it returns; off = 1 for fdatasync,
                       * 0 for fsync */
    IOLOG_RENAME,     /* name = old NUL new, aux = renameat2 flags */
    IOLOG_UNLINK,     /* name */
    IOLOG_ACK,        /* data written to stdout, logged when the write
                       * STARTS: an acknowledgement counts from the first
                       * moment a reader could have seen it */
    IOLOG_FALLOC,     /* ino, off, aux = length, flags = fallocate mode */
};

struct iolog_ev {
    uint32_t magic;
    uint32_t op;
    uint64_t index;    /* 0, 1, 2, ...: the order of completion */
    uint64_t ino;
    uint64_t off;
    uint64_t len;      /* data bytes that follow the name */
    uint64_t aux;
    uint32_t name_len; /* name bytes that follow this header */
    uint32_t flags;    /* FALLOC: the mode */
};

#endif
