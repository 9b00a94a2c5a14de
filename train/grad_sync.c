// Micro-batch accumulation and the bucketed, overlapped gradient all-reduce (see train/grad_sync.h).
#include "train/grad_sync.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"
#include "autograd/tape.h"
#include "data/keyed_rng.h"

struct GradSync {
    Comm *comm;
    bool reduce;             // all-reduce over the ranks (comm with a backend other than none)
    int n;
    Tensor **params;
    Device device;
    double bucket_bytes;
    // Layout, fixed after the first backward.
    bool have_layout;
    int64_t *offset;         // element offset of param i in acc
    int *bucket_of;          // bucket of param i
    int n_buckets;
    int64_t *bucket_start, *bucket_len;   // elements
    int *bucket_size;        // parameters in each bucket
    float *acc;              // the buckets, on the parameters' device
    // The backward in progress.
    int a, A;
    bool early;              // complete buckets are sent during this backward
    uint64_t seq;            // backward nodes run so far
    int *uses, *expected;    // per param: node inputs seen in this backward / in the previous one
    uint64_t *last_seq;      // per param: the node count at its last use (layout order)
    bool *complete;          // per param: accumulated into acc in this micro-batch
    int *bucket_left;        // per bucket: parameters not complete yet
    int next_bucket;         // the first bucket not sent yet
    // Tensor pointer -> param index (open addressing; the hook looks every node input up).
    Tensor **map_key;
    int *map_val, map_cap;
    GradSyncStats stats;
};

// ---- the pointer map ---------------------------------------------------------------------------------
static size_t slot_of(const GradSync *gs, const Tensor *t) {
    return (size_t)(((uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull) & (size_t)(gs->map_cap - 1);
}

static int lookup(const GradSync *gs, const Tensor *t) {
    for (size_t s = slot_of(gs, t);; s = (s + 1) & (size_t)(gs->map_cap - 1)) {
        if (gs->map_key[s] == t) return gs->map_val[s];
        if (!gs->map_key[s]) return -1;
    }
}

// ---- accumulation ------------------------------------------------------------------------------------
// acc's part of param p (=) its gradient for the first micro-batch, (+=) for the others; a
// parameter without a gradient buffer adds zeros.
static void accumulate(GradSync *gs, int p) {
    Tensor *t = gs->params[p];
    float *dst = gs->acc + gs->offset[p];
    size_t bytes = sizeof(float) * (size_t)t->numel;
    bool cuda = gs->device == DEV_CUDA;
    if (gs->a == 0 && !t->grad) {
        if (cuda) cuda_memset_zero(dst, bytes);
        else memset(dst, 0, bytes);
    } else if (gs->a == 0) {
        device_copy(dst, gs->device, t->grad, gs->device, bytes);
    } else if (t->grad) {
        if (cuda) cuda_axpy(dst, t->grad, 1.0f, t->numel);   // dst + 1 * g: the same float as dst + g
        else
            for (int64_t i = 0; i < t->numel; i++) dst[i] += t->grad[i];
    }
}

// Starts the all-reduce of every complete bucket at the front of the layout order.
static void send_ready_buckets(GradSync *gs) {
    while (gs->next_bucket < gs->n_buckets && gs->bucket_left[gs->next_bucket] == 0) {
        int b = gs->next_bucket++;
        comm_allreduce_f32_start(gs->comm, gs->acc + gs->bucket_start[b], (size_t)gs->bucket_len[b]);
    }
}

// Param p's gradient of this micro-batch is final: into acc, and (last micro-batch, several
// processes) its bucket one parameter nearer to being sent.
static void complete(GradSync *gs, int p) {
    accumulate(gs, p);
    gs->complete[p] = true;
    if (gs->a == gs->A - 1 && gs->reduce) {
        gs->bucket_left[gs->bucket_of[p]]--;
        send_ready_buckets(gs);
    }
}

static void on_backward_node(void *ctx, const AgNode *node) {
    GradSync *gs = ctx;
    gs->seq++;
    for (int i = 0; i < node->n_inputs; i++) {
        int p = node->inputs[i] ? lookup(gs, node->inputs[i]) : -1;
        if (p < 0) continue;
        if (gs->complete[p])
            dod_fatal("grad_sync", "trainable tensor %s received a gradient from backward node %s after its bucket was "
                      "sent (the backward graph changed between micro-batches)", gs->params[p]->name ? gs->params[p]->name : "?",
                      node->op);
        gs->uses[p]++;
        gs->last_seq[p] = gs->seq;
        if (gs->early && gs->uses[p] == gs->expected[p]) complete(gs, p);
    }
}

// ---- layout ------------------------------------------------------------------------------------------
static const GradSync *sort_ctx;   // qsort has no context argument; layouts are built one at a time
static int by_completion(const void *x, const void *y) {
    int i = *(const int *)x, j = *(const int *)y;
    uint64_t a = sort_ctx->last_seq[i], b = sort_ctx->last_seq[j];
    if (!a) a = UINT64_MAX;   // never used: last
    if (!b) b = UINT64_MAX;
    return a != b ? (a < b ? -1 : 1) : (i > j) - (i < j);
}

// Buckets in the order the gradients completed in the first backward; then acc. Every rank must
// have built the same layout (the buckets are summed element by element): compared here.
static void build_layout(GradSync *gs) {
    int *order = dod_malloc(sizeof(int) * (size_t)gs->n, "bucket order");
    for (int i = 0; i < gs->n; i++) order[i] = i;
    sort_ctx = gs;
    qsort(order, (size_t)gs->n, sizeof(int), by_completion);
    sort_ctx = NULL;
    gs->bucket_start = dod_calloc(sizeof(int64_t) * (size_t)gs->n, "buckets");
    gs->bucket_len = dod_calloc(sizeof(int64_t) * (size_t)gs->n, "buckets");
    gs->bucket_size = dod_calloc(sizeof(int) * (size_t)gs->n, "buckets");
    uint64_t h = rng_key(0x6275636b6574ull, (uint64_t)gs->n);   // "bucket"
    int64_t off = 0;
    int b = -1;
    for (int k = 0; k < gs->n; k++) {
        int p = order[k];
        int64_t numel = gs->params[p]->numel;
        if (b < 0 || (gs->bucket_len[b] > 0 && (double)(gs->bucket_len[b] + numel) * sizeof(float) > gs->bucket_bytes)) {
            b++;
            off = (off + 63) / 64 * 64;   // buckets start 256-byte aligned (what NCCL reads fastest)
            gs->bucket_start[b] = off;
        }
        gs->offset[p] = off;
        gs->bucket_of[p] = b;
        gs->bucket_len[b] += numel;
        gs->bucket_size[b]++;
        off += numel;
        h = rng_key(rng_key(rng_key(h, (uint64_t)p), (uint64_t)numel), (uint64_t)b);
    }
    gs->n_buckets = b + 1;
    free(order);
    size_t bytes = sizeof(float) * (size_t)(off ? off : 1);
    gs->acc = device_malloc(gs->device, bytes, "gradient buckets");
    gs->have_layout = true;
    gs->stats.bytes = 0;
    for (int k = 0; k < gs->n_buckets; k++) gs->stats.bytes += sizeof(float) * (size_t)gs->bucket_len[k];
    gs->stats.buckets = gs->n_buckets;
    if (!gs->reduce) return;
    double lo[2] = {(double)(h >> 32), (double)(h & 0xffffffffu)}, hi[2] = {lo[0], lo[1]};
    comm_allreduce_f64(gs->comm, lo, 2, COMM_MIN, "comparing the gradient bucket layouts");
    comm_allreduce_f64(gs->comm, hi, 2, COMM_MAX, "comparing the gradient bucket layouts");
    if (lo[0] != hi[0] || lo[1] != hi[1]) {
        fprintf(stderr, "dod: dist: rank %d: the ranks built different gradient bucket layouts (their first backward "
                        "passes differ: different models or configurations?)\n", comm_rank(gs->comm));
        comm_abort(gs->comm, 1);
    }
}

// ---- the interface -----------------------------------------------------------------------------------
GradSync *grad_sync_new(Tensor *const *params, int n, Comm *comm, double bucket_mb) {
    GradSync *gs = dod_calloc(sizeof *gs, "GradSync");
    gs->comm = comm;
    gs->reduce = comm && comm_backend(comm) != COMM_NONE;
    gs->n = n;
    gs->params = dod_malloc(sizeof(Tensor *) * (size_t)(n ? n : 1), "GradSync params");
    memcpy(gs->params, params, sizeof(Tensor *) * (size_t)n);
    gs->device = n ? params[0]->device : DEV_CPU;
    for (int i = 0; i < n; i++)
        DOD_CHECK(params[i]->device == gs->device, "grad_sync_new", "trainable tensor %s is on another device than %s",
                  params[i]->name ? params[i]->name : "?", params[0]->name ? params[0]->name : "?");
    DOD_CHECK(!gs->reduce || comm_device_buffers(comm) == (gs->device == DEV_CUDA), "grad_sync_new",
              "the %s backend reduces %s memory but the trainable tensors are on the %s", comm_backend_name(comm_backend(comm)),
              comm_device_buffers(comm) ? "device" : "host", gs->device == DEV_CUDA ? "GPU" : "CPU");
    gs->bucket_bytes = bucket_mb * 1048576.0;
    gs->offset = dod_calloc(sizeof(int64_t) * (size_t)(n ? n : 1), "GradSync");
    gs->bucket_of = dod_calloc(sizeof(int) * (size_t)(n ? n : 1), "GradSync");
    gs->uses = dod_calloc(sizeof(int) * (size_t)(n ? n : 1), "GradSync");
    gs->expected = dod_calloc(sizeof(int) * (size_t)(n ? n : 1), "GradSync");
    gs->last_seq = dod_calloc(sizeof(uint64_t) * (size_t)(n ? n : 1), "GradSync");
    gs->complete = dod_calloc(sizeof(bool) * (size_t)(n ? n : 1), "GradSync");
    gs->bucket_left = dod_calloc(sizeof(int) * (size_t)(n ? n : 1), "GradSync");
    gs->map_cap = 16;
    while (gs->map_cap < 2 * n) gs->map_cap *= 2;
    gs->map_key = dod_calloc(sizeof(Tensor *) * (size_t)gs->map_cap, "GradSync map");
    gs->map_val = dod_calloc(sizeof(int) * (size_t)gs->map_cap, "GradSync map");
    for (int i = 0; i < n; i++) {
        size_t s = slot_of(gs, params[i]);
        while (gs->map_key[s]) s = (s + 1) & (size_t)(gs->map_cap - 1);
        gs->map_key[s] = params[i];
        gs->map_val[s] = i;
    }
    return gs;
}

void grad_sync_free(GradSync *gs) {
    if (!gs) return;
    ag_set_backward_hook(NULL, NULL);
    device_free(gs->device, gs->acc);
    free(gs->params), free(gs->offset), free(gs->bucket_of), free(gs->bucket_start), free(gs->bucket_len);
    free(gs->bucket_size), free(gs->uses), free(gs->expected), free(gs->last_seq), free(gs->complete);
    free(gs->bucket_left), free(gs->map_key), free(gs->map_val);
    free(gs);
}

void grad_sync_begin(GradSync *gs, int a, int A) {
    gs->a = a;
    gs->A = A;
    gs->seq = 0;
    memset(gs->uses, 0, sizeof(int) * (size_t)gs->n);
    memset(gs->complete, 0, sizeof(bool) * (size_t)gs->n);
    for (int b = 0; b < gs->n_buckets; b++) gs->bucket_left[b] = gs->bucket_size[b];
    gs->next_bucket = 0;
    gs->early = gs->have_layout && gs->reduce && a == A - 1;
    ag_set_backward_hook(on_backward_node, gs);
}

void grad_sync_end(GradSync *gs) {
    ag_set_backward_hook(NULL, NULL);
    bool first_layout = !gs->have_layout;
    if (first_layout) build_layout(gs);
    memcpy(gs->expected, gs->uses, sizeof(int) * (size_t)gs->n);
    if (first_layout)   // the buckets did not exist during this backward
        for (int b = 0; b < gs->n_buckets; b++) gs->bucket_left[b] = gs->bucket_size[b];
    gs->stats.early_buckets = gs->next_bucket;
    for (int p = 0; p < gs->n; p++)   // what the hook did not complete (or everything, without it)
        if (!gs->complete[p]) complete(gs, p);
    if (gs->a < gs->A - 1) {
        for (int p = 0; p < gs->n; p++) tensor_zero_grad(gs->params[p]);
        return;
    }
    double t0 = dod_now_seconds();
    if (gs->reduce) comm_wait_all(gs->comm, "all-reducing the gradients");
    gs->stats.wait_s = dod_now_seconds() - t0;
    for (int p = 0; p < gs->n; p++) {
        Tensor *t = gs->params[p];
        device_copy(tensor_grad(t), gs->device, gs->acc + gs->offset[p], gs->device, sizeof(float) * (size_t)t->numel);
    }
}

void grad_sync_allreduce(GradSync *gs) {
    if (!gs->reduce || !gs->have_layout) return;
    for (int b = 0; b < gs->n_buckets; b++)
        comm_allreduce_f32_start(gs->comm, gs->acc + gs->bucket_start[b], (size_t)gs->bucket_len[b]);
    comm_wait_all(gs->comm, "all-reducing the gradient buckets");
}

GradSyncStats grad_sync_stats(const GradSync *gs) { return gs->stats; }

void grad_sync_check_replicas(Comm *comm, Tensor *const *params, int n, const char *when) {
    if (!comm || comm_world(comm) == 1) return;
    uint64_t h = rng_key(0x7265706c696361ull, (uint64_t)n);   // "replica"
    for (int i = 0; i < n; i++) {
        const Tensor *t = params[i];
        size_t bytes = (size_t)t->numel * dtype_size(t->dtype);
        uint8_t *host = t->device == DEV_CPU ? t->data : dod_malloc(bytes ? bytes : 1, "replica check copy");
        if (host != t->data) device_copy(host, DEV_CPU, t->data, t->device, bytes);
        size_t k = 0;
        for (; k + 8 <= bytes; k += 8) {
            uint64_t w;
            memcpy(&w, host + k, 8);
            h = rng_key(h, w);
        }
        for (; k < bytes; k++) h = rng_key(h, host[k]);
        if (host != t->data) free(host);
    }
    double lo[2] = {(double)(h >> 32), (double)(h & 0xffffffffu)}, hi[2] = {lo[0], lo[1]};
    comm_allreduce_f64(comm, lo, 2, COMM_MIN, "comparing the model replicas");
    comm_allreduce_f64(comm, hi, 2, COMM_MAX, "comparing the model replicas");
    if (lo[0] != hi[0] || lo[1] != hi[1]) {
        fprintf(stderr, "dod: dist: rank %d: the model replicas differ %s (this rank's parameter hash %016llx): the ranks "
                        "no longer train the same model; stopping\n", comm_rank(comm), when, (unsigned long long)h);
        comm_abort(comm, 1);
    }
}
