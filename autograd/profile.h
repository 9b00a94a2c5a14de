// Per-op time profile, switched on by the environment variable DOD_PROFILE=1 (off: one branch per op),
// and the FLOP counter of the product ops, always on.
//
// Every op announces itself when it starts (ops_device, autograd/cuda/cuda_ops.h) and every backward
// node is timed by the tape (autograd/tape.c). A forward interval runs from an op's start to the next
// profiled event (the next op, a backward node, a report), so host work between two ops is charged to
// the earlier one, and an op that calls another op internally is split between them. On CUDA each
// event synchronises the device first, so intervals measure the kernels (and the profile slows the run
// down; the totals are for finding hot spots, not for benchmarks). Forward ops that ag_checkpoint's
// backward runs again (activation recomputation) are their own rows, pass "rec".
//
// Each interval also charges the growth of the arenas (host + device) over it to its op: for forward
// rows, the activation memory the op holds until the step ends (output, saved state); backward rows
// show what backward adds to the arenas (scratch is given back within the op: usually 0; gradients
// are not arena memory). Recomputation and no-grad unit parking release arena memory, so under them
// the column can go negative for the op that happens to be open.
//
// The table (op, pass, calls, total ms, share, kept MiB, GFLOP, FLOP rate, % of peak) and a FLOP
// summary go to stderr at exit, or when op_profile_report is called; op_profile_reset drops what was
// gathered (benchmarks call it after their warm-up).
//
// ---- FLOPs ----
// The product ops count the floating-point operations of the products they actually compute, with a
// multiply-add counted as 2 (a GEMM of M x K by K x N is 2*M*N*K; a convolution 2*N*Cout*Ho*Wo*Cin*kh*kw,
// the zero padding included, as PyTorch's torch.utils.flop_counter counts it): op_matmul, op_linear,
// op_add_projection_into, op_conv2d and the fused convolutions (op_group_norm_silu_conv2d,
// op_concat_conv2d, op_upsample_nearest2x_conv2d), op_attention (4*B*H*Lq*Lk*D forward: Q K^T and P V).
// Backward counts only the gradient products that run: a frozen weight gets no dW product, an input
// that needs no gradient no dX product. Bias additions, norms, softmax and elementwise ops count none.
// Model FLOPs (forward + backward) are what MFU divides; products that repeat earlier ones count as
// "recomputed" (executed FLOPs, HFU): forward ops run again by activation recomputation, and the score
// product Q K^T that op_attention's backward remakes instead of keeping P (so attention backward counts
// 8*B*H*Lq*Lk*D model FLOPs when q, k and v all need gradients -- dV, dP, dQ, dK -- plus 2*B*H*Lq*Lk*D
// recomputed).
// The counter is always on: an addition into three doubles per product op (a few ns, against ops of
// microseconds and more); ops run on one thread.
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "autograd/tensor.h"

bool op_profile_enabled(void);
// A forward op starts on dev (closes the interval open before it).
void op_profile_forward(const char *op, Device dev);
// Backward of op starts / ends on dev.
void op_profile_backward_begin(const char *op, Device dev);
void op_profile_backward_end(Device dev);
// Brackets ag_checkpoint's re-run of a block in backward (nests): forward FLOPs in between count as
// recomputed, and forward ops are profiled as pass "rec".
void op_profile_recompute_begin(void);
void op_profile_recompute_end(void);
// Writes the table gathered so far to f (closing the open interval); no-op when disabled.
void op_profile_report(FILE *f, const char *title);
void op_profile_reset(void);

// ---- FLOP counter ------------------------------------------------------------------------------
typedef enum { FLOPS_GEMM = 0, FLOPS_CONV, FLOPS_ATTENTION, FLOPS_KINDS } FlopKind;
typedef struct {
    double forward;     // forward products (not re-runs)
    double backward;    // gradient products
    double recomputed;  // products that repeat earlier ones (see above)
} OpFlops;

// op (a static name) of the given kind computed `flops` forward FLOPs (recomputed ones inside
// op_profile_recompute_begin/end). Accumulates (+=) into the totals and the op's profile row.
void op_flops_forward(const char *op, FlopKind kind, double flops);
// op's backward computed `flops` gradient FLOPs and `recomputed` FLOPs that repeat forward products.
void op_flops_backward(const char *op, FlopKind kind, double flops, double recomputed);
// Totals since the process started (never reset: benchmarks difference them around a step), of one
// kind, or of all kinds with FLOPS_KINDS.
OpFlops op_flops_total(FlopKind kind);
// "GEMM (linear, matmul, projection)", "convolution", "attention".
const char *op_flops_kind_name(FlopKind kind);
static inline double op_flops_model(OpFlops f) { return f.forward + f.backward; }
static inline double op_flops_executed(OpFlops f) { return f.forward + f.backward + f.recomputed; }
// The FLOPs of `batch` products of M x K by K x N: 2 * batch * M * N * K (in double: no overflow).
static inline double flops_gemm(int64_t batch, int64_t M, int64_t N, int64_t K) {
    return 2.0 * (double)batch * (double)M * (double)N * (double)K;
}
// a - b, per field.
OpFlops op_flops_sub(OpFlops a, OpFlops b);

// ---- peak rates (for MFU) ------------------------------------------------------------------------
// The dense (no sparsity) bf16 tensor-core peak of a GPU, in TFLOP/s, found by its name as
// cudaGetDeviceProperties reports it (dod_cuda_device_name), from NVIDIA's data sheets:
//     H100 SXM ("H100 80GB HBM3", "H100 SXM5")  989.4
//     H200                                       989.4
//     H100 PCIe                                  756.0
// Other GPUs (GH200, H100 NVL, ...): 0, unknown (no MFU is printed). *label (may be NULL) names the row.
double dod_peak_bf16_tflops(const char *device_name, const char **label);
// The peak MFU is measured against on dev, in TFLOP/s: DOD_PEAK_TFLOPS from the environment when set
// (> 0; any device: a clock-capped part, or a CPU's FMA peak the user has worked out), else the table
// above for a CUDA device; 0 when unknown (the CPU: no peak is assumed). Writes what it is into
// label (e.g. "989.4 TFLOP/s dense bf16, NVIDIA H200").
double op_peak_tflops(Device dev, char *label, size_t len);
// Writes (=) into buf one line on the achieved rate of `f` FLOPs in `seconds` on dev: model and
// (when something was recomputed) executed FLOP/s, in TFLOP/s on CUDA and GFLOP/s on the CPU, with
// MFU / HFU against op_peak_tflops(dev) when it is known.
void op_flops_rate_line(OpFlops f, double seconds, Device dev, char *buf, size_t len);
