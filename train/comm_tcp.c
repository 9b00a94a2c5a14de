// The TCP transport: a star around rank 0 (torchrun-style bootstrap from MASTER_ADDR:port).
//
// Start-up: rank 0 listens, the others connect (retrying until the timeout) and send a hello
// (magic, version, world, rank), which rank 0 checks (world agrees, rank unique and in range).
// Every message is a frame header (magic, kind, sequence number, payload bytes) and the payload;
// every collective starts with each rank sending rank 0 a header (a broadcast's announces 0 bytes),
// which rank 0 checks against its own, so ranks that disagree on the sequence of collectives fail
// at once, naming both sides.
// All-reduce: every other rank sends its buffer to rank 0, which combines them into its own in rank
// order (buf = ((buf_0 op buf_1) op buf_2) ...), then sends the result back to each. Broadcast:
// rank 0 sends to each. Sockets are nonblocking and every wait is a poll() bounded by the
// collective's deadline; a closed socket (the peer exited or was killed) or the deadline fails the
// job, and the failing rank closes its sockets, which its peers notice at once.
// Byte order: the ranks must share it (frames are native-endian).
#include "train/comm_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "autograd/base.h"

#define TCP_MAGIC 0x444f4443u   // "DODC"
#define TCP_VERSION 1u
#define TCP_CHUNK (1u << 20)    // rank 0 combines incoming buffers a chunk at a time

enum { K_F64 = 1, K_F32 = 2, K_BCAST = 3 };   // frame kinds (f64 kinds carry the CommOp in bits 8..)

typedef struct {
    uint32_t magic, kind;
    uint64_t seq, bytes;
} Frame;

typedef struct {
    float *buf;
    size_t n;
} Pending;

typedef struct {
    int *fd;            // rank 0: fd[r] for r in 1..world-1; others: fd[0] (rank 0); -1 when closed
    uint64_t seq;       // collectives done so far (the next frame's sequence number - 1)
    char *chunk;        // TCP_CHUNK bytes (rank 0)
    Pending *pending;   // started f32 all-reduces, run by wait_all in order
    int n_pending, cap_pending;
} TcpState;

static TcpState *state(Comm *c) { return c->host_state; }

static const char *kind_name(uint32_t kind) {
    switch (kind & 0xff) {
    case K_F64: return "an f64 all-reduce";
    case K_F32: return "an f32 all-reduce";
    case K_BCAST: return "a broadcast";
    default: return "an unknown collective";
    }
}

// ---- socket I/O bounded by a deadline -------------------------------------------------------------
// Waits until fd is ready for events, failing at the deadline naming peer.
static void wait_fd(Comm *c, int fd, short events, int peer, double deadline) {
    for (;;) {
        double left = deadline - dod_now_seconds();
        if (left <= 0)
            comm_fail(c, "rank %d did not answer within %.0f s (it is stopped, hung or unreachable; raise [dist] "
                         "timeout if it is only slow)", peer, c->timeout_s);
        struct pollfd p = {.fd = fd, .events = events};
        int ms = left > 1.0 ? 1000 : (int)(left * 1000) + 1;
        int rc = poll(&p, 1, ms);
        if (rc > 0) return;   // ready, or an error / hang-up the next send/recv reports
        if (rc < 0 && errno != EINTR) comm_fail(c, "poll on rank %d's socket: %s", peer, strerror(errno));
    }
}

static void send_all(Comm *c, int peer, const void *data, size_t bytes, double deadline) {
    int fd = state(c)->fd[peer];
    const char *p = data;
    while (bytes) {
        ssize_t n = send(fd, p, bytes, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            bytes -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_fd(c, fd, POLLOUT, peer, deadline);
        } else if (n < 0 && errno != EINTR) {
            if (errno == EPIPE || errno == ECONNRESET)
                comm_fail(c, "rank %d closed its connection (it exited or was killed)", peer);
            comm_fail(c, "send to rank %d: %s", peer, strerror(errno));
        }
    }
}

static void recv_all(Comm *c, int peer, void *data, size_t bytes, double deadline) {
    int fd = state(c)->fd[peer];
    char *p = data;
    while (bytes) {
        ssize_t n = recv(fd, p, bytes, 0);
        if (n > 0) {
            p += n;
            bytes -= (size_t)n;
        } else if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            comm_fail(c, "rank %d closed its connection (it exited or was killed)", peer);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait_fd(c, fd, POLLIN, peer, deadline);
        } else if (errno != EINTR) {
            comm_fail(c, "recv from rank %d: %s", peer, strerror(errno));
        }
    }
}

static void send_frame(Comm *c, int peer, uint32_t kind, uint64_t bytes, double deadline) {
    Frame f = {TCP_MAGIC, kind, state(c)->seq, bytes};
    send_all(c, peer, &f, sizeof f, deadline);
}

// Receives peer's frame header and checks it is the expected one.
static void recv_frame(Comm *c, int peer, uint32_t kind, uint64_t bytes, double deadline) {
    Frame f;
    recv_all(c, peer, &f, sizeof f, deadline);
    if (f.magic != TCP_MAGIC)
        comm_fail(c, "rank %d sent a frame with magic 0x%08x (not a dod peer, or the stream is corrupt)", peer, f.magic);
    if (f.kind != kind || f.seq != state(c)->seq || f.bytes != bytes)
        comm_fail(c, "rank %d is in %s (collective #%llu, %llu bytes) while rank %d is in %s (#%llu, %llu bytes): the "
                     "ranks disagree on the sequence of collectives", peer, kind_name(f.kind),
                  (unsigned long long)f.seq, (unsigned long long)f.bytes, c->rank, kind_name(kind),
                  (unsigned long long)state(c)->seq, (unsigned long long)bytes);
}

// ---- collectives ------------------------------------------------------------------------------------
// acc[i] = acc[i] op in[i] for n elements of the frame kind's type (=).
static void combine(uint32_t kind, void *acc, const void *in, size_t n) {
    if ((kind & 0xff) == K_F32) {
        float *a = acc;
        const float *b = in;
        for (size_t i = 0; i < n; i++) a[i] += b[i];
        return;
    }
    double *a = acc;
    const double *b = in;
    CommOp op = (CommOp)(kind >> 8);
    for (size_t i = 0; i < n; i++)
        a[i] = op == COMM_SUM ? a[i] + b[i] : op == COMM_MIN ? (b[i] < a[i] ? b[i] : a[i]) : (b[i] > a[i] ? b[i] : a[i]);
}

// buf (n elements of elem bytes) = the combination over the ranks, in rank order (=).
static void allreduce(Comm *c, uint32_t kind, void *buf, size_t n, size_t elem) {
    TcpState *s = state(c);
    double deadline = comm_deadline(c);
    uint64_t bytes = (uint64_t)n * elem;
    s->seq++;
    if (c->rank != 0) {
        send_frame(c, 0, kind, bytes, deadline);
        send_all(c, 0, buf, bytes, deadline);
        recv_frame(c, 0, kind, bytes, deadline);
        recv_all(c, 0, buf, bytes, deadline);
        return;
    }
    for (int r = 1; r < c->world; r++) {
        recv_frame(c, r, kind, bytes, deadline);
        for (uint64_t off = 0; off < bytes; off += TCP_CHUNK) {
            size_t len = bytes - off < TCP_CHUNK ? (size_t)(bytes - off) : TCP_CHUNK;
            recv_all(c, r, s->chunk, len, deadline);
            combine(kind, (char *)buf + off, s->chunk, len / elem);
        }
    }
    for (int r = 1; r < c->world; r++) {
        send_frame(c, r, kind, bytes, deadline);
        send_all(c, r, buf, bytes, deadline);
    }
}

static void tcp_allreduce_f64(Comm *c, double *buf, int n, CommOp op) {
    allreduce(c, K_F64 | ((uint32_t)op << 8), buf, (size_t)n, sizeof(double));
}

static void tcp_broadcast(Comm *c, void *buf, size_t bytes) {
    TcpState *s = state(c);
    double deadline = comm_deadline(c);
    s->seq++;
    if (c->rank != 0) {   // a header first, as in every collective: rank 0 checks that all agree
        send_frame(c, 0, K_BCAST, 0, deadline);
        recv_frame(c, 0, K_BCAST, bytes, deadline);
        recv_all(c, 0, buf, bytes, deadline);
        return;
    }
    for (int r = 1; r < c->world; r++) recv_frame(c, r, K_BCAST, 0, deadline);
    for (int r = 1; r < c->world; r++) {
        send_frame(c, r, K_BCAST, bytes, deadline);
        send_all(c, r, buf, bytes, deadline);
    }
}

// Queued: the star exchange has nothing to overlap with, so wait_all runs them in order.
static void tcp_allreduce_f32_start(Comm *c, float *buf, size_t n) {
    TcpState *s = state(c);
    if (s->n_pending == s->cap_pending) {
        s->cap_pending = s->cap_pending ? 2 * s->cap_pending : 16;
        s->pending = realloc(s->pending, sizeof(Pending) * (size_t)s->cap_pending);
        if (!s->pending) dod_fatal("comm_tcp", "out of memory for %d pending all-reduces", s->cap_pending);
    }
    s->pending[s->n_pending++] = (Pending){buf, n};
}

static void tcp_wait_all(Comm *c) {
    TcpState *s = state(c);
    for (int i = 0; i < s->n_pending; i++) allreduce(c, K_F32, s->pending[i].buf, s->pending[i].n, sizeof(float));
    s->n_pending = 0;
}

static void tcp_check_peers(Comm *c) {
    TcpState *s = state(c);
    for (int r = 0; r < c->world; r++) {
        if (r == c->rank || s->fd[r] < 0) continue;
        struct pollfd p = {.fd = s->fd[r], .events = POLLIN};
        if (poll(&p, 1, 0) <= 0) continue;
        char b;
        ssize_t n = recv(s->fd[r], &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            comm_fail(c, "rank %d closed its connection (it exited or was killed)", r);
    }
}

static void close_all(Comm *c) {
    TcpState *s = state(c);
    for (int r = 0; s && r < c->world; r++)
        if (s->fd[r] >= 0) {
            shutdown(s->fd[r], SHUT_RDWR);
            close(s->fd[r]);
            s->fd[r] = -1;
        }
}

static void tcp_destroy(Comm *c) {
    TcpState *s = state(c);
    close_all(c);
    free(s->fd);
    free(s->chunk);
    free(s->pending);
    free(s);
    c->host_state = NULL;
}

static const CommHostOps TCP_OPS = {"tcp", tcp_allreduce_f64, tcp_broadcast, tcp_allreduce_f32_start,
                                    tcp_wait_all, tcp_check_peers, close_all, tcp_destroy};

// ---- start-up -----------------------------------------------------------------------------------------
typedef struct {
    uint32_t magic, version, world, rank;
} Hello;

static void set_socket_options(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// Reads a hello from a fresh connection without failing the job (a stray connection is refused,
// not fatal). 0, or -1 (closed, error or deadline; *h zeroed).
static int read_hello(int fd, Hello *h, double deadline) {
    memset(h, 0, sizeof *h);
    char *p = (char *)h;
    size_t got = 0;
    while (got < sizeof *h) {
        ssize_t n = recv(fd, p + got, sizeof *h - got, 0);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
        double left = deadline - dod_now_seconds();
        struct pollfd q = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&q, 1, (int)(left * 1000) + 1) < 0) break;
    }
    if (got == sizeof *h) return 0;
    memset(h, 0, sizeof *h);
    return -1;
}

// Rank 0: listens on c->port, accepts world - 1 hellos. 0 or -1 with a message.
static int accept_peers(Comm *c, double deadline, char *err, size_t errlen) {
    TcpState *s = state(c);
    int lfd = socket(AF_INET6, SOCK_STREAM, 0), v6 = lfd >= 0;
    if (!v6) lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) return snprintf(err, errlen, "rank 0: socket: %s", strerror(errno)), -1;
    int one = 1, zero = 0;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (v6) {   // dual stack: IPv4 peers too
        setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)c->port), .sin6_addr = in6addr_any};
        rc = bind(lfd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port), .sin_addr.s_addr = htonl(INADDR_ANY)};
        rc = bind(lfd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc || listen(lfd, c->world)) {
        snprintf(err, errlen, "rank 0: cannot listen on port %d: %s%s", c->port, strerror(errno),
                 errno == EADDRINUSE ? " (another program holds it: choose another MASTER_PORT or set [dist] port)" : "");
        close(lfd);
        return -1;
    }
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    int joined = 0;
    while (joined < c->world - 1) {
        double left = deadline - dod_now_seconds();
        if (left <= 0) {
            char missing[256] = "";
            for (int r = 1; r < c->world && strlen(missing) < sizeof missing - 16; r++)
                if (s->fd[r] < 0) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %d", r);
            snprintf(err, errlen, "rank 0: %d of %d ranks connected to port %d within %.0f s (missing:%s)", joined + 1,
                     c->world, c->port, c->timeout_s, missing);
            close(lfd);
            return -1;
        }
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, left > 1 ? 1000 : (int)(left * 1000) + 1) <= 0) continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) continue;
        set_socket_options(fd);
        Hello h;
        double hello_deadline = dod_now_seconds() + 10;   // a stray connection must not stall the others
        if (read_hello(fd, &h, hello_deadline < deadline ? hello_deadline : deadline) || h.magic != TCP_MAGIC ||
            h.version != TCP_VERSION || h.world != (uint32_t)c->world || h.rank == 0 || h.rank >= (uint32_t)c->world ||
            s->fd[h.rank] >= 0) {
            fprintf(stderr, "dod: dist: rank 0: refused a connection on port %d (magic 0x%08x, version %u, world %u, "
                            "rank %u; this job: world %d, ranks joined so far %d)\n", c->port, h.magic, h.version,
                    h.world, h.rank, c->world, joined + 1);
            close(fd);
            continue;
        }
        s->fd[h.rank] = fd;
        joined++;
    }
    close(lfd);
    Hello ok = {TCP_MAGIC, TCP_VERSION, (uint32_t)c->world, 0};
    for (int r = 1; r < c->world; r++) send_all(c, r, &ok, sizeof ok, deadline);
    return 0;
}

// Rank > 0: connects to rank 0, retrying until the deadline. 0 or -1 with a message.
static int connect_root(Comm *c, double deadline, char *err, size_t errlen) {
    char port[16], last[256] = "no attempt";
    snprintf(port, sizeof port, "%d", c->port);
    while (dod_now_seconds() < deadline) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int g = getaddrinfo(c->launch.master_addr, port, &hints, &res);
        if (g) snprintf(last, sizeof last, "%s", gai_strerror(g));
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
            if (fd < 0) continue;
            set_socket_options(fd);
            int rc = connect(fd, a->ai_addr, a->ai_addrlen);
            if (rc && errno == EINPROGRESS) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                double left = deadline - dod_now_seconds();
                int e = 0;
                socklen_t el = sizeof e;
                if (poll(&p, 1, left > 2 ? 2000 : left > 0 ? (int)(left * 1000) + 1 : 0) == 1 &&
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
                    rc = 0;
                else errno = e ? e : ETIMEDOUT;
            }
            if (rc == 0) {
                freeaddrinfo(res);
                state(c)->fd[0] = fd;
                Hello h = {TCP_MAGIC, TCP_VERSION, (uint32_t)c->world, (uint32_t)c->rank}, ok;
                send_all(c, 0, &h, sizeof h, deadline);
                recv_all(c, 0, &ok, sizeof ok, deadline);
                return 0;
            }
            snprintf(last, sizeof last, "%s", strerror(errno));
            close(fd);
        }
        if (res) freeaddrinfo(res);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    snprintf(err, errlen, "rank %d: cannot reach rank 0 at %s:%d within %.0f s (last error: %s); is rank 0 running, and "
                          "are MASTER_ADDR / MASTER_PORT right?", c->rank, c->launch.master_addr, c->port, c->timeout_s, last);
    return -1;
}

int comm_tcp_open(Comm *c, char *err, size_t errlen) {
    TcpState *s = dod_calloc(sizeof *s, "TCP transport");
    s->fd = dod_malloc(sizeof(int) * (size_t)c->world, "TCP sockets");
    for (int r = 0; r < c->world; r++) s->fd[r] = -1;
    if (c->rank == 0) s->chunk = dod_malloc(TCP_CHUNK, "TCP receive chunk");
    c->host = &TCP_OPS;
    c->host_state = s;
    c->what = "TCP bootstrap";
    double deadline = comm_deadline(c);
    int rc = c->rank == 0 ? accept_peers(c, deadline, err, errlen) : connect_root(c, deadline, err, errlen);
    c->what = NULL;
    if (rc) {
        tcp_destroy(c);
        c->host = NULL;
    }
    return rc;
}
