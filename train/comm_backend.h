// Internal to the communicator (train/comm*.c): the Comm struct and the transports behind it.
//
// A Comm has a host transport (self, mpi or tcp) for host-memory collectives and, for nccl, a
// device transport for the gradient buffers; without one, gradients go over the host transport.
#pragma once
#include "train/comm.h"

// Host-memory collectives of one transport. Failures call comm_fail (they never return).
typedef struct {
    const char *name;   // "self", "mpi", "tcp"
    void (*allreduce_f64)(Comm *c, double *buf, int n, CommOp op);
    void (*broadcast)(Comm *c, void *buf, size_t bytes);
    void (*allreduce_f32_start)(Comm *c, float *buf, size_t n);   // sum; host buffers
    void (*wait_all)(Comm *c);
    // Fails (comm_fail) when a peer is known to have gone (tcp: a closed socket); never blocks.
    void (*check_peers)(Comm *c);
    void (*abort)(Comm *c);     // stops the peers as far as it can; returns (comm_abort exits)
    void (*destroy)(Comm *c);   // the normal end
} CommHostOps;

// Device-memory gradient all-reduce (nccl).
typedef struct {
    const char *name;
    void (*allreduce_f32_start)(Comm *c, float *buf, size_t n);
    void (*wait_all)(Comm *c);
    void (*abort)(Comm *c);
    void (*destroy)(Comm *c);
} CommDeviceOps;

struct Comm {
    CommLaunch launch;
    CommBackend backend;     // resolved
    int rank, world, local_rank;
    double timeout_s;
    int port;                // the TCP bootstrap's port, resolved (0: no TCP)
    int cuda_device;         // the GPU this process drives (-1: none)
    const char *what;        // the collective in progress, for error messages
    bool failing;            // comm_fail is running (a failure inside it must not recurse)
    const CommHostOps *host;
    void *host_state;
    const CommDeviceOps *dev;   // NULL: gradients go over host
    void *dev_state;
    char device_desc[160];   // "cpu", "cuda:3 (NVIDIA H100 ...)"
};

// One line "dod: dist: rank R of W (backend B): <what>: <message>; ending the job" on stderr, then
// comm_abort(c, 1).
_Noreturn void comm_fail(Comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Seconds on the monotonic clock by which the collective started now must end.
double comm_deadline(const Comm *c);
// Waiting between polls: yields for the first polls, then sleeps up to 1 ms (*polls counts them).
void comm_pause(int *polls);

// Transports: each sets c->host / c->dev and its state. 0, or -1 with a message.
void comm_self_open(Comm *c);
int comm_mpi_open(Comm *c, char *err, size_t errlen);
int comm_tcp_open(Comm *c, char *err, size_t errlen);
int comm_nccl_open(Comm *c, char *err, size_t errlen);   // after the host transport (the id goes over it)
