/*
 * ndmc-recv: the netdeploy multicast receiver for the busybox startup media.
 *
 * Speaks the wire format of netdeploy/multicast/wire.py (docs/multicast.md): receives
 * slices from a session's group straight into a file or block device, answers END rounds
 * with NAK bitmaps, hashes the image in order as it completes and reports the verdict.
 * The join happens before, over HTTP; the agent passes its answer on the command line:
 *
 *   ndmc-recv $(wget -qO- "$base/api/multicast/join?image=$IMG&mac=$MAC&format=args") \
 *             --out /dev/vda [--missing /tmp/missing] [--interface 10.0.0.5]
 *
 * Exit status: 0 copy verified (sha256 matches); 1 usage or I/O error; 2 the copy is
 * NOT good (sha256 mismatch: fetch it again by unicast); 3 finish by unicast (dropped or
 * the session ended without us; byte ranges still missing are in --missing); 4 the
 * session went silent (server restart): join again.
 *
 * Build: gcc -static -O2 -o ndmc-recv ndmc-recv.c   (docs/decisions/0005)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4E44
#define VERSION 1
enum { DATA = 1, HELLO = 2, END = 3, FINISH = 4, DROP = 5, ACK = 6, STATUS = 16, NAK = 17 };
enum { COMPLETE = 1, VERIFIED = 2, BAD = 4 };
#define NAK_WINDOW 8192
/* during the pass: NAK the holes seen since the last status every interval, and every
 * REFRESH_TICKS intervals every hole from the hash's position again (at most REFRESH_WINDOWS
 * datagrams of it), so holes are repaired while the in-order hash is still near them */
#define REFRESH_TICKS 4
#define REFRESH_WINDOWS 4
#define RELEASE_BYTES (8ull << 20) /* hashed bytes handed to write-back at once */
#define FINISH_ABORTED 1
#ifndef IP_MULTICAST_ALL
#define IP_MULTICAST_ALL 49
#endif

/* ---------------------------------------------------------------- SHA-256 (FIPS 180-4) */

typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t fill; } sha256_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t *h, const uint8_t *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

/* The same compression with the x86 SHA extensions (SHA-NI), 5-6x faster: with 16
 * receivers on a busy host the portable version's hashing was what slowed the rack. The
 * message schedule follows FIPS 180-4 §6.2.2 in groups of four words:
 * M[j] = msg2(msg1(M[j-4], M[j-3]) + (W[t-7] words), M[j-1]). */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>

__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_blocks_ni(uint32_t *h,
                                                                          const uint8_t *p,
                                                                          size_t blocks) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* CDAB */
    __m128i st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                                      /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                            /* CDGH */
    for (; blocks--; p += 64) {
        __m128i abef = st0, cdgh = st1, m[4], wk;
        for (int j = 0; j < 4; j++)
            m[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * j)), swap);
        for (int j = 0; j < 16; j++) {
            if (j >= 4)
                m[j % 4] = _mm_sha256msg2_epu32(
                    _mm_add_epi32(_mm_sha256msg1_epu32(m[j % 4], m[(j + 1) % 4]),
                                  _mm_alignr_epi8(m[(j + 3) % 4], m[(j + 2) % 4], 4)),
                    m[(j + 3) % 4]);
            wk = _mm_add_epi32(m[j % 4], _mm_loadu_si128((const __m128i *)&K[4 * j]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, wk);
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(wk, 0x0E));
        }
        st0 = _mm_add_epi32(st0, abef);
        st1 = _mm_add_epi32(st1, cdgh);
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);                                   /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);                                   /* DCHG */
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(tmp, st1, 0xF0)); /* DCBA */
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(st1, tmp, 8));    /* HGFE */
}

static int have_sha_ni(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3)) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 29) & 1; /* CPUID.(EAX=7,ECX=0):EBX.SHA[bit 29] */
}
#else
static void sha256_blocks_ni(uint32_t *h, const uint8_t *p, size_t blocks) { (void)h, (void)p, (void)blocks; }
static int have_sha_ni(void) { return 0; }
#endif

static void sha256_blocks_c(uint32_t *h, const uint8_t *p, size_t blocks) {
    for (; blocks--; p += 64) sha256_block(h, p);
}

static void (*sha256_blocks)(uint32_t *, const uint8_t *, size_t) = sha256_blocks_c;

static void sha256_init(sha256_t *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->fill = 0;
}

static void sha256_update(sha256_t *s, const uint8_t *p, size_t n) {
    s->len += n;
    if (s->fill) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->buf + s->fill, p, take);
        s->fill += take; p += take; n -= take;
        if (s->fill < 64) return;
        sha256_blocks(s->h, s->buf, 1);
        s->fill = 0;
    }
    sha256_blocks(s->h, p, n / 64);
    p += n / 64 * 64;
    n %= 64;
    memcpy(s->buf, p, n);
    s->fill = n;
}

static void sha256_hex(sha256_t *s, char out[65]) {
    uint64_t bits = s->len * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (s->fill < 56 ? 56 : 120) - s->fill;
    int i;
    for (i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", s->h[i]);
}

/* ---------------------------------------------------------------- CRC-32 (IEEE, as zlib) */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc32(const uint8_t *p, size_t n) { /* slicing-by-8 */
    uint32_t c = 0xFFFFFFFFu;
    for (; n >= 8; p += 8, n -= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---------------------------------------------------------------- state */

static struct {
    uint32_t session, rid, slice_size, slices, received, highest, round;
    uint32_t naked_upto, ticks;
    uint64_t size, released;
    const char *sha256, *out, *missing_file, *interface;
    int fd, gsock, fsock, quiet, dropped;
    double idle_timeout;
    uint8_t *have;
    uint32_t hashed;
    sha256_t sha;
    uint8_t *readback;
} S;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "ndmc-recv: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static int has(uint32_t i) { return S.have[i >> 3] & (0x80 >> (i & 7)); }
static uint32_t slice_len(uint32_t i) {
    uint64_t rest = S.size - (uint64_t)i * S.slice_size;
    return rest < S.slice_size ? (uint32_t)rest : S.slice_size;
}

static void header(uint8_t *p, int type) {
    p[0] = MAGIC >> 8; p[1] = MAGIC & 0xFF; p[2] = VERSION; p[3] = (uint8_t)type;
    put32(p + 4, S.session);
}

static void send_status(uint32_t flags) {
    uint8_t p[32];
    if (S.dropped) return;
    header(p, STATUS);
    put32(p + 8, S.rid); put32(p + 12, S.round); put32(p + 16, S.received);
    put32(p + 20, S.highest); put32(p + 24, S.slices - S.received); put32(p + 28, flags);
    (void)send(S.fsock, p, sizeof p, 0); /* best effort: the next report follows */
}

/* NAK the missing slices of [first, end), window by window, at most max_windows datagrams */
static void send_naks(uint32_t first, uint32_t end, uint32_t max_windows) {
    uint8_t p[24 + NAK_WINDOW / 8];
    if (end > S.slices) end = S.slices;
    for (uint32_t base = first - first % 8; base < end && max_windows; base += NAK_WINDOW) {
        uint32_t nbits = end - base < NAK_WINDOW ? end - base : NAK_WINDOW;
        uint32_t nbytes = (nbits + 7) / 8, any = 0;
        for (uint32_t i = 0; i < nbytes; i++) {
            uint8_t m = (uint8_t)~S.have[base / 8 + i];
            if (i == nbytes - 1 && nbits % 8) m &= (uint8_t)(0xFF << (8 - nbits % 8));
            if (i == 0 && base < first) m &= (uint8_t)(0xFF >> (first - base));
            p[24 + i] = m;
            any |= m;
        }
        if (!any) continue;
        header(p, NAK);
        put32(p + 8, S.rid); put32(p + 12, S.round); put32(p + 16, base); put32(p + 20, nbits);
        (void)send(S.fsock, p, 24 + nbytes, 0);
        max_windows--;
    }
}

static uint32_t first_missing(uint32_t i) {
    while (i < S.slices) {
        if (i % 8 == 0 && S.have[i >> 3] == 0xFF) { i += 8; continue; }
        if (!has(i)) return i;
        i++;
    }
    return S.slices;
}

/* every status interval while the first pass runs (round 0): ask for the new holes */
static void pass_naks(void) {
    if (S.round || S.dropped) return;
    if (++S.ticks % REFRESH_TICKS == 0)
        send_naks(first_missing(S.hashed), S.highest, REFRESH_WINDOWS);
    else if (S.naked_upto < S.highest)
        send_naks(S.naked_upto, S.highest, UINT32_MAX);
    if (S.highest > S.naked_upto) S.naked_upto = S.highest;
}

/* hash every slice that is now in order: from the datagram, or read back from the target */
static void advance_hash(uint32_t index, const uint8_t *payload) {
    if (index == S.hashed && payload) {
        sha256_update(&S.sha, payload, slice_len(index));
        S.hashed++;
    }
    while (S.hashed < S.slices && has(S.hashed)) {
        uint32_t n = slice_len(S.hashed);
        if (pread(S.fd, S.readback, n, (off_t)S.hashed * S.slice_size) != (ssize_t)n)
            die("read back from the target");
        sha256_update(&S.sha, S.readback, n);
        S.hashed++;
    }
    /* bytes hashed are never read again: start their write-back and let them leave the page
     * cache, so the final fsync has little left and a node imaging from RAM keeps its memory */
    uint64_t upto = (uint64_t)S.hashed * S.slice_size;
    if (upto > S.size) upto = S.size;
    if (upto - S.released >= RELEASE_BYTES || (upto == S.size && upto > S.released)) {
        (void)posix_fadvise(S.fd, (off_t)S.released, (off_t)(upto - S.released),
                            POSIX_FADV_DONTNEED);
        S.released = upto;
    }
}

static void write_missing(void) {
    FILE *f;
    if (!S.missing_file) return;
    if (!(f = fopen(S.missing_file, "w"))) die(S.missing_file);
    for (uint32_t i = 0; i < S.slices;) {
        if (has(i)) { i++; continue; }
        uint32_t j = i;
        while (j < S.slices && !has(j)) j++;
        uint64_t end = (uint64_t)j * S.slice_size;
        fprintf(f, "%llu %llu\n", (unsigned long long)i * S.slice_size,
                (unsigned long long)(end < S.size ? end : S.size) - 1);
        i = j;
    }
    fclose(f);
}

static void progress(double started, int force) {
    static double last;
    double t = now();
    if (S.quiet || (!force && t - last < 2.0)) return;
    last = t;
    double mib = (double)S.received * S.slice_size / 1048576.0, total = S.size / 1048576.0;
    if (mib > total) mib = total;
    fprintf(stderr, "ndmc-recv: %5.1f%% %.1f/%.1f MiB %.1f MiB/s\n", 100.0 * mib / total, mib,
            total, mib / (t - started + 1e-9));
}

static void usage(void) {
    fputs("usage: ndmc-recv --session N --receiver N --group ADDR --port N --sender IP:PORT\n"
          "       --slice-size N --size N --sha256 HEX --out PATH [--interface IP]\n"
          "       [--missing FILE] [--idle-timeout S] [--quiet]\n", stderr);
    exit(1);
}

static void parse_args(int argc, char **argv, struct sockaddr_in *sender, struct in_addr *group,
                       int *port) {
    char *colon;
    S.idle_timeout = 10;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--quiet")) { S.quiet = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(k, "--session")) S.session = strtoul(v, NULL, 10);
        else if (!strcmp(k, "--receiver")) S.rid = strtoul(v, NULL, 10);
        else if (!strcmp(k, "--group")) { if (!inet_aton(v, group)) usage(); }
        else if (!strcmp(k, "--port")) *port = atoi(v);
        else if (!strcmp(k, "--sender")) {
            if (!(colon = strrchr(v, ':'))) usage();
            *colon = 0;
            sender->sin_family = AF_INET;
            sender->sin_port = htons((uint16_t)atoi(colon + 1));
            if (!inet_aton(v, &sender->sin_addr)) usage();
        } else if (!strcmp(k, "--slice-size")) S.slice_size = strtoul(v, NULL, 10);
        else if (!strcmp(k, "--size")) S.size = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--sha256")) S.sha256 = v;
        else if (!strcmp(k, "--out")) S.out = v;
        else if (!strcmp(k, "--missing")) S.missing_file = v;
        else if (!strcmp(k, "--interface")) S.interface = v;
        else if (!strcmp(k, "--idle-timeout")) S.idle_timeout = atof(v);
        else if (!strcmp(k, "--unicast")) {
            fprintf(stderr, "ndmc-recv: the server says use unicast: %s\n", v);
            exit(3);
        } else usage();
    }
    if (!S.session || !S.rid || !*port || !sender->sin_port || !S.slice_size || !S.size ||
        !S.sha256 || strlen(S.sha256) != 64 || !S.out)
        usage();
}

static void open_sockets(const struct sockaddr_in *sender, struct in_addr group, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = group};
    struct ip_mreqn m = {.imr_multiaddr = group};
    int one = 1, zero = 0, rcvbuf = 8 << 20;
    socklen_t len = sizeof a;

    if ((S.fsock = socket(AF_INET, SOCK_DGRAM, 0)) < 0) die("socket");
    if (connect(S.fsock, (const struct sockaddr *)sender, sizeof *sender)) die("connect to sender");
    if (S.interface) {
        if (!inet_aton(S.interface, &m.imr_address)) usage();
    } else { /* the address on our route to the sender: where its group traffic comes from */
        struct sockaddr_in me;
        if (getsockname(S.fsock, (struct sockaddr *)&me, &len)) die("getsockname");
        m.imr_address = me.sin_addr;
    }
    if ((S.gsock = socket(AF_INET, SOCK_DGRAM, 0)) < 0) die("socket");
    setsockopt(S.gsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(S.gsock, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof zero);
    if (setsockopt(S.gsock, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf))
        setsockopt(S.gsock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (bind(S.gsock, (struct sockaddr *)&a, sizeof a)) die("bind to the group port");
    if (setsockopt(S.gsock, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m)) die("join the group");
}

static void open_target(void) {
    struct stat st;
    if ((S.fd = open(S.out, O_RDWR | O_CREAT, 0644)) < 0) die(S.out);
    if (fstat(S.fd, &st)) die(S.out);
    if (S_ISBLK(st.st_mode)) {
        uint64_t bytes = 0;
        if (ioctl(S.fd, BLKGETSIZE64, &bytes)) die(S.out);
        if (bytes < S.size) {
            fprintf(stderr, "ndmc-recv: %s holds %llu bytes; the image needs %llu\n", S.out,
                    (unsigned long long)bytes, (unsigned long long)S.size);
            exit(1);
        }
    } else if (S_ISREG(st.st_mode) && ftruncate(S.fd, (off_t)S.size)) die(S.out);
}

static int finish(int code, const char *why) {
    if (code != 0 && code != 2) write_missing();
    fsync(S.fd);
    if (!S.quiet || code) fprintf(stderr, "ndmc-recv: %s\n", why);
    return code;
}

int main(int argc, char **argv) {
    struct sockaddr_in sender = {0};
    struct in_addr group = {0};
    int port = 0;
    uint32_t done = 0, done_sent = 0, answered = UINT32_MAX;
    double started = now(), heard = started, next_status = started, answered_at = 0;
    static uint8_t buf[65536];

    parse_args(argc, argv, &sender, &group, &port);
    crc_init();
    if (have_sha_ni() && !getenv("NDMC_NO_SHA_NI")) sha256_blocks = sha256_blocks_ni;
    sha256_init(&S.sha);
    S.slices = (uint32_t)((S.size + S.slice_size - 1) / S.slice_size);
    if (!(S.have = calloc(S.slices / 8 + 1, 1)) || !(S.readback = malloc(S.slice_size)))
        die("memory");
    open_target();
    open_sockets(&sender, group, port);
    send_status(0);

    for (;;) {
        struct pollfd fds[2] = {{S.gsock, POLLIN, 0}, {S.fsock, POLLIN, 0}};
        double t = now();
        if (done && t >= next_status) {
            if (done_sent++ >= 20) break;
            send_status(done);
            next_status = t + 0.1;
        } else if (t >= next_status) {
            send_status(0);
            pass_naks();
            next_status = t + 0.25;
            progress(started, 0);
        }
        if (t - heard > S.idle_timeout) return finish(4, "the session went silent: join again");
        if (poll(fds, 2, 50) <= 0) continue;
        for (int f = 0; f < 2; f++) {
            if (!(fds[f].revents & POLLIN)) continue;
            ssize_t n = recv(fds[f].fd, buf, sizeof buf, 0);
            if (n < 8 || get32(buf) >> 16 != MAGIC || buf[2] != VERSION) continue;
            if (get32(buf + 4) != S.session) continue; /* another session, or forged */
            int type = buf[3];
            heard = now();
            if (type == DATA && n >= 16) {
                uint32_t i = get32(buf + 8);
                if (i >= S.slices || (size_t)(n - 16) != slice_len(i)) continue;
                if (crc32(buf + 16, (size_t)n - 16) != get32(buf + 12)) continue;
                if (i + 1 > S.highest) S.highest = i + 1;
                if (has(i)) continue;
                if (pwrite(S.fd, buf + 16, (size_t)n - 16, (off_t)i * S.slice_size) != n - 16)
                    die("write to the target");
                S.have[i >> 3] |= 0x80 >> (i & 7);
                S.received++;
                /* all here: say so before reading back what was behind the last hole, so
                 * the sender does not wait on us through its END rounds */
                if (S.received == S.slices) send_status(COMPLETE);
                advance_hash(i, buf + 16);
                if (S.received == S.slices && !done) {
                    char hex[65];
                    sha256_hex(&S.sha, hex);
                    done = COMPLETE | (strcmp(hex, S.sha256) ? BAD : VERIFIED);
                    next_status = 0;
                    progress(started, 1);
                }
            } else if (type == END && n == 16 && !done) {
                uint32_t r = get32(buf + 8);
                if (r != answered || heard - answered_at > 0.03) {
                    if (r > S.round) S.round = r;
                    send_status(0);
                    send_naks(0, S.slices, UINT32_MAX);
                    answered = r;
                    answered_at = heard;
                }
            } else if (type == ACK && n == 12 && get32(buf + 8) == S.rid && done) {
                goto verdict;
            } else if (type == DROP && n == 16 && get32(buf + 8) == S.rid && !done) {
                if (S.dropped) continue; /* the sender repeats DROP until we stop asking */
                S.dropped = 1;
                fputs("ndmc-recv: dropped by the sender; listening on, then unicast\n", stderr);
            } else if (type == FINISH && n == 12) {
                if (done) goto verdict;
                if (get32(buf + 8) == FINISH_ABORTED)
                    return finish(4, "the server stopped the session: join again");
                return finish(3, "the session ended before the copy was complete: "
                                 "fetch the --missing ranges by unicast");
            }
        }
    }
verdict:
    if (done & VERIFIED) return finish(0, "sha256 verified");
    return finish(2, "sha256 does NOT match: the copy is not good");
}
