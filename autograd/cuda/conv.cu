// op_conv2d on cuDNN: forward, backward data, backward filter and bias. Descriptors and the three
// algorithms are chosen once per (shape, precision) and cached; workspaces come from the device
// arena and are released right after the call (stream order keeps them valid).
// In DOD_PREC_F32 only FMA-math algorithms are taken (no TF32), so results track the CPU closely.
// Half-precision (bf16/f16) weights read as-is (opt-in, cuda_set_conv_half_weights): x (and dy) are
// narrowed to the weight's type, cuDNN runs the "pseudo half" configuration (half tensors, f32 compute)
// into a half y (dx) in the arena, which is widened into the f32 output (added into the f32 gradient).
// Such a weight is frozen: no dw. Off by default because it is slower: on an H200 the SD 2.1-size DOD
// step in mixed precision took 743 ms this way (algorithms timed) and 3856 ms with the heuristic's
// choices, against 305 ms with the half weights widened to f32 and TF32 convolutions (docs/cuda.md).
//
// Algorithm choice: cuDNN's heuristic (cudnnGet*_v7) for f32 plans: deterministic, so a resumed run
// picks the same algorithms and reproduces bitwise. Half plans are timed once per shape (cudnnFind*,
// like PyTorch's cudnn.benchmark; cuDNN allocates its trial buffers itself, on the first step only).
// DOD_CUDNN_FIND=0 / 1 forces the heuristic / timing for every plan (1: the f32 step 842 -> 596 ms on
// the H200, but the choice may differ between processes, so a resumed run is no longer bitwise).
#include "autograd/cuda/device.h"

#ifdef DOD_HAVE_CUDNN

#define CONV_CACHE_MAX 512
#define CONV_WORKSPACE_LIMIT ((size_t)2 << 30)

typedef struct {
    int64_t geom[9];  // N, Cin, H, W, Cout, kh, kw, stride, pad
    int precision;
    DType dtype;  // of x, w, y as cuDNN sees them: DT_F32, or the half weight's type
    cudnnTensorDescriptor_t x_desc, y_desc, b_desc, y32_desc;  // y32_desc: the f32 output (bias)
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t fwd_desc, bwd_data_desc, bwd_filter_desc;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
} ConvPlan;

static ConvPlan conv_cache[CONV_CACHE_MAX];
static int n_conv_plans;

// Picks the first heuristic result that succeeded, fits the workspace limit and (in f32 mode) uses
// plain FMA math; sets that math type on the descriptor. Returns the index into perf or -1.
#define PICK_ALGO(perf, count, desc, out_algo, out_ws, what)                                           \
    do {                                                                                               \
        int pick_ = -1;                                                                                \
        for (int i_ = 0; i_ < (count) && pick_ < 0; i_++)                                              \
            if ((perf)[i_].status == CUDNN_STATUS_SUCCESS && (perf)[i_].memory <= CONV_WORKSPACE_LIMIT && \
                (dod_cuda_precision() != DOD_PREC_F32 || (perf)[i_].mathType == CUDNN_FMA_MATH))         \
                pick_ = i_;                                                                            \
        for (int i_ = 0; i_ < (count) && pick_ < 0; i_++)                                              \
            if ((perf)[i_].status == CUDNN_STATUS_SUCCESS && (perf)[i_].memory <= CONV_WORKSPACE_LIMIT)  \
                pick_ = i_;                                                                            \
        if (pick_ < 0) dod_fatal("op_conv2d", "cuDNN offers no %s algorithm for this shape", what);    \
        out_algo = (perf)[pick_].algo;                                                                 \
        out_ws = (perf)[pick_].memory;                                                                 \
        CUDNN_CHECK(cudnnSetConvolutionMathType(desc, (perf)[pick_].mathType));                        \
    } while (0)

// cuDNN's timed (cudnnFind*) or heuristic (cudnnGet*_v7) algorithm list: the two take the same
// arguments and fill the same perf array.
#define ALGO_LIST(timed, find, get, ...) CUDNN_CHECK((timed) ? find(__VA_ARGS__) : get(__VA_ARGS__))

// -1: not read yet; 0: heuristic everywhere; 1: timing everywhere; 2: timing for half plans only.
static int find_mode = -1;
static bool conv_plan_times_algorithms(DType dtype) {
    if (find_mode < 0) {
        const char *v = getenv("DOD_CUDNN_FIND");
        find_mode = !v || !v[0] ? 2 : strcmp(v, "0") ? 1 : 0;
    }
    return find_mode == 1 || (find_mode == 2 && dtype != DT_F32);
}

static cudnnDataType_t cudnn_type(DType t) {
    switch (t) {
    case DT_F32: return CUDNN_DATA_FLOAT;
    case DT_BF16: return CUDNN_DATA_BFLOAT16;
    case DT_F16: return CUDNN_DATA_HALF;
    default: dod_fatal("op_conv2d", "dtype %s cannot be a cuDNN convolution operand", dtype_name(t));
    }
}

// Compute type f32 for every data type (for half data: cuDNN's "pseudo" half configurations).
static cudnnConvolutionDescriptor_t conv_desc(int pad, int stride) {
    cudnnConvolutionDescriptor_t d;
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, pad, pad, stride, stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                                CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(d, dod_cuda_precision() == DOD_PREC_F32 ? CUDNN_FMA_MATH
                                                                                    : CUDNN_DEFAULT_MATH));
    return d;
}

static ConvPlan *conv_plan(const int64_t *g, DType dtype) {
    int prec = (int)dod_cuda_precision();
    for (int i = 0; i < n_conv_plans; i++)
        if (conv_cache[i].precision == prec && conv_cache[i].dtype == dtype &&
            memcmp(conv_cache[i].geom, g, sizeof conv_cache[i].geom) == 0)
            return &conv_cache[i];
    DOD_CHECK(n_conv_plans < CONV_CACHE_MAX, "op_conv2d", "more than %d distinct convolution shapes", CONV_CACHE_MAX);
    ConvPlan *p = &conv_cache[n_conv_plans++];
    memcpy(p->geom, g, sizeof p->geom);
    p->precision = prec;
    p->dtype = dtype;
    cudnnDataType_t t = cudnn_type(dtype);
    int N = (int)g[0], Cin = (int)g[1], H = (int)g[2], W = (int)g[3], Cout = (int)g[4], kh = (int)g[5], kw = (int)g[6];
    int stride = (int)g[7], pad = (int)g[8];
    int Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x_desc, CUDNN_TENSOR_NCHW, t, N, Cin, H, W));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y_desc, CUDNN_TENSOR_NCHW, t, N, Cout, Ho, Wo));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y32_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y32_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, Cout, Ho, Wo));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->b_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->b_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, Cout, 1, 1));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w_desc));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w_desc, t, CUDNN_TENSOR_NCHW, Cout, Cin, kh, kw));
    p->fwd_desc = conv_desc(pad, stride);
    p->bwd_data_desc = conv_desc(pad, stride);
    p->bwd_filter_desc = conv_desc(pad, stride);

    cudnnHandle_t h = dod_cudnn();
    bool timed = conv_plan_times_algorithms(dtype);  // results sorted by measured time, else by heuristic
    int count = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    ALGO_LIST(timed, cudnnFindConvolutionForwardAlgorithm, cudnnGetConvolutionForwardAlgorithm_v7, h, p->x_desc,
              p->w_desc, p->fwd_desc, p->y_desc, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, fwd);
    PICK_ALGO(fwd, count, p->fwd_desc, p->fwd_algo, p->fwd_ws, "forward");
    cudnnConvolutionBwdDataAlgoPerf_t bd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    ALGO_LIST(timed, cudnnFindConvolutionBackwardDataAlgorithm, cudnnGetConvolutionBackwardDataAlgorithm_v7, h,
              p->w_desc, p->y_desc, p->bwd_data_desc, p->x_desc, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, bd);
    PICK_ALGO(bd, count, p->bwd_data_desc, p->bwd_data_algo, p->bwd_data_ws, "backward-data");
    if (dtype != DT_F32) return p;  // half weights are frozen: no backward-filter
    cudnnConvolutionBwdFilterAlgoPerf_t bf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    ALGO_LIST(timed, cudnnFindConvolutionBackwardFilterAlgorithm, cudnnGetConvolutionBackwardFilterAlgorithm_v7, h,
              p->x_desc, p->y_desc, p->bwd_filter_desc, p->w_desc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, bf);
    PICK_ALGO(bf, count, p->bwd_filter_desc, p->bwd_filter_algo, p->bwd_filter_ws, "backward-filter");
    return p;
}

static int64_t conv_numel_in(const int64_t *g) { return g[0] * g[1] * g[2] * g[3]; }
static int64_t conv_numel_out(const int64_t *g) {
    int64_t Ho = (g[2] + 2 * g[8] - g[5]) / g[7] + 1, Wo = (g[3] + 2 * g[8] - g[6]) / g[7] + 1;
    return g[0] * g[4] * Ho * Wo;
}

static int conv_half = -1;  // -1: DOD_CONV_HALF not read yet
void cuda_set_conv_half_weights(bool on) { conv_half = on; }
bool cuda_conv_reads_half_weights(void) {
    if (conv_half < 0) conv_half = dod_env_flag("DOD_CONV_HALF", false);
    return conv_half;
}

void cuda_conv2d_forward(const int64_t *geom, const float *x, const void *w, DType w_type, const float *bias,
                         float *y) {
    ConvPlan *p = conv_plan(geom, w_type);
    const float zero = 0.0f, one = 1.0f;
    size_t mark = cuda_arena_mark();
    void *ws = p->fwd_ws ? cuda_arena_alloc(p->fwd_ws, "cuDNN forward workspace") : NULL;
    if (w_type == DT_F32) {
        CUDNN_CHECK(cudnnConvolutionForward(dod_cudnn(), &one, p->x_desc, x, p->w_desc, w, p->fwd_desc, p->fwd_algo,
                                            ws, p->fwd_ws, &zero, p->y_desc, y));
    } else {
        int64_t nx = conv_numel_in(geom), ny = conv_numel_out(geom);
        void *xh = cuda_arena_alloc((size_t)nx * 2, "op_conv2d half input");
        void *yh = cuda_arena_alloc((size_t)ny * 2, "op_conv2d half output");
        cuda_narrow_f32(x, w_type, xh, nx);
        CUDNN_CHECK(cudnnConvolutionForward(dod_cudnn(), &one, p->x_desc, xh, p->w_desc, w, p->fwd_desc, p->fwd_algo,
                                            ws, p->fwd_ws, &zero, p->y_desc, yh));
        cuda_widen_f32(yh, w_type, y, ny);
    }
    if (bias) CUDNN_CHECK(cudnnAddTensor(dod_cudnn(), &one, p->b_desc, bias, &one, p->y32_desc, y));
    cuda_arena_release(mark);
}

void cuda_conv2d_backward(const int64_t *geom, const float *x, const void *w, DType w_type, const float *dy, float *dx,
                          float *dw, float *db) {
    DOD_CHECK(w_type == DT_F32 || !dw, "op_conv2d", "a %s weight is frozen on the mixed-precision path: no dw",
              dtype_name(w_type));
    ConvPlan *p = conv_plan(geom, w_type);
    const float zero = 0.0f, one = 1.0f;  // beta = 1: accumulate into the existing gradients
    size_t mark = cuda_arena_mark();
    if (dx) {
        void *ws = p->bwd_data_ws ? cuda_arena_alloc(p->bwd_data_ws, "cuDNN backward-data workspace") : NULL;
        if (w_type == DT_F32) {
            CUDNN_CHECK(cudnnConvolutionBackwardData(dod_cudnn(), &one, p->w_desc, w, p->y_desc, dy, p->bwd_data_desc,
                                                     p->bwd_data_algo, ws, p->bwd_data_ws, &one, p->x_desc, dx));
        } else {
            int64_t nx = conv_numel_in(geom), ny = conv_numel_out(geom);
            void *dyh = cuda_arena_alloc((size_t)ny * 2, "op_conv2d half output gradient");
            void *dxh = cuda_arena_alloc((size_t)nx * 2, "op_conv2d half input gradient");
            cuda_narrow_f32(dy, w_type, dyh, ny);
            CUDNN_CHECK(cudnnConvolutionBackwardData(dod_cudnn(), &one, p->w_desc, w, p->y_desc, dyh, p->bwd_data_desc,
                                                     p->bwd_data_algo, ws, p->bwd_data_ws, &zero, p->x_desc, dxh));
            cuda_widen_add_f32(dxh, w_type, dx, nx);
        }
    }
    if (dw) {
        void *ws = p->bwd_filter_ws ? cuda_arena_alloc(p->bwd_filter_ws, "cuDNN backward-filter workspace") : NULL;
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(dod_cudnn(), &one, p->x_desc, x, p->y_desc, dy, p->bwd_filter_desc,
                                                   p->bwd_filter_algo, ws, p->bwd_filter_ws, &one, p->w_desc, dw));
    }
    if (db) CUDNN_CHECK(cudnnConvolutionBackwardBias(dod_cudnn(), &one, p->y32_desc, dy, &one, p->b_desc, db));
    cuda_arena_release(mark);
}

#else  // CUDA without cuDNN: the convolution has no device implementation in this build.
void cuda_set_conv_half_weights(bool) {}
bool cuda_conv_reads_half_weights(void) { return false; }
void cuda_conv2d_forward(const int64_t *, const float *, const void *, DType, const float *, float *) {
    dod_fatal("op_conv2d", "CUDA convolution needs cuDNN, which was not found at configure time");
}
void cuda_conv2d_backward(const int64_t *, const float *, const void *, DType, const float *, float *, float *,
                          float *) {
    dod_fatal("op_conv2d", "CUDA convolution needs cuDNN, which was not found at configure time");
}
#endif
