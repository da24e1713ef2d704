/*
 * ndcap: the startup media's disk streamer: network capture and sparse deploy (issue 17), and
 * raw+zstd images decompressed onto the disk (docs/images.md "Compressed images").
 *
 *   ndcap pack DEV OFFSET LENGTH [LEVEL]   one segment of DEV to stdout: a zstd frame (with
 *                                          its content checksum) of the sparse format below,
 *                                          holding only the non-zero 64 KiB blocks of
 *                                          [OFFSET, OFFSET+LENGTH); "data=N" on stderr
 *   ndcap unpack DEV                       concatenated segments from stdin onto DEV: data at
 *                                          its offsets, every skipped block written as zeros
 *   ndcap unzstd DEV SIZE                  a raw+zstd image from stdin decompressed onto DEV
 *                                          from byte 0: exactly SIZE bytes (the image's
 *                                          raw_size), else exit 3 ("written=N" on stderr)
 *   ndcap post URL FILE                    POST FILE (binary) to an http:// URL with the header
 *                                          "Authorization: Bearer $ND_TOKEN"; the answer's body
 *                                          on stdout; exit 0 on 2xx, 22 on another status.
 *                                          (busybox wget --post-file sends up to the first NUL)
 *
 * Format (little-endian; netdeploy/images/sparse.py is the server's reader and writer):
 *   header  "NDSPARS1" u64 offset, u64 length, u32 block, u32 flags(0)
 *   record  u64 at, u32 n, n bytes            (ascending, inside the segment, n <= block)
 *   end     u64 0xffffffffffffffff, u32 0
 * Exit status: 0 done, 1 usage, 2 read/write error, 3 malformed input.
 * Static (gcc -static ... -lzstd), so it runs in the busybox initramfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#define BLOCK (64 * 1024)
#define END_AT 0xffffffffffffffffULL

static void die(int code, const char *what) {
    fprintf(stderr, "ndcap: %s: %s\n", what, errno ? strerror(errno) : "malformed");
    exit(code);
}

static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; die(2, "write"); }
        p += w; n -= (size_t)w;
    }
}

/* ---------------------------------------------------------------- pack */

static ZSTD_CCtx *cctx;
static unsigned char zout[1 << 17];

static void emit(const void *data, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in = {data, n, 0};
    for (;;) {
        ZSTD_outBuffer out = {zout, sizeof zout, 0};
        size_t left = ZSTD_compressStream2(cctx, &out, &in, mode);
        if (ZSTD_isError(left)) { errno = 0; fprintf(stderr, "ndcap: zstd: %s\n", ZSTD_getErrorName(left)); exit(2); }
        write_all(1, zout, out.pos);
        if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) break;
    }
}

static int is_zero(const unsigned char *p, size_t n) {
    static const unsigned char zero[BLOCK];
    return memcmp(p, zero, n) == 0;
}

static int pack(const char *dev, uint64_t offset, uint64_t length, int level) {
    int fd = open(dev, O_RDONLY);
    if (fd < 0) die(2, dev);
    cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    unsigned char head[32];
    memcpy(head, "NDSPARS1", 8);
    put64(head + 8, offset); put64(head + 16, length); put32(head + 24, BLOCK); put32(head + 28, 0);
    emit(head, sizeof head, ZSTD_e_continue);
    static unsigned char buf[16 * BLOCK];
    uint64_t pos = offset, end = offset + length, data = 0;
    while (pos < end) {
        size_t want = end - pos < sizeof buf ? (size_t)(end - pos) : sizeof buf;
        ssize_t got = pread(fd, buf, want, (off_t)pos);
        if (got < 0) { if (errno == EINTR) continue; die(2, "read"); }
        if (got == 0) break; /* the device ends here */
        for (size_t b = 0; b < (size_t)got; b += BLOCK) {
            size_t n = (size_t)got - b < BLOCK ? (size_t)got - b : BLOCK;
            if (is_zero(buf + b, n)) continue;
            unsigned char rec[12];
            put64(rec, pos + b); put32(rec + 8, (uint32_t)n);
            emit(rec, sizeof rec, ZSTD_e_continue);
            emit(buf + b, n, ZSTD_e_continue);
            data += n;
        }
        pos += (uint64_t)got;
    }
    unsigned char tail[12];
    put64(tail, END_AT); put32(tail + 8, 0);
    emit(tail, sizeof tail, ZSTD_e_end);
    fprintf(stderr, "data=%llu\n", (unsigned long long)data);
    return 0;
}

/* ---------------------------------------------------------------- unpack */

static int out_fd;
static uint64_t seg_pos, seg_end, written, zeroed;

static void zero_to(uint64_t to) {
    static const unsigned char zero[1 << 20];
    while (seg_pos < to) {
        size_t n = to - seg_pos < sizeof zero ? (size_t)(to - seg_pos) : sizeof zero;
        ssize_t w = pwrite(out_fd, zero, n, (off_t)seg_pos);
        if (w < 0) { if (errno == EINTR) continue; die(2, "write zeros"); }
        seg_pos += (uint64_t)w; zeroed += (uint64_t)w;
    }
}

/* parse what is in buf[0..len); return bytes consumed */
static size_t parse(unsigned char *buf, size_t len, int *in_segment) {
    size_t used = 0;
    for (;;) {
        if (!*in_segment) {
            if (len - used < 32) return used;
            if (memcmp(buf + used, "NDSPARS1", 8) != 0) { errno = 0; die(3, "not a sparse segment"); }
            seg_pos = get64(buf + used + 8);
            seg_end = seg_pos + get64(buf + used + 16);
            *in_segment = 1;
            used += 32;
            continue;
        }
        if (len - used < 12) return used;
        uint64_t at = get64(buf + used);
        uint32_t n = get32(buf + used + 8);
        if (at == END_AT) {
            zero_to(seg_end);
            *in_segment = 0;
            used += 12;
            continue;
        }
        if (at < seg_pos || n == 0 || n > BLOCK || at + n > seg_end) { errno = 0; die(3, "record out of range"); }
        if (len - used < 12 + (size_t)n) return used;
        zero_to(at);
        const unsigned char *p = buf + used + 12;
        size_t left = n;
        while (left) {
            ssize_t w = pwrite(out_fd, p, left, (off_t)seg_pos);
            if (w < 0) { if (errno == EINTR) continue; die(2, "write"); }
            p += w; left -= (size_t)w; seg_pos += (uint64_t)w; written += (uint64_t)w;
        }
        used += 12 + n;
    }
}

/* decompress stdin (zstd frames, one after another) and hand every piece to sink; exit 3 on a
 * malformed or cut stream. Shared by unpack (sparse segments) and unzstd (a raw image). */
typedef size_t (*sink_fn)(unsigned char *buf, size_t len);

static void inflate_stdin(sink_fn sink, unsigned char *buf, size_t cap) {
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    static unsigned char zin[1 << 17];
    size_t have = 0, last = 0;
    for (;;) {
        ssize_t got = read(0, zin, sizeof zin);
        if (got < 0) { if (errno == EINTR) continue; die(2, "read stdin"); }
        if (got == 0) break;
        ZSTD_inBuffer in = {zin, (size_t)got, 0};
        while (in.pos < in.size) {
            ZSTD_outBuffer out = {buf + have, cap - have, 0};
            last = ZSTD_decompressStream(dctx, &out, &in);
            if (ZSTD_isError(last)) { fprintf(stderr, "ndcap: zstd: %s\n", ZSTD_getErrorName(last)); exit(3); }
            have += out.pos;
            size_t used = sink(buf, have);
            memmove(buf, buf + used, have - used);
            have -= used;
        }
    }
    if (have || last != 0) { errno = 0; die(3, "input ended inside a zstd frame or record"); }
    ZSTD_freeDCtx(dctx);
}

static int in_segment;

static size_t sparse_sink(unsigned char *buf, size_t len) { return parse(buf, len, &in_segment); }

static int unpack(const char *dev) {
    out_fd = open(dev, O_WRONLY);
    if (out_fd < 0) die(2, dev);
    static unsigned char buf[4 * BLOCK];
    inflate_stdin(sparse_sink, buf, sizeof buf);
    if (in_segment) { errno = 0; die(3, "input ended inside a segment"); }
    if (fsync(out_fd) < 0 && errno != EINVAL) die(2, "fsync");
    fprintf(stderr, "written=%llu zeroed=%llu\n", (unsigned long long)written, (unsigned long long)zeroed);
    return 0;
}

/* ---------------------------------------------------------------- unzstd */

static uint64_t raw_size;

/* the decompressed image, in order from byte 0; never past raw_size (a stream that grows past
 * what the catalog recorded is not the image, and must not run over the disk's hold record) */
static size_t raw_sink(unsigned char *buf, size_t len) {
    if (written + len > raw_size) {
        errno = 0;
        fprintf(stderr, "written=%llu\n", (unsigned long long)written);
        die(3, "the stream holds more than the image's raw size");
    }
    size_t left = len;
    const unsigned char *p = buf;
    while (left) {
        ssize_t w = pwrite(out_fd, p, left, (off_t)written);
        if (w < 0) { if (errno == EINTR) continue; die(2, "write"); }
        if (w == 0) { errno = ENOSPC; die(2, "write"); } /* the disk ends here */
        p += w; left -= (size_t)w; written += (uint64_t)w;
    }
    return len;
}

static int unzstd(const char *dev, uint64_t size) {
    out_fd = open(dev, O_WRONLY);
    if (out_fd < 0) die(2, dev);
    raw_size = size;
    static unsigned char buf[1 << 20];
    inflate_stdin(raw_sink, buf, sizeof buf);
    if (fsync(out_fd) < 0 && errno != EINVAL) die(2, "fsync");
    fprintf(stderr, "written=%llu\n", (unsigned long long)written);
    if (written != raw_size) { errno = 0; die(3, "the stream ended short of the image's raw size"); }
    return 0;
}

/* ---------------------------------------------------------------- post */

static int post(const char *url, const char *file) {
    if (strncmp(url, "http://", 7) != 0) { errno = 0; die(1, "only http:// URLs"); }
    char host[256], port[16] = "80";
    const char *h = url + 7, *path = strchr(h, '/');
    if (!path) path = "/";
    size_t hl = (size_t)(path - h);
    if (hl == 0 || hl >= sizeof host) { errno = 0; die(1, "bad URL host"); }
    memcpy(host, h, hl); host[hl] = 0;
    char hostport[256];
    snprintf(hostport, sizeof hostport, "%s", host);
    char *colon = strrchr(host, ':');
    if (colon && !strchr(host, ']')) { snprintf(port, sizeof port, "%s", colon + 1); *colon = 0; }
    else if (host[0] == '[') {
        char *end = strchr(host, ']');
        if (end && end[1] == ':') snprintf(port, sizeof port, "%s", end + 2);
        if (end) *end = 0;
        memmove(host, host + 1, strlen(host));
    }
    int in = open(file, O_RDONLY);
    if (in < 0) die(2, file);
    struct stat st;
    if (fstat(in, &st) < 0) die(2, file);
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc) { fprintf(stderr, "ndcap: %s: %s\n", host, gai_strerror(rc)); return 2; }
    int s = socket(ai->ai_family, SOCK_STREAM, 0);
    struct timeval tv = {300, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (s < 0 || connect(s, ai->ai_addr, ai->ai_addrlen) < 0) die(2, "connect");
    freeaddrinfo(ai);
    const char *token = getenv("ND_TOKEN");
    char head[2048];
    int n = snprintf(head, sizeof head,
        "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
        "Content-Type: application/zstd\r\nContent-Length: %lld\r\nConnection: close\r\n\r\n",
        path, hostport, token ? token : "", (long long)st.st_size);
    write_all(s, head, (size_t)n);
    static unsigned char buf[1 << 16];
    for (;;) {
        ssize_t got = read(in, buf, sizeof buf);
        if (got < 0) { if (errno == EINTR) continue; die(2, "read"); }
        if (got == 0) break;
        write_all(s, buf, (size_t)got); /* a cut shows here as EPIPE/ECONNRESET: exit 2 */
    }
    static char answer[1 << 16];
    size_t have = 0;
    for (;;) {
        ssize_t got = read(s, answer + have, sizeof answer - 1 - have);
        if (got < 0) { if (errno == EINTR) continue; die(2, "read answer"); }
        if (got == 0 || (have += (size_t)got) == sizeof answer - 1) break;
    }
    answer[have] = 0;
    int status = 0;
    if (sscanf(answer, "HTTP/%*s %d", &status) != 1) { errno = 0; die(2, "no HTTP answer (connection cut?)"); }
    char *body = strstr(answer, "\r\n\r\n");
    if (body) fputs(body + 4, stdout);
    if (status < 200 || status > 299) { fprintf(stderr, "ndcap: HTTP %d\n", status); return 22; }
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "post") == 0)
        return post(argv[2], argv[3]);
    if (argc >= 5 && strcmp(argv[1], "pack") == 0)
        return pack(argv[2], strtoull(argv[3], 0, 10), strtoull(argv[4], 0, 10), argc > 5 ? atoi(argv[5]) : 3);
    if (argc == 3 && strcmp(argv[1], "unpack") == 0)
        return unpack(argv[2]);
    if (argc == 4 && strcmp(argv[1], "unzstd") == 0)
        return unzstd(argv[2], strtoull(argv[3], 0, 10));
    fprintf(stderr, "usage: ndcap pack DEV OFFSET LENGTH [LEVEL] | unpack DEV | unzstd DEV SIZE | post URL FILE\n");
    return 1;
}
