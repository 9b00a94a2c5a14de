// The NCCL device transport: gradient all-reduces on the GPU the local rank selects.
//
// Start-up: the GPU is chosen (the only visible one, else the local rank's), rank 0 makes the NCCL
// unique id and broadcasts it over the host transport (MPI or TCP), and every rank joins a
// nonblocking communicator (ncclConfig_t.blocking = 0), polled with ncclCommGetAsyncError against
// the timeout, so no NCCL call can block the host past it.
// An all-reduce: an event recorded on the default (legacy) stream, where the backward wrote the
// buffer, is waited for by a side stream created non-blocking (so it does not synchronise
// implicitly with the legacy stream and runs beside the rest of the backward), and ncclAllReduce
// is issued on the side stream. comm_wait_all records an event on the side stream and polls it,
// checking NCCL's asynchronous error, the host transport's peers (a closed TCP socket) and the
// deadline; any of them failing aborts the communicator (ncclCommAbort) and ends the job.
// NOT RUN ON A GPU YET: compile-checked only (see docs/training.md).
#include "train/comm_backend.h"

#include <stdio.h>

#ifdef DOD_HAVE_NCCL
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "autograd/base.h"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "dod needs NCCL >= 2.14 (nonblocking communicators, ncclCommFinalize)"
#endif

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;    // the side stream
    cudaEvent_t *ready;     // one per all-reduce started since the last wait (created once, reused)
    int n_ready, cap_ready;
    cudaEvent_t done;       // recorded on the side stream by wait_all
} NcclState;

static NcclState *state(Comm *c) { return c->dev_state; }

static void cuda_check(Comm *c, cudaError_t e, const char *call) {
    if (e != cudaSuccess) comm_fail(c, "%s failed: %s (%s)", call, cudaGetErrorName(e), cudaGetErrorString(e));
}

// Polls the communicator until its state leaves ncclInProgress. 0 when it reached ncclSuccess;
// else -1 with the reason in why (NCCL's error, or the deadline).
static int settle(Comm *c, ncclComm_t comm, double deadline, char *why, size_t len) {
    int polls = 0;
    for (;;) {
        ncclResult_t st = ncclInProgress;
        ncclResult_t rc = ncclCommGetAsyncError(comm, &st);
        if (rc != ncclSuccess) st = rc;
        if (st == ncclSuccess) return 0;
        if (st != ncclInProgress) {
            snprintf(why, len, "%s (%s)", ncclGetErrorString(st), ncclGetLastError(comm));
            return -1;
        }
        if (dod_now_seconds() > deadline) {
            snprintf(why, len, "still in progress after %.0f s (another rank is stopped, hung or unreachable)", c->timeout_s);
            return -1;
        }
        if (c->host) c->host->check_peers(c);
        comm_pause(&polls);
    }
}

// A call on the nonblocking communicator: ncclInProgress means still being issued; wait for it.
static void nccl_check(Comm *c, ncclResult_t r, const char *call) {
    char why[512];
    if (r == ncclSuccess) return;
    if (r != ncclInProgress) comm_fail(c, "%s failed: %s (%s)", call, ncclGetErrorString(r), ncclGetLastError(state(c)->comm));
    if (settle(c, state(c)->comm, comm_deadline(c), why, sizeof why)) comm_fail(c, "%s: %s", call, why);
}

static void nccl_allreduce_f32_start(Comm *c, float *buf, size_t n) {
    NcclState *s = state(c);
    if (s->n_ready == s->cap_ready) {
        int cap = s->cap_ready ? 2 * s->cap_ready : 16;
        cudaEvent_t *ev = realloc(s->ready, sizeof(cudaEvent_t) * (size_t)cap);
        if (!ev) dod_fatal("comm_nccl", "out of memory for %d events", cap);
        for (int i = s->cap_ready; i < cap; i++) cuda_check(c, cudaEventCreateWithFlags(&ev[i], cudaEventDisableTiming), "cudaEventCreateWithFlags");
        s->ready = ev;
        s->cap_ready = cap;
    }
    cudaEvent_t ev = s->ready[s->n_ready++];
    cuda_check(c, cudaEventRecord(ev, cudaStreamLegacy), "cudaEventRecord (gradient bucket ready)");
    cuda_check(c, cudaStreamWaitEvent(s->stream, ev, 0), "cudaStreamWaitEvent");
    nccl_check(c, ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, s->comm, s->stream), "ncclAllReduce");
}

static void nccl_wait_all(Comm *c) {
    NcclState *s = state(c);
    cuda_check(c, cudaEventRecord(s->done, s->stream), "cudaEventRecord (all-reduces done)");
    double deadline = comm_deadline(c);
    int polls = 0;
    for (;;) {
        cudaError_t q = cudaEventQuery(s->done);
        if (q == cudaSuccess) break;
        if (q != cudaErrorNotReady) cuda_check(c, q, "cudaEventQuery (all-reduces done)");
        ncclResult_t st = ncclSuccess;
        if (ncclCommGetAsyncError(s->comm, &st) != ncclSuccess || (st != ncclSuccess && st != ncclInProgress))
            comm_fail(c, "NCCL reported %s (%s)", ncclGetErrorString(st), ncclGetLastError(s->comm));
        c->host->check_peers(c);
        if (dod_now_seconds() > deadline)
            comm_fail(c, "the NCCL all-reduces did not finish within %.0f s (another rank is stopped, hung or unreachable; "
                         "raise [dist] timeout if it is only slow)", c->timeout_s);
        comm_pause(&polls);
    }
    s->n_ready = 0;
}

static void nccl_abort(Comm *c) {
    NcclState *s = state(c);
    if (s && s->comm) ncclCommAbort(s->comm);   // also frees it; returns without waiting for the peers
}

static void nccl_destroy(Comm *c) {
    NcclState *s = state(c);
    char why[512];
    nccl_check(c, ncclCommFinalize(s->comm), "ncclCommFinalize");
    if (settle(c, s->comm, comm_deadline(c), why, sizeof why)) comm_fail(c, "ncclCommFinalize: %s", why);
    ncclCommDestroy(s->comm);
    for (int i = 0; i < s->cap_ready; i++) cudaEventDestroy(s->ready[i]);
    cudaEventDestroy(s->done);
    cudaStreamDestroy(s->stream);
    free(s->ready);
    free(s);
    c->dev_state = NULL;
    c->dev = NULL;
}

static const CommDeviceOps NCCL_OPS = {"nccl", nccl_allreduce_f32_start, nccl_wait_all, nccl_abort, nccl_destroy};

int comm_nccl_open(Comm *c, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(err, errlen, "backend nccl: no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return -1;
    }
    // One GPU visible (the launcher pinned this process, e.g. srun --gpus-per-task=1): that one.
    int dev = n == 1 ? 0 : c->local_rank;
    if (dev >= n) {
        snprintf(err, errlen, "local rank %d but this node shows %d GPUs (one process per GPU: at most %d processes a node)",
                 c->local_rank, n, n);
        return -1;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(dev)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess) {
        snprintf(err, errlen, "cuda:%d: %s", dev, cudaGetErrorString(e));
        return -1;
    }
    c->cuda_device = dev;
    snprintf(c->device_desc, sizeof c->device_desc, "cuda:%d (%.100s)", dev, prop.name);

    NcclState *s = calloc(1, sizeof *s);
    if (!s) dod_fatal("comm_nccl", "out of memory");
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r = ncclSuccess;
    if (c->rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess) {
        snprintf(err, errlen, "ncclGetUniqueId: %s", ncclGetErrorString(r));
        free(s);
        return -1;
    }
    c->what = "broadcasting the NCCL unique id";
    c->host->broadcast(c, &id, sizeof id);
    c->what = "creating the NCCL communicator";
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    r = ncclCommInitRankConfig(&s->comm, c->world, id, c->rank, &cfg);
    char why[512] = "";
    if (r != ncclSuccess && r != ncclInProgress) snprintf(why, sizeof why, "%s", ncclGetErrorString(r));
    else settle(c, s->comm, comm_deadline(c), why, sizeof why);   // fills why on failure
    c->what = NULL;
    if (why[0]) {
        snprintf(err, errlen, "ncclCommInitRankConfig (rank %d of %d on cuda:%d): %s; NCCL_DEBUG=INFO shows why", c->rank,
                 c->world, dev, why);
        if (s->comm) ncclCommAbort(s->comm);
        free(s);
        return -1;
    }
    if ((e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming)) != cudaSuccess) {
        snprintf(err, errlen, "cuda:%d: creating the all-reduce stream: %s", dev, cudaGetErrorString(e));
        ncclCommAbort(s->comm);
        free(s);
        return -1;
    }
    c->dev = &NCCL_OPS;
    c->dev_state = s;
    return 0;
}

#else
int comm_nccl_open(Comm *c, char *err, size_t errlen) {
    (void)c;
    snprintf(err, errlen, "this build has no NCCL (it comes with the CUDA toolkit: build where nvcc and libnccl are found)");
    return -1;
}
#endif
