// Data-parallel communication for dod-train: one process per device, every process holding a full
// replica of the model, gradients summed over the processes each step.
//
// Launchers (comm_detect_launcher reads their environment; first match wins):
//   OpenMPI mpirun   OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK
//   torchrun         RANK, WORLD_SIZE, LOCAL_RANK (default 0), MASTER_ADDR, MASTER_PORT
//   Slurm srun       SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID (a job step: the batch
//                    script itself, which has no SLURM_STEP_NUM_TASKS, is one process)
//   none             one process
// Backends ([dist] backend; `auto` picks the first that fits):
//   nccl  GPU gradients (one process per GPU, the device chosen by the local rank) reduced by NCCL
//         on a side stream; host collectives (logged scalars, barriers, the NCCL unique id) go
//         over the bootstrap: MPI under mpirun (and srun without MASTER_ADDR), TCP under torchrun
//         (and srun with MASTER_ADDR); world 1 needs none.
//   mpi   CPU gradients and everything else over OpenMPI (nonblocking collectives, polled).
//   tcp   CPU gradients over a TCP star on MASTER_ADDR (rank 0 sums in rank order and sends the
//         result back): for CPU runs launched by torchrun without MPI, and for tests. Not fast.
//   none  one process; nothing is exchanged.
// The TCP bootstrap: rank 0 listens on MASTER_PORT ([dist] port overrides; MASTER_PORT + 1 when
// TORCHELASTIC_USE_AGENT_STORE=True says torchrun's own store holds MASTER_PORT), the others
// connect, retrying until [dist] timeout.
//
// Failures never hang silently: every collective is started nonblocking and polled against
// [dist] timeout; a peer that died (closed socket, MPI error, NCCL async error) or a collective
// that does not finish in time ends the whole job (MPI_Abort / ncclCommAbort / closing every
// socket, which the peers see at once) with exit status 1, after one line on stderr naming this
// rank, the operation and the cause. So these functions return only on success.
#pragma once
#include <stdbool.h>
#include <stddef.h>

typedef enum { COMM_LAUNCHER_NONE = 0, COMM_LAUNCHER_OPENMPI, COMM_LAUNCHER_TORCHRUN, COMM_LAUNCHER_SLURM } CommLauncherKind;

// The process layout the launcher announced.
typedef struct {
    CommLauncherKind kind;
    int rank, world, local_rank;
    char master_addr[256];   // torchrun, or Slurm with MASTER_ADDR set: the TCP bootstrap's host ("" otherwise)
    int master_port;         // 0 when unset
    bool agent_store;        // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's store listens on master_port
} CommLaunch;

// Fills l (=) from the environment. 0, or -1 naming the variable at fault (not an integer, rank
// outside the world, MASTER_PORT out of range, ...).
int comm_detect_launcher(CommLaunch *l, char *err, size_t errlen);
// "OpenMPI (mpirun)", "torchrun", "Slurm (srun)", "none".
const char *comm_launcher_name(CommLauncherKind k);

// Values of [dist] backend, in the schema's order (train/config.c).
typedef enum { COMM_AUTO = 0, COMM_NCCL, COMM_MPI, COMM_TCP, COMM_NONE } CommBackend;
const char *comm_backend_name(CommBackend b);

typedef struct {
    CommBackend backend;   // as configured (COMM_AUTO resolved by comm_create)
    bool cuda;             // the gradients live on the GPU ([model] device = cuda)
    double timeout_s;      // bound on every collective, the bootstrap included
    int port;              // TCP bootstrap port; 0: from MASTER_PORT (see above)
} CommOptions;

typedef struct Comm Comm;

// Detects the launcher, resolves the backend, joins the other processes (MPI_Init, TCP
// connections, NCCL communicator on the local rank's GPU). NULL with a message on a usage error
// (a backend this build lacks, nccl without cuda, a launcher that says 2 processes with backend
// none, an unreachable rank 0 within the timeout, ...). A backend that resolves to none gives a
// world-1 Comm that exchanges nothing.
Comm *comm_create(const CommOptions *o, char *err, size_t errlen);
// The normal end (MPI_Finalize, sockets closed, NCCL communicator destroyed). NULL is fine.
void comm_destroy(Comm *c);
// Ends the whole job now with exit status code (never returns): the peers are stopped too as far
// as the backend can (MPI_Abort; ncclCommAbort; closed sockets the peers notice).
_Noreturn void comm_abort(Comm *c, int code);

int comm_rank(const Comm *c);
int comm_world(const Comm *c);
int comm_local_rank(const Comm *c);
CommBackend comm_backend(const Comm *c);   // resolved: never COMM_AUTO
// True when gradient buffers given to comm_allreduce_f32_start are device memory (nccl).
bool comm_device_buffers(const Comm *c);
// The start-up line (=): ranks, local rank, device, backend, bootstrap, launcher, timeout.
void comm_describe(const Comm *c, char *buf, size_t len);

// ---- collectives: every rank calls them in the same order; `what` names the call in errors ----
typedef enum { COMM_SUM = 0, COMM_MIN, COMM_MAX } CommOp;
// buf[0..n) = op over the ranks of buf[0..n) (=), host doubles. Sums are formed in rank order by
// the tcp backend; mpi leaves the order to OpenMPI (any order gives the same result for 2 ranks).
void comm_allreduce_f64(Comm *c, double *buf, int n, CommOp op, const char *what);
// bytes of buf on rank 0 copied to every rank's buf (=), host memory.
void comm_broadcast(Comm *c, void *buf, size_t bytes, const char *what);
// Returns once every rank has called it.
void comm_barrier(Comm *c, const char *what);
// Starts buf[0..n) = sum over the ranks of buf[0..n) (f32; device memory when comm_device_buffers).
// On a device, buf's values must be complete on the default (legacy) stream when this is called;
// the reduction runs on a side stream. buf must not be touched until comm_wait_all returns.
// Buffers are reduced in the order they are started, on every rank the same.
void comm_allreduce_f32_start(Comm *c, float *buf, size_t n);
// Waits for every started f32 all-reduce (the results are then visible to host code and to
// later work on the default stream).
void comm_wait_all(Comm *c, const char *what);
