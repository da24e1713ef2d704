/*
 * netdeploy.tftp._native: the data phase of TFTP read transfers, in C, on threads of its own
 * (docs/decisions/0021-tftp-native-data-plane.md).
 *
 * The event loop keeps everything that decides: the listener, the limits, the boot decisions,
 * option negotiation, the records. Once a transfer is decided it hands this plane its connected
 * socket (ownership passes: the plane closes it), where the bytes come from (a buffer the
 * caller keeps alive, or a file descriptor the caller closes after the end is reported) and
 * the negotiated parameters. A worker thread then sends the OACK or the first window, answers
 * ACKs, retransmits on timeout and ends the transfer; it never touches a Python object, so the
 * GIL is not taken per packet. Two things come back through one eventfd the loop watches: the
 * first ACK ("confirmed": the client is real) and the end with its statistics.
 *
 * The protocol rules are the ones of netdeploy/tftp/transfer.py (the pure-Python plane, kept
 * for builds without a compiler and for netascii): absolute block numbers folded to 16 bits
 * on the wire, RFC 7440 windows resent from the first unacknowledged block, duplicate ACKs
 * never answered with data (Sorcerer's Apprentice, RFC 1123 4.2.3.1), a doubled timeout up to
 * `retries` times, and a first-ACK budget after which an unconfirmed transfer is dropped.
 *
 * Timers are lazy, as in the Python plane: an ACK only moves its transfer's deadline; a worker
 * sleeps until the earliest deadline it knew of at its last sweep, and a sweep expires what is
 * due and finds the next earliest. Ended transfers are published after each batch of epoll
 * events, so no event of the batch can point at memory the loop has already freed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define DRAIN 64           /* datagrams one transfer handles per wake-up before the others */
#define MAX_EVENTS 256     /* ready sockets taken per epoll_wait */
#define MAX_BACKOFF 8.0    /* seconds; a doubled timeout never waits longer (or the RFC 2349 one) */
#define GSO_MAX 64         /* the kernel's UDP_MAX_SEGMENTS */
#define MAX_WORKERS 64
#define WORKER_BITS 8      /* an id carries its worker in its low bits */
#define SCRATCH (65464 + 4)

enum { OP_DATA = 3, OP_ACK = 4, OP_ERROR = 5 };

/* How a transfer ended; netdeploy/tftp/native.py turns these into outcomes and messages. */
enum {
    END_OK = 0,
    END_ABORTED = 1,   /* the client sent ERROR (code, message) */
    END_BADOP = 2,     /* the client sent another opcode (code) */
    END_FIRST_ACK = 3, /* no first ACK within the budget */
    END_RETRIES = 4,   /* no ACK after `retries` retransmissions */
    END_SEND = 5,      /* send failed (errno) */
    END_READ = 6,      /* reading the file failed (errno) */
    END_CANCELLED = 7, /* the loop ended it (reclaimed, shutdown) */
};

enum { EV_CONFIRMED = 0, EV_DONE = 1, EV_RUNNING = 2 };

typedef struct xfer {
    struct xfer *prev, *next; /* the owning worker's list */
    uint64_t id;
    int sock;
    int ffd; /* -1: bytes from `data` */
    const unsigned char *data;
    Py_buffer view;
    int has_view;
    int64_t size;
    int blksize, windowsize, gso;
    double timeout, budget, begun, deadline;
    int retries, tries;
    int64_t last_block, acked, sent;
    int64_t retransmits, resent_bytes;
    unsigned char *oack;
    size_t oack_len;
    int confirmed, finished;
    int end, end_code, end_errno;
    char detail[128];
    size_t detail_len;
} xfer;

typedef struct event {
    struct event *next;
    int kind;
    uint64_t id;
    xfer *x; /* EV_DONE: handed to the loop, which frees it */
} event;

typedef struct cmd {
    struct cmd *next;
    int kind; /* 0: a new transfer, 1: cancel, 2: read now (poke) */
    xfer *x;
    uint64_t id;
    size_t pkt_len;
    unsigned char pkt[516];
} cmd;

struct plane;

typedef struct worker {
    struct plane *plane;
    pthread_t thread;
    int started;
    int epfd, wakefd;
    pthread_mutex_t lock; /* guards inbox and stopping */
    cmd *inbox, **inbox_tail;
    int stopping;
    xfer *head;
    int count;
    double next_sweep;
    event *pending, **pending_tail;
    unsigned char scratch[SCRATCH];
} worker;

typedef struct plane {
    PyObject_HEAD
    int nworkers;
    worker *workers;
    int outfd;
    pthread_mutex_t outlock; /* guards out and signalled */
    event *out, **out_tail;
    int signalled;
    uint64_t next_seq;
    unsigned rr;
    int closed;
} plane;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wake(int fd) {
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r; /* a full counter still wakes the reader */
}

static void drain_fd(int fd) {
    uint64_t value;
    ssize_t r = read(fd, &value, sizeof value);
    (void)r;
}

static size_t error_packet(unsigned char *out, int code, const char *msg) {
    size_t len = strlen(msg);
    if (len > 400)
        len = 400;
    out[0] = 0;
    out[1] = OP_ERROR;
    out[2] = (unsigned char)(code >> 8);
    out[3] = (unsigned char)code;
    memcpy(out + 4, msg, len);
    out[4 + len] = 0;
    return len + 5;
}

static int lost(int err) {
    /* a full socket buffer is a lost packet: the retransmission timer recovers */
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ENOBUFS;
}

/* -- ending -------------------------------------------------------------------------------- */

static void emit(worker *w, int kind, xfer *x) {
    event *e = malloc(sizeof *e);
    if (e == NULL)
        abort(); /* out of memory for 32 bytes: nothing sensible is left to do */
    e->next = NULL;
    e->kind = kind;
    e->id = x->id;
    e->x = kind == EV_DONE ? x : NULL;
    *w->pending_tail = e;
    w->pending_tail = &e->next;
}

static void finish(worker *w, xfer *x, int end) {
    if (x->finished)
        return;
    x->finished = 1;
    x->end = end;
    close(x->sock); /* also leaves the epoll */
    x->sock = -1;
    if (x->prev)
        x->prev->next = x->next;
    else
        w->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    w->count--;
    emit(w, EV_DONE, x);
}

static void publish(worker *w) {
    if (w->pending == NULL)
        return;
    plane *p = w->plane;
    int signal_loop;
    pthread_mutex_lock(&p->outlock);
    *p->out_tail = w->pending;
    p->out_tail = w->pending_tail;
    signal_loop = !p->signalled;
    p->signalled = 1;
    pthread_mutex_unlock(&p->outlock);
    w->pending = NULL;
    w->pending_tail = &w->pending;
    if (signal_loop)
        wake(p->outfd);
}

/* -- sending ------------------------------------------------------------------------------- */

static void send_failed(worker *w, xfer *x, int end, int err) {
    x->end_errno = err;
    finish(w, x, end);
}

static void send_raw(worker *w, xfer *x, const unsigned char *pkt, size_t len) {
    if (send(x->sock, pkt, len, 0) < 0 && !lost(errno))
        send_failed(w, x, END_SEND, errno);
}

static size_t block_len(xfer *x, int64_t block) {
    int64_t off = (block - 1) * (int64_t)x->blksize;
    if (off >= x->size)
        return 0;
    int64_t left = x->size - off;
    return (size_t)(left < x->blksize ? left : x->blksize);
}

static void header(unsigned char *h, int64_t block) {
    h[0] = 0;
    h[1] = OP_DATA;
    h[2] = (unsigned char)((block >> 8) & 0xFF);
    h[3] = (unsigned char)(block & 0xFF);
}

/* One DATA packet; 0 when sent or lost, -1 when the transfer ended. */
static int send_block(worker *w, xfer *x, int64_t block) {
    size_t len = block_len(x, block);
    int64_t off = (block - 1) * (int64_t)x->blksize;
    ssize_t r;
    if (x->ffd < 0) { /* copied into the thread's buffer, as a file's block is read into it
                        * (measured level with sendmsg and an iovec into the bytes) */
        unsigned char *buf = w->scratch;
        header(buf, block);
        memcpy(buf + 4, x->data + off, len);
        r = send(x->sock, buf, 4 + len, 0);
    } else {
        unsigned char *buf = w->scratch;
        header(buf, block);
        ssize_t got = 0;
        if (len) {
            got = pread(x->ffd, buf + 4, len, off);
            if (got < 0) {
                send_failed(w, x, END_READ, errno);
                return -1;
            }
        }
        r = send(x->sock, buf, 4 + (size_t)got, 0); /* a file that shrank ends short */
    }
    if (r < 0 && !lost(errno)) {
        send_failed(w, x, END_SEND, errno);
        return -1;
    }
    return 0;
}

/* Up to `gso` blocks of a buffer in one sendmsg: the kernel cuts it at 4 + blksize (UDP GSO,
 * set on the socket by the loop before the hand-off). 1 when the route refused it. */
static int send_segmented(worker *w, xfer *x, int64_t first, int64_t last) {
    struct iovec iov[2 * GSO_MAX];
    unsigned char heads[GSO_MAX][4];
    for (int64_t start = first; start <= last; start += x->gso) {
        int64_t end = start + x->gso - 1;
        if (end > last)
            end = last;
        int n = 0;
        for (int64_t b = start; b <= end; b++, n++) {
            header(heads[n], b);
            iov[2 * n].iov_base = heads[n];
            iov[2 * n].iov_len = 4;
            iov[2 * n + 1].iov_base = (void *)(x->data + (b - 1) * (int64_t)x->blksize);
            iov[2 * n + 1].iov_len = block_len(x, b);
        }
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)(2 * n);
        if (sendmsg(x->sock, &m, 0) < 0 && !lost(errno)) {
            x->gso = 1; /* segmentation refused (MTU below a block): go singly from here */
            for (int64_t b = start; b <= last; b++)
                if (send_block(w, x, b) < 0)
                    return -1;
            return 0;
        }
    }
    return 0;
}

static void arm(worker *w, xfer *x, double now) {
    double wait = x->timeout;
    if (x->tries) {
        double cap = x->timeout > MAX_BACKOFF ? x->timeout : MAX_BACKOFF;
        wait = x->timeout * (double)(1 << x->tries);
        if (wait > cap)
            wait = cap;
    }
    if (!x->confirmed) { /* before the first ACK the whole budget is first_ack_budget */
        double left = x->begun + x->budget - now;
        if (wait > left)
            wait = left;
        if (wait < 0)
            wait = 0;
    }
    x->deadline = now + wait;
    if (x->deadline < w->next_sweep)
        w->next_sweep = x->deadline;
}

/* The window after the last acknowledged block (RFC 7440 4), or the OACK. */
static void send_window(worker *w, xfer *x, double now) {
    if (x->acked < 0) {
        send_raw(w, x, x->oack, x->oack_len);
        if (x->finished)
            return;
        x->retransmits += x->tries > 0;
    } else {
        int64_t first = x->acked + 1;
        int64_t last = x->acked + x->windowsize;
        if (last > x->last_block)
            last = x->last_block;
        int r = 0;
        if (first < last && x->gso > 1 && x->ffd < 0)
            r = send_segmented(w, x, first, last);
        else
            for (int64_t b = first; b <= last && r == 0; b++)
                r = send_block(w, x, b);
        if (r < 0)
            return;
        if (first <= x->sent) { /* blocks sent before: retransmissions */
            int64_t again = last < x->sent ? last : x->sent;
            int64_t upto = again * (int64_t)x->blksize;
            x->retransmits += again - first + 1;
            x->resent_bytes += (upto < x->size ? upto : x->size) - (first - 1) * x->blksize;
        }
        if (last > x->sent)
            x->sent = last;
    }
    arm(w, x, now);
}

/* -- receiving ----------------------------------------------------------------------------- */

static void from_peer(worker *w, xfer *x, const unsigned char *pkt, ssize_t len) {
    if (len >= 4 && pkt[0] == 0 && pkt[1] == OP_ERROR) {
        x->end_code = pkt[2] << 8 | pkt[3];
        size_t n = 0;
        while (4 + (ssize_t)n < len && pkt[4 + n] && n < sizeof x->detail)
            n++;
        memcpy(x->detail, pkt + 4, n);
        x->detail_len = n;
        finish(w, x, END_ABORTED);
    } else if (len >= 2) {
        unsigned char reply[516];
        char msg[64];
        int op = pkt[0] << 8 | pkt[1];
        snprintf(msg, sizeof msg, "unexpected opcode %d", op);
        send(x->sock, reply, error_packet(reply, 4, msg), 0);
        x->end_code = op;
        finish(w, x, END_BADOP);
    } /* shorter than an opcode: noise, ignore */
}

static void readable(worker *w, xfer *x) {
    unsigned char pkt[1024]; /* ACK/ERROR; longer junk is cut short */
    for (int i = 0; i < DRAIN; i++) {
        ssize_t len = recv(x->sock, pkt, sizeof pkt, 0);
        if (len < 0)
            return; /* nothing queued, or ICMP unreachable from an earlier send: the timer decides */
        if (len < 4 || pkt[0] != 0 || pkt[1] != OP_ACK) {
            from_peer(w, x, pkt, len);
            if (x->finished)
                return;
            continue;
        }
        int64_t wire = pkt[2] << 8 | pkt[3];
        /* the newest absolute block this 16-bit number can mean (<= sent) */
        int64_t block = x->sent - ((x->sent - wire) & 0xFFFF);
        if (block <= x->acked)
            continue; /* duplicate or stale: never answered with data; the timer resends */
        x->acked = block;
        x->tries = 0;
        if (!x->confirmed) {
            x->confirmed = 1;
            emit(w, EV_CONFIRMED, x);
        }
        if (block >= x->last_block) {
            finish(w, x, END_OK);
            return;
        }
        /* a full window acknowledged: the next; an ACK inside it: resend from the gap */
        send_window(w, x, now_s());
        if (x->finished)
            return;
    }
}

static void expire(worker *w, xfer *x, double now) {
    if (!x->confirmed && now - x->begun >= x->budget) {
        finish(w, x, END_FIRST_ACK); /* a spoofed or vanished requester: free it quietly */
        return;
    }
    if (x->tries >= x->retries) { /* say why, so a client still listening does not wait */
        unsigned char reply[516];
        send(x->sock, reply, error_packet(reply, 0, "timed out waiting for ACK"), 0);
        finish(w, x, END_RETRIES);
        return;
    }
    x->tries++;
    send_window(w, x, now);
}

static void sweep(worker *w, double now) {
    double next = INFINITY;
    xfer *x = w->head;
    while (x) {
        xfer *after = x->next;
        if (now >= x->deadline)
            expire(w, x, now);
        if (!x->finished && x->deadline < next)
            next = x->deadline;
        x = after;
    }
    w->next_sweep = next;
}

/* -- the worker thread --------------------------------------------------------------------- */

static void begin(worker *w, xfer *x) {
    x->next = w->head;
    if (w->head)
        w->head->prev = x;
    w->head = x;
    w->count++;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = x;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, x->sock, &ev) < 0) {
        send_failed(w, x, END_SEND, errno);
        return;
    }
    send_window(w, x, now_s());
}

static void cancel(worker *w, cmd *c) {
    for (xfer *x = w->head; x; x = x->next)
        if (x->id == c->id) {
            if (c->pkt_len)
                send(x->sock, c->pkt, c->pkt_len, 0);
            finish(w, x, END_CANCELLED);
            return;
        }
    /* already ended: its end is on its way to the loop */
}

/* The loop saw an RRQ from this transfer's client port: a client that reuses its port sends
 * its last ACK and then its next request, and the ACK may still be queued here. Read it now:
 * if the transfer goes on, say so (the RRQ was a retransmission); if it ends, its end says so. */
static void poke(worker *w, cmd *c) {
    for (xfer *x = w->head; x; x = x->next)
        if (x->id == c->id) {
            readable(w, x);
            if (!x->finished)
                emit(w, EV_RUNNING, x);
            return;
        }
}

static int take_inbox(worker *w) {
    pthread_mutex_lock(&w->lock);
    cmd *c = w->inbox;
    int stopping = w->stopping;
    w->inbox = NULL;
    w->inbox_tail = &w->inbox;
    pthread_mutex_unlock(&w->lock);
    while (c) {
        cmd *next = c->next;
        if (c->kind == 0)
            begin(w, c->x);
        else if (c->kind == 1)
            cancel(w, c);
        else
            poke(w, c);
        free(c);
        c = next;
    }
    return stopping;
}

static void *run(void *arg) {
    worker *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the loop's */
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int ms = -1;
        if (w->count) {
            double wait = w->next_sweep - now_s();
            ms = wait <= 0 ? 0 : (wait > 3600 ? 3600000 : (int)(wait * 1000.0) + 1);
        }
        int n = epoll_wait(w->epfd, evs, MAX_EVENTS, ms);
        int stopping = 0;
        for (int i = 0; i < n; i++) {
            xfer *x = evs[i].data.ptr;
            if (x == NULL) {
                drain_fd(w->wakefd);
                stopping |= take_inbox(w);
            } else if (!x->finished) {
                readable(w, x);
            }
        }
        if (w->count) {
            double now = now_s();
            if (now >= w->next_sweep)
                sweep(w, now);
        }
        if (stopping) {
            while (w->head)
                finish(w, w->head, END_CANCELLED);
            publish(w);
            return NULL;
        }
        publish(w);
    }
}

/* -- the Python type ----------------------------------------------------------------------- */

static void free_xfer(xfer *x) {
    if (x->has_view)
        PyBuffer_Release(&x->view);
    free(x->oack);
    free(x);
}

static void stop_workers(plane *p) {
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        if (!w->started)
            continue;
        pthread_mutex_lock(&w->lock);
        w->stopping = 1;
        pthread_mutex_unlock(&w->lock);
        wake(w->wakefd);
    }
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        w->started = 0;
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        for (cmd *c = w->inbox; c;) { /* submitted after the stop: never begun */
            cmd *next = c->next;
            if (c->kind == 0) { /* reported like the others, so the loop closes its file */
                event *e = malloc(sizeof *e);
                if (e == NULL)
                    abort();
                close(c->x->sock);
                c->x->sock = -1;
                c->x->finished = 1;
                c->x->end = END_CANCELLED;
                e->next = NULL;
                e->kind = EV_DONE;
                e->id = c->x->id;
                e->x = c->x;
                *p->out_tail = e;
                p->out_tail = &e->next;
            }
            free(c);
            c = next;
        }
        w->inbox = NULL;
        w->inbox_tail = &w->inbox;
        if (w->epfd >= 0)
            close(w->epfd);
        if (w->wakefd >= 0)
            close(w->wakefd);
        w->epfd = w->wakefd = -1;
    }
    p->closed = 1;
}

static void plane_dealloc(plane *p) {
    if (p->workers) {
        if (!p->closed)
            stop_workers(p);
        for (int i = 0; i < p->nworkers; i++)
            pthread_mutex_destroy(&p->workers[i].lock);
        free(p->workers);
    }
    for (event *e = p->out; e;) {
        event *next = e->next;
        if (e->x)
            free_xfer(e->x);
        free(e);
        e = next;
    }
    if (p->outfd >= 0)
        close(p->outfd);
    pthread_mutex_destroy(&p->outlock);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *plane_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"threads", NULL};
    int threads;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &threads))
        return NULL;
    if (threads < 1 || threads > MAX_WORKERS) {
        PyErr_Format(PyExc_ValueError, "threads must be 1 to %d, not %d", MAX_WORKERS, threads);
        return NULL;
    }
    plane *p = (plane *)type->tp_alloc(type, 0);
    if (p == NULL)
        return NULL;
    pthread_mutex_init(&p->outlock, NULL);
    p->out_tail = &p->out;
    p->outfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->workers = calloc((size_t)threads, sizeof(worker));
    if (p->outfd < 0 || p->workers == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(p);
        return NULL;
    }
    p->nworkers = threads;
    for (int i = 0; i < threads; i++) {
        worker *w = &p->workers[i];
        w->plane = p;
        pthread_mutex_init(&w->lock, NULL);
        w->inbox_tail = &w->inbox;
        w->pending_tail = &w->pending;
        w->next_sweep = INFINITY;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.ptr = NULL;
        int err = 0;
        if (w->epfd < 0 || w->wakefd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev) < 0)
            err = errno;
        else if ((err = pthread_create(&w->thread, NULL, run, w)) == 0)
            w->started = 1;
        if (err) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            Py_DECREF(p);
            return NULL;
        }
    }
    return (PyObject *)p;
}

static void push(worker *w, cmd *c) {
    int signal_worker;
    pthread_mutex_lock(&w->lock);
    signal_worker = w->inbox == NULL;
    *w->inbox_tail = c;
    w->inbox_tail = &c->next;
    pthread_mutex_unlock(&w->lock);
    if (signal_worker)
        wake(w->wakefd);
}

PyDoc_STRVAR(submit_doc,
             "submit(sock, data, file_fd, size, blksize, windowsize, timeout, retries, "
             "first_ack_budget, oack, gso_batch) -> id\n\n"
             "Hand over one decided transfer. `sock` (a connected, non-blocking datagram socket's "
             "descriptor) now belongs to the plane. The bytes come from `data` (a buffer kept "
             "until the end is reported) or, when it is None, from `file_fd` (closed by the "
             "caller after the end). `oack` is None or the OACK to send first.");

static PyObject *plane_submit(plane *p, PyObject *args) {
    int sock, file_fd, blksize, windowsize, retries, gso;
    long long size;
    double timeout, budget;
    PyObject *data, *oack;
    if (!PyArg_ParseTuple(args, "iOiLiididOi", &sock, &data, &file_fd, &size, &blksize,
                          &windowsize, &timeout, &retries, &budget, &oack, &gso))
        return NULL;
    if (p->closed) {
        PyErr_SetString(PyExc_RuntimeError, "the TFTP data plane is closed");
        return NULL;
    }
    if (sock < 0 || size < 0 || blksize < 8 || blksize > 65464 || windowsize < 1 ||
        retries < 0 || timeout <= 0 || gso < 1 || gso > GSO_MAX ||
        (data == Py_None && file_fd < 0)) {
        PyErr_SetString(PyExc_ValueError, "a transfer's parameters are out of range");
        return NULL;
    }
    xfer *x = calloc(1, sizeof *x);
    if (x == NULL)
        return PyErr_NoMemory();
    x->ffd = -1;
    if (data != Py_None) {
        if (PyObject_GetBuffer(data, &x->view, PyBUF_SIMPLE) < 0) {
            free(x);
            return NULL;
        }
        x->has_view = 1;
        if (x->view.len < size) {
            free_xfer(x);
            PyErr_SetString(PyExc_ValueError, "data is shorter than size");
            return NULL;
        }
        x->data = x->view.buf;
    } else {
        x->ffd = file_fd;
    }
    if (oack != Py_None) {
        char *bytes;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(oack, &bytes, &len) < 0 || (x->oack = malloc((size_t)len)) == NULL) {
            free_xfer(x);
            return PyErr_Occurred() ? NULL : PyErr_NoMemory();
        }
        memcpy(x->oack, bytes, (size_t)len);
        x->oack_len = (size_t)len;
    }
    cmd *c = calloc(1, sizeof *c);
    if (c == NULL) {
        free_xfer(x);
        return PyErr_NoMemory();
    }
    unsigned index = p->rr++ % (unsigned)p->nworkers;
    x->id = (++p->next_seq << WORKER_BITS) | index;
    x->sock = sock;
    x->size = size;
    x->blksize = blksize;
    x->windowsize = windowsize;
    x->gso = gso;
    x->timeout = timeout;
    x->retries = retries;
    x->budget = budget;
    x->begun = now_s();
    x->last_block = size / blksize + 1; /* the last block is shorter than blksize, maybe empty */
    x->acked = x->oack ? -1 : 0;        /* -1: waiting for ACK 0 of the OACK (RFC 2347) */
    c->kind = 0;
    c->x = x;
    push(&p->workers[index], c);
    return PyLong_FromUnsignedLongLong(x->id);
}

PyDoc_STRVAR(cancel_doc,
             "cancel(id, packet=None)\n\nEnd a transfer the loop has given up on (reclaimed, "
             "shutdown), sending `packet` (an ERROR) first when given. Its end is still "
             "reported, with kind END_CANCELLED, unless it had already ended.");

/* A command for the worker that owns `id` (its low bits); NULL with an exception set. */
static cmd *command(plane *p, unsigned long long id, int kind, worker **owner) {
    unsigned index = (unsigned)(id & ((1u << WORKER_BITS) - 1));
    if (index >= (unsigned)p->nworkers) {
        PyErr_Format(PyExc_ValueError, "%llu is no transfer of this plane", id);
        return NULL;
    }
    cmd *c = calloc(1, sizeof *c);
    if (c == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    c->kind = kind;
    c->id = id;
    *owner = &p->workers[index];
    return c;
}

static PyObject *plane_cancel(plane *p, PyObject *args) {
    unsigned long long id;
    PyObject *packet = Py_None;
    worker *owner;
    if (!PyArg_ParseTuple(args, "K|O", &id, &packet))
        return NULL;
    if (p->closed)
        Py_RETURN_NONE;
    cmd *c = command(p, id, 1, &owner);
    if (c == NULL)
        return NULL;
    if (packet != Py_None) {
        char *bytes;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(packet, &bytes, &len) < 0) {
            free(c);
            return NULL;
        }
        if ((size_t)len > sizeof c->pkt)
            len = sizeof c->pkt;
        memcpy(c->pkt, bytes, (size_t)len);
        c->pkt_len = (size_t)len;
    }
    push(owner, c);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(poke_doc,
             "poke(id)\n\nRead the transfer's socket now; reported as (id, 2) if it goes on.");

static PyObject *plane_poke(plane *p, PyObject *args) {
    unsigned long long id;
    worker *owner;
    if (!PyArg_ParseTuple(args, "K", &id))
        return NULL;
    if (p->closed)
        Py_RETURN_NONE;
    cmd *c = command(p, id, 2, &owner);
    if (c == NULL)
        return NULL;
    push(owner, c);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(events_doc,
             "events() -> list\n\nWhat happened since the last call, in order: (id, 0) for a "
             "transfer's first ACK; (id, 2) for a poked transfer that goes on; (id, 1, end, "
             "code, detail, blocks_sent, retransmits, resent_bytes, errno) for its end.");

static PyObject *plane_events(plane *p, PyObject *Py_UNUSED(ignored)) {
    drain_fd(p->outfd);
    pthread_mutex_lock(&p->outlock);
    event *e = p->out;
    p->out = NULL;
    p->out_tail = &p->out;
    p->signalled = 0;
    pthread_mutex_unlock(&p->outlock);
    PyObject *list = PyList_New(0);
    while (e) {
        event *next = e->next;
        PyObject *item;
        if (list == NULL)
            item = NULL;
        else if (e->kind != EV_DONE)
            item = Py_BuildValue("(Ki)", (unsigned long long)e->id, e->kind);
        else {
            xfer *x = e->x;
            item = Py_BuildValue("(Kiiiy#LLLi)", (unsigned long long)x->id, EV_DONE, x->end,
                                 x->end_code, x->detail, (Py_ssize_t)x->detail_len,
                                 (long long)x->sent, (long long)x->retransmits,
                                 (long long)x->resent_bytes, x->end_errno);
        }
        if (e->x)
            free_xfer(e->x);
        free(e);
        if (list != NULL && (item == NULL || PyList_Append(list, item) < 0))
            Py_CLEAR(list);
        Py_XDECREF(item);
        e = next;
    }
    return list;
}

static PyObject *plane_fileno(plane *p, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(p->outfd);
}

PyDoc_STRVAR(close_doc,
             "close()\n\nStop the worker threads; every transfer still running ends with "
             "END_CANCELLED (collect them with events()).");

static PyObject *plane_close(plane *p, PyObject *Py_UNUSED(ignored)) {
    if (!p->closed)
        stop_workers(p);
    Py_RETURN_NONE;
}

static PyObject *plane_threads(plane *p, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(p->nworkers);
}

static PyMethodDef plane_methods[] = {
    {"submit", (PyCFunction)plane_submit, METH_VARARGS, submit_doc},
    {"cancel", (PyCFunction)plane_cancel, METH_VARARGS, cancel_doc},
    {"poke", (PyCFunction)plane_poke, METH_VARARGS, poke_doc},
    {"events", (PyCFunction)plane_events, METH_NOARGS, events_doc},
    {"fileno", (PyCFunction)plane_fileno, METH_NOARGS, "The eventfd readable when events wait."},
    {"close", (PyCFunction)plane_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef plane_getset[] = {
    {"threads", (getter)plane_threads, NULL, "Worker threads.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PlaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "netdeploy.tftp._native.Plane",
    .tp_basicsize = sizeof(plane),
    .tp_dealloc = (destructor)plane_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Read transfers' data phase on worker threads of their own.",
    .tp_methods = plane_methods,
    .tp_getset = plane_getset,
    .tp_new = plane_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "netdeploy.tftp._native",
    "The TFTP data plane in C (docs/decisions/0021-tftp-native-data-plane.md).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&PlaneType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PlaneType);
    if (PyModule_AddObject(m, "Plane", (PyObject *)&PlaneType) < 0) {
        Py_DECREF(&PlaneType);
        Py_DECREF(m);
        return NULL;
    }
    static const struct { const char *name; int value; } ints[] = {
        {"END_OK", END_OK},           {"END_ABORTED", END_ABORTED},
        {"END_BADOP", END_BADOP},     {"END_FIRST_ACK", END_FIRST_ACK},
        {"END_RETRIES", END_RETRIES}, {"END_SEND", END_SEND},
        {"END_READ", END_READ},       {"END_CANCELLED", END_CANCELLED},
        {"EV_CONFIRMED", EV_CONFIRMED}, {"EV_DONE", EV_DONE},
        {"EV_RUNNING", EV_RUNNING},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (PyModule_AddIntConstant(m, ints[i].name, ints[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    return m;
}
