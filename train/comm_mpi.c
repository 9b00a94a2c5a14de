// The MPI transport (OpenMPI): host collectives as nonblocking MPI calls polled against the
// timeout, errors returned (MPI_ERRORS_RETURN) and turned into comm_fail, which ends the job
// with MPI_Abort.
#include "train/comm_backend.h"

#include <stdio.h>

#ifdef DOD_HAVE_MPI
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "autograd/base.h"

typedef struct {
    MPI_Comm comm;           // a duplicate of MPI_COMM_WORLD (our collectives stay apart from anyone else's)
    bool we_initialized;     // MPI_Finalize at the end
    MPI_Request *pending;    // started f32 all-reduces
    int n_pending, cap_pending;
} MpiState;

static MpiState *state(Comm *c) { return c->host_state; }

// Fails naming the MPI call when rc is not MPI_SUCCESS.
static void check(Comm *c, int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error %d", rc);
    comm_fail(c, "%s failed: %s", call, text);
}

// Polls the requests until all are complete, failing at the deadline.
static void wait_requests(Comm *c, MPI_Request *req, int n, const char *call) {
    double deadline = comm_deadline(c);
    int polls = 0;
    for (;;) {
        int done = 0;
        check(c, MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE), call);
        if (done) return;
        if (dod_now_seconds() > deadline)
            comm_fail(c, "%s did not complete within %.0f s: another rank is stopped, hung, or waiting elsewhere "
                         "(raise [dist] timeout if it is only slow)", call, c->timeout_s);
        comm_pause(&polls);
    }
}

static MPI_Op mpi_op(CommOp op) { return op == COMM_MIN ? MPI_MIN : op == COMM_MAX ? MPI_MAX : MPI_SUM; }

static void mpi_allreduce_f64(Comm *c, double *buf, int n, CommOp op) {
    MPI_Request req;
    check(c, MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, mpi_op(op), state(c)->comm, &req), "MPI_Iallreduce");
    wait_requests(c, &req, 1, "MPI_Iallreduce (f64)");
}

static void mpi_broadcast(Comm *c, void *buf, size_t bytes) {
    MpiState *s = state(c);
    for (size_t off = 0; off < bytes;) {   // MPI counts are ints
        int n = bytes - off > INT_MAX ? INT_MAX : (int)(bytes - off);
        MPI_Request req;
        check(c, MPI_Ibcast((char *)buf + off, n, MPI_BYTE, 0, s->comm, &req), "MPI_Ibcast");
        wait_requests(c, &req, 1, "MPI_Ibcast");
        off += (size_t)n;
    }
}

static void mpi_allreduce_f32_start(Comm *c, float *buf, size_t n) {
    MpiState *s = state(c);
    for (size_t off = 0; off < n;) {
        int k = n - off > INT_MAX ? INT_MAX : (int)(n - off);
        if (s->n_pending == s->cap_pending) {
            s->cap_pending = s->cap_pending ? 2 * s->cap_pending : 16;
            s->pending = realloc(s->pending, sizeof(MPI_Request) * (size_t)s->cap_pending);
            if (!s->pending) dod_fatal("comm_mpi", "out of memory for %d requests", s->cap_pending);
        }
        check(c, MPI_Iallreduce(MPI_IN_PLACE, buf + off, k, MPI_FLOAT, MPI_SUM, s->comm, &s->pending[s->n_pending++]),
              "MPI_Iallreduce");
        off += (size_t)k;
    }
    // OpenMPI progresses nonblocking collectives inside MPI calls: give the started ones a turn.
    int done = 0;
    check(c, MPI_Testall(s->n_pending, s->pending, &done, MPI_STATUSES_IGNORE), "MPI_Testall");
}

static void mpi_wait_all(Comm *c) {
    MpiState *s = state(c);
    wait_requests(c, s->pending, s->n_pending, "MPI_Iallreduce (f32 gradients)");
    s->n_pending = 0;
}

static void mpi_check_peers(Comm *c) { (void)c; }   // mpirun / srun end the job when a process dies

static void mpi_abort(Comm *c) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void mpi_destroy(Comm *c) {
    MpiState *s = state(c);
    MPI_Comm_free(&s->comm);
    if (s->we_initialized) MPI_Finalize();
    free(s->pending);
    free(s);
    c->host_state = NULL;
}

static const CommHostOps MPI_OPS = {"mpi", mpi_allreduce_f64, mpi_broadcast, mpi_allreduce_f32_start,
                                    mpi_wait_all, mpi_check_peers, mpi_abort, mpi_destroy};

int comm_mpi_open(Comm *c, char *err, size_t errlen) {
    MpiState *s = dod_calloc(sizeof *s, "MPI state");
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        // Only the main thread calls MPI (the loader's threads never do).
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            snprintf(err, errlen, "MPI_Init_thread failed (under srun, OpenMPI needs srun --mpi=pmix; or launch with "
                                  "mpirun)");
            free(s);
            return -1;
        }
        s->we_initialized = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    bool launched = c->launch.kind != COMM_LAUNCHER_NONE;
    if (launched && (size != c->world || rank != c->rank)) {
        snprintf(err, errlen, "%s says rank %d of %d but MPI sees rank %d of %d: %s", comm_launcher_name(c->launch.kind),
                 c->rank, c->world, rank, size,
                 c->launch.kind == COMM_LAUNCHER_SLURM ? "OpenMPI needs srun --mpi=pmix (or set MASTER_ADDR and "
                                                         "MASTER_PORT for the TCP bootstrap)"
                                                       : "MPI needs mpirun (under torchrun use backend tcp, or nccl)");
        if (s->we_initialized) MPI_Finalize();
        free(s);
        return -1;
    }
    c->rank = rank;
    c->world = size;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &s->comm) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Comm_dup failed");
        if (s->we_initialized) MPI_Finalize();
        free(s);
        return -1;
    }
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    c->host = &MPI_OPS;
    c->host_state = s;
    return 0;
}

#else
int comm_mpi_open(Comm *c, char *err, size_t errlen) {
    (void)c;
    snprintf(err, errlen, "this build has no MPI (Debian: apt-get install libopenmpi-dev openmpi-bin, then re-run "
                          "cmake); under torchrun use backend tcp");
    return -1;
}
#endif
