// op_conv2d on cuDNN: forward, backward data, backward filter and bias. Descriptors and the three
// algorithms are chosen once per (shape, precision) and cached; workspaces come from the device
// arena and are released right after the call (stream order keeps them valid).
// In DOD_PREC_F32 only FMA-math algorithms are taken (no TF32), so results track the CPU closely.
#include "autograd/cuda/device.h"

#ifdef DOD_HAVE_CUDNN

#define CONV_CACHE_MAX 512
#define CONV_WORKSPACE_LIMIT ((size_t)2 << 30)

typedef struct {
    int64_t geom[9];  // N, Cin, H, W, Cout, kh, kw, stride, pad
    int precision;
    cudnnTensorDescriptor_t x_desc, y_desc, b_desc;
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

static cudnnConvolutionDescriptor_t conv_desc(int pad, int stride) {
    cudnnConvolutionDescriptor_t d;
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, pad, pad, stride, stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                                CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(d, dod_cuda_precision() == DOD_PREC_F32 ? CUDNN_FMA_MATH
                                                                                    : CUDNN_DEFAULT_MATH));
    return d;
}

static ConvPlan *conv_plan(const int64_t *g) {
    int prec = (int)dod_cuda_precision();
    for (int i = 0; i < n_conv_plans; i++)
        if (conv_cache[i].precision == prec && memcmp(conv_cache[i].geom, g, sizeof conv_cache[i].geom) == 0)
            return &conv_cache[i];
    DOD_CHECK(n_conv_plans < CONV_CACHE_MAX, "op_conv2d", "more than %d distinct convolution shapes", CONV_CACHE_MAX);
    ConvPlan *p = &conv_cache[n_conv_plans++];
    memcpy(p->geom, g, sizeof p->geom);
    p->precision = prec;
    int N = (int)g[0], Cin = (int)g[1], H = (int)g[2], W = (int)g[3], Cout = (int)g[4], kh = (int)g[5], kw = (int)g[6];
    int stride = (int)g[7], pad = (int)g[8];
    int Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, Cin, H, W));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, Cout, Ho, Wo));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->b_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->b_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, Cout, 1, 1));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w_desc));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, Cout, Cin, kh, kw));
    p->fwd_desc = conv_desc(pad, stride);
    p->bwd_data_desc = conv_desc(pad, stride);
    p->bwd_filter_desc = conv_desc(pad, stride);

    cudnnHandle_t h = dod_cudnn();
    int count = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->x_desc, p->w_desc, p->fwd_desc, p->y_desc,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, fwd));
    PICK_ALGO(fwd, count, p->fwd_desc, p->fwd_algo, p->fwd_ws, "forward");
    cudnnConvolutionBwdDataAlgoPerf_t bd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w_desc, p->y_desc, p->bwd_data_desc, p->x_desc,
                                                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, bd));
    PICK_ALGO(bd, count, p->bwd_data_desc, p->bwd_data_algo, p->bwd_data_ws, "backward-data");
    cudnnConvolutionBwdFilterAlgoPerf_t bf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->x_desc, p->y_desc, p->bwd_filter_desc, p->w_desc,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, bf));
    PICK_ALGO(bf, count, p->bwd_filter_desc, p->bwd_filter_algo, p->bwd_filter_ws, "backward-filter");
    return p;
}

void cuda_conv2d_forward(const int64_t *geom, const float *x, const float *w, const float *bias, float *y) {
    ConvPlan *p = conv_plan(geom);
    const float zero = 0.0f, one = 1.0f;
    size_t mark = cuda_arena_mark();
    void *ws = p->fwd_ws ? cuda_arena_alloc(p->fwd_ws, "cuDNN forward workspace") : NULL;
    CUDNN_CHECK(cudnnConvolutionForward(dod_cudnn(), &one, p->x_desc, x, p->w_desc, w, p->fwd_desc, p->fwd_algo, ws,
                                        p->fwd_ws, &zero, p->y_desc, y));
    if (bias) CUDNN_CHECK(cudnnAddTensor(dod_cudnn(), &one, p->b_desc, bias, &one, p->y_desc, y));
    cuda_arena_release(mark);
}

void cuda_conv2d_backward(const int64_t *geom, const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db) {
    ConvPlan *p = conv_plan(geom);
    const float one = 1.0f;  // beta = 1: accumulate into the existing gradients
    size_t mark = cuda_arena_mark();
    if (dx) {
        void *ws = p->bwd_data_ws ? cuda_arena_alloc(p->bwd_data_ws, "cuDNN backward-data workspace") : NULL;
        CUDNN_CHECK(cudnnConvolutionBackwardData(dod_cudnn(), &one, p->w_desc, w, p->y_desc, dy, p->bwd_data_desc,
                                                 p->bwd_data_algo, ws, p->bwd_data_ws, &one, p->x_desc, dx));
    }
    if (dw) {
        void *ws = p->bwd_filter_ws ? cuda_arena_alloc(p->bwd_filter_ws, "cuDNN backward-filter workspace") : NULL;
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(dod_cudnn(), &one, p->x_desc, x, p->y_desc, dy, p->bwd_filter_desc,
                                                   p->bwd_filter_algo, ws, p->bwd_filter_ws, &one, p->w_desc, dw));
    }
    if (db) CUDNN_CHECK(cudnnConvolutionBackwardBias(dod_cudnn(), &one, p->y_desc, dy, &one, p->b_desc, db));
    cuda_arena_release(mark);
}

#else  // CUDA without cuDNN: the convolution has no device implementation in this build.
void cuda_conv2d_forward(const int64_t *, const float *, const float *, const float *, float *) {
    dod_fatal("op_conv2d", "CUDA convolution needs cuDNN, which was not found at configure time");
}
void cuda_conv2d_backward(const int64_t *, const float *, const float *, const float *, float *, float *, float *) {
    dod_fatal("op_conv2d", "CUDA convolution needs cuDNN, which was not found at configure time");
}
#endif
