// The communicator's front: launcher detection, backend selection, the world-1 transport, the
// failure path and the dispatch to the transports (train/comm_mpi.c, comm_tcp.c, comm_nccl.c).
#include "train/comm_backend.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/base.h"

// ---- launcher detection -----------------------------------------------------------------------
// Reads integer variable name: 1 when set (into *out), 0 when unset or empty, -1 with a message
// when it is not an integer in [lo, hi].
static int env_int(const char *name, long lo, long hi, int *out, char *err, size_t errlen) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        snprintf(err, errlen, "environment: %s=%s is not an integer in [%ld, %ld]", name, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 1;
}

const char *comm_launcher_name(CommLauncherKind k) {
    switch (k) {
    case COMM_LAUNCHER_OPENMPI: return "OpenMPI (mpirun)";
    case COMM_LAUNCHER_TORCHRUN: return "torchrun";
    case COMM_LAUNCHER_SLURM: return "Slurm (srun)";
    default: return "none";
    }
}

const char *comm_backend_name(CommBackend b) {
    static const char *names[] = {"auto", "nccl", "mpi", "tcp", "none"};
    return b >= COMM_AUTO && b <= COMM_NONE ? names[b] : "?";
}

// MASTER_ADDR / MASTER_PORT into l when both are set (=). 0 or -1.
static int read_master(CommLaunch *l, char *err, size_t errlen) {
    const char *addr = getenv("MASTER_ADDR");
    int port = 0, has_port = env_int("MASTER_PORT", 1, 65535, &port, err, errlen);
    if (has_port < 0) return -1;
    if (!addr || !*addr || !has_port) return 0;
    if (strlen(addr) >= sizeof l->master_addr) {
        snprintf(err, errlen, "environment: MASTER_ADDR is longer than %zu characters", sizeof l->master_addr - 1);
        return -1;
    }
    snprintf(l->master_addr, sizeof l->master_addr, "%s", addr);
    l->master_port = port;
    const char *agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
    l->agent_store = agent && !strcmp(agent, "True");
    return 0;
}

int comm_detect_launcher(CommLaunch *l, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    l->world = 1;
    // Each launcher: its rank, world and local-rank variables, in priority order (mpirun inside a
    // Slurm allocation is mpirun; torchrun inside one is torchrun: it sets RANK per worker).
    static const struct {
        CommLauncherKind kind;
        const char *rank, *world, *local;
    } L[] = {{COMM_LAUNCHER_OPENMPI, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
             {COMM_LAUNCHER_TORCHRUN, "RANK", "WORLD_SIZE", "LOCAL_RANK"},
             {COMM_LAUNCHER_SLURM, "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"}};
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        int rank = 0, world = 0, local = 0;
        int hr = env_int(L[i].rank, 0, INT_MAX - 1, &rank, err, errlen);
        int hw = env_int(L[i].world, 1, INT_MAX, &world, err, errlen);
        if (hr < 0 || hw < 0) return -1;
        if (!hr || !hw) continue;
        if (L[i].kind == COMM_LAUNCHER_TORCHRUN && (!getenv("MASTER_ADDR") || !getenv("MASTER_PORT"))) continue;
        if (rank >= world) {
            snprintf(err, errlen, "environment: %s=%d is not below %s=%d", L[i].rank, rank, L[i].world, world);
            return -1;
        }
        if (env_int(L[i].local, 0, INT_MAX - 1, &local, err, errlen) < 0) return -1;
        l->kind = L[i].kind;
        l->rank = rank;
        l->world = world;
        l->local_rank = local;
        return l->kind == COMM_LAUNCHER_OPENMPI ? 0 : read_master(l, err, errlen);
    }
    return 0;
}

// ---- failure ----------------------------------------------------------------------------------
double comm_deadline(const Comm *c) { return dod_now_seconds() + c->timeout_s; }

void comm_pause(int *polls) {
    int k = (*polls)++;
    if (k < 200) {
        sched_yield();
        return;
    }
    long ns = k < 1000 ? 20000 : 1000000;   // 20 us, then 1 ms
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

_Noreturn void comm_fail(Comm *c, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "dod: dist: rank %d of %d (backend %s): %s: %s; ending the job\n", c->rank, c->world,
            comm_backend_name(c->backend), c->what ? c->what : "start-up", msg);
    comm_abort(c, 1);
}

_Noreturn void comm_abort(Comm *c, int code) {
    fflush(stdout);
    fflush(stderr);
    if (c && !c->failing) {
        c->failing = true;   // an abort that fails must not come back here
        if (c->dev) c->dev->abort(c);
        if (c->host) c->host->abort(c);
    }
    _Exit(code);
}

// ---- the world-1 transport ---------------------------------------------------------------------
static void self_allreduce_f64(Comm *c, double *buf, int n, CommOp op) { (void)c, (void)buf, (void)n, (void)op; }
static void self_broadcast(Comm *c, void *buf, size_t bytes) { (void)c, (void)buf, (void)bytes; }
static void self_allreduce_f32_start(Comm *c, float *buf, size_t n) { (void)c, (void)buf, (void)n; }
static void self_nothing(Comm *c) { (void)c; }

static const CommHostOps SELF_OPS = {"self", self_allreduce_f64, self_broadcast, self_allreduce_f32_start,
                                     self_nothing, self_nothing, self_nothing, self_nothing};

void comm_self_open(Comm *c) {
    c->host = &SELF_OPS;
    c->host_state = NULL;
}

// ---- creation -----------------------------------------------------------------------------------
// The backend auto picks for launcher l (=).
static CommBackend resolve_auto(const CommLaunch *l, bool cuda) {
    if (l->world == 1) return COMM_NONE;
    if (cuda) return COMM_NCCL;
    if (l->kind == COMM_LAUNCHER_TORCHRUN || (l->kind == COMM_LAUNCHER_SLURM && l->master_addr[0])) return COMM_TCP;
    return COMM_MPI;
}

// Whether the host transport of a multi-process run is TCP (else MPI): torchrun, or srun with
// MASTER_ADDR; backend tcp always.
static bool host_is_tcp(const Comm *c) {
    if (c->backend == COMM_TCP) return true;
    if (c->backend == COMM_MPI) return false;
    return c->launch.kind == COMM_LAUNCHER_TORCHRUN || (c->launch.kind == COMM_LAUNCHER_SLURM && c->launch.master_addr[0]);
}

Comm *comm_create(const CommOptions *o, char *err, size_t errlen) {
    Comm *c = dod_calloc(sizeof *c, "communicator");
    c->timeout_s = o->timeout_s > 0 ? o->timeout_s : 600;
    c->cuda_device = -1;
    if (comm_detect_launcher(&c->launch, err, errlen)) goto fail;
    c->rank = c->launch.rank;
    c->world = c->launch.world;
    c->local_rank = c->launch.local_rank;
    c->backend = o->backend == COMM_AUTO ? resolve_auto(&c->launch, o->cuda) : o->backend;
    const char *launcher = comm_launcher_name(c->launch.kind);
    if (c->backend == COMM_NONE && c->world > 1) {
        snprintf(err, errlen, "%s started %d processes but [dist] backend = none (each would train alone into the "
                              "same run dir); use backend auto", launcher, c->world);
        goto fail;
    }
    if (c->backend == COMM_NCCL && !o->cuda) {
        snprintf(err, errlen, "[dist] backend = nccl reduces GPU gradients: it needs [model] device = cuda (CPU runs: "
                              "backend mpi, tcp or auto)");
        goto fail;
    }
    if ((c->backend == COMM_MPI || c->backend == COMM_TCP) && o->cuda) {
        snprintf(err, errlen, "[dist] backend = %s reduces host memory, but [model] device = cuda keeps the gradients "
                              "on the GPU: use backend nccl (or auto)", comm_backend_name(c->backend));
        goto fail;
    }
    snprintf(c->device_desc, sizeof c->device_desc, "cpu");
    int rc = 0;
    if (c->world == 1 && c->backend != COMM_MPI) comm_self_open(c);
    else if (host_is_tcp(c)) {
        if (!c->launch.master_addr[0]) {
            snprintf(err, errlen, "the TCP bootstrap (backend %s under %s) needs MASTER_ADDR and MASTER_PORT in the "
                                  "environment (rank 0's host and a free port)", comm_backend_name(c->backend), launcher);
            goto fail;
        }
        c->port = o->port ? o->port : c->launch.master_port + (c->launch.agent_store ? 1 : 0);
        if (c->port > 65535) {
            snprintf(err, errlen, "MASTER_PORT=%d + 1 (torchrun's store holds MASTER_PORT) is not a port; set [dist] port",
                     c->launch.master_port);
            goto fail;
        }
        rc = comm_tcp_open(c, err, errlen);
    } else rc = comm_mpi_open(c, err, errlen);
    if (rc) goto fail;
    if (c->backend == COMM_NCCL && comm_nccl_open(c, err, errlen)) {
        c->host->destroy(c);
        goto fail;
    }
    return c;
fail:
    free(c);
    return NULL;
}

void comm_destroy(Comm *c) {
    if (!c) return;
    c->what = "shutting down";
    if (c->dev) c->dev->destroy(c);
    if (c->host) c->host->destroy(c);
    free(c);
}

int comm_rank(const Comm *c) { return c->rank; }
int comm_world(const Comm *c) { return c->world; }
int comm_local_rank(const Comm *c) { return c->local_rank; }
CommBackend comm_backend(const Comm *c) { return c->backend; }
bool comm_device_buffers(const Comm *c) { return c->dev != NULL; }

void comm_describe(const Comm *c, char *buf, size_t len) {
    char boot[320] = "";
    if (c->backend == COMM_NCCL && c->world > 1)
        snprintf(boot, sizeof boot, ", bootstrap %s", c->host->name);
    if (c->port)
        snprintf(boot + strlen(boot), sizeof boot - strlen(boot), "%s%s:%d", boot[0] ? " " : ", tcp ",
                 c->launch.master_addr, c->port);
    snprintf(buf, len, "rank %d of %d (local rank %d), device %s, backend %s%s, launcher %s, timeout %.0f s", c->rank,
             c->world, c->local_rank, c->device_desc, comm_backend_name(c->backend), boot,
             comm_launcher_name(c->launch.kind), c->timeout_s);
}

// ---- collectives ---------------------------------------------------------------------------------
void comm_allreduce_f64(Comm *c, double *buf, int n, CommOp op, const char *what) {
    c->what = what;
    c->host->allreduce_f64(c, buf, n, op);
    c->what = NULL;
}

void comm_broadcast(Comm *c, void *buf, size_t bytes, const char *what) {
    c->what = what;
    c->host->broadcast(c, buf, bytes);
    c->what = NULL;
}

void comm_barrier(Comm *c, const char *what) {
    double token = 0;
    c->what = what;
    c->host->allreduce_f64(c, &token, 1, COMM_SUM);
    c->what = NULL;
}

void comm_allreduce_f32_start(Comm *c, float *buf, size_t n) {
    c->what = "starting a gradient all-reduce";
    if (c->dev) c->dev->allreduce_f32_start(c, buf, n);
    else c->host->allreduce_f32_start(c, buf, n);
    c->what = NULL;
}

void comm_wait_all(Comm *c, const char *what) {
    c->what = what;
    if (c->dev) c->dev->wait_all(c);
    else c->host->wait_all(c);
    c->what = NULL;
}
