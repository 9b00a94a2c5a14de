// Gradients of one optimizer step made of micro-batches, and of several processes: accumulation,
// buckets, and the all-reduce overlapping the last backward.
//
// Each micro-batch's backward starts from zeroed parameter gradients (a fresh sum); afterwards its
// gradients are copied (the first micro-batch) or added (the others) into one flat f32 buffer,
// acc, laid out in buckets of about bucket_mb MiB. So for one process the step's gradient is
// ((g_0 + g_1) + g_2) + ..., one addition per micro-batch, whatever the tape does inside a
// backward; and for two processes with one micro-batch each it is g_0 + g_1 on both, the same
// floats (addition of two terms commutes): 2 processes x micro-batch B train bit-identically to 1
// process with grad_accum = 2 (docs/training.md, "Several processes").
//
// Across processes the last micro-batch's buckets are all-reduced (summed; the loss is already
// divided by world x grad_accum) while its backward goes on: the tape calls a hook after every
// node (ag_set_backward_hook); a parameter's gradient is complete when it has been an input of as
// many backward nodes as in the previous backward (the graph is the same every micro-batch; the
// counts are learnt, and the bucket layout fixed, from the first backward, in the order the
// gradients completed there); a bucket whose parameters are all complete is copied into acc and
// its all-reduce started, buckets strictly in layout order (the same on every rank: the layout is
// compared over the ranks once). A parameter that receives a gradient after its bucket was sent
// is a fatal error naming it. On NCCL the all-reduces run on a side stream; on MPI they are
// nonblocking collectives; the tcp backend runs them after the backward. After the backward the
// rest is sent, the all-reduces are awaited, and acc is copied into the parameters' gradients.
// A trainable tensor that received no gradient counts as zeros (it then gets a zero gradient).
#pragma once
#include <stddef.h>

#include "autograd/tensor.h"
#include "train/comm.h"

typedef struct GradSync GradSync;

// params: the trainable tensors, all on one device. comm: NULL (or backend none) for one process:
// then only the micro-batch accumulation is done. bucket_mb: the bucket size target in MiB.
GradSync *grad_sync_new(Tensor *const *params, int n, Comm *comm, double bucket_mb);
void grad_sync_free(GradSync *gs);
// Before micro-batch a (0 .. A-1) of a step runs its backward (the parameters' gradients are zero).
void grad_sync_begin(GradSync *gs, int a, int A);
// After that backward: accumulates its gradients into acc and zeroes them (=); after micro-batch
// A-1, all-reduces acc over the ranks and writes it (=) into the parameters' gradients.
void grad_sync_end(GradSync *gs);
// All-reduces acc as it stands (every bucket, in order) and waits: what the last micro-batch does
// when nothing overlaps (dod-bench allreduce times it). A no-op for one process.
void grad_sync_allreduce(GradSync *gs);

typedef struct {
    size_t bytes;          // gradient bytes exchanged per step (0 before the first backward)
    int buckets;
    int early_buckets;     // of the last step: buckets started while its backward was still running
    double wait_s;         // of the last step: host time spent in comm_wait_all after the backward
} GradSyncStats;
GradSyncStats grad_sync_stats(const GradSync *gs);

// Every rank computes a hash of the bytes of params and the ranks compare them; when they differ
// the job ends (comm_abort) with "the model replicas differ <when>". A no-op without comm.
void grad_sync_check_replicas(Comm *comm, Tensor *const *params, int n, const char *when);
