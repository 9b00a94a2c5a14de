// The FLOP counter (autograd/profile.h): each product op's forward and backward count against a hand
// formula (2 per multiply-add), with and without weight / input gradients; recomputation and
// attention's remade scores counted apart; the peak table and the rate line; the profile table's FLOP
// columns; and the DOD fixture's training step (stages 1 and 2) against the count PyTorch's own aten
// ops give for the same step (tests/fixtures/dod/flops.json, scripts/count_flops_torch.py).
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "autograd/profile.h"
#include "autograd/tape.h"
#include "tests/check.h"
#include "tests/dod_fixture_config.h"

static Tensor *leaf(const char *name, int ndim, const int64_t *shape, bool grad, uint64_t seed) {
    Tensor *t = tensor_new_persistent(name, ndim, shape, DT_F32);
    tensor_randn(t, seed, 0.5f);
    t->requires_grad = grad;
    return t;
}

static OpFlops t0;
static void mark(void) { t0 = op_flops_total(FLOPS_KINDS); }
static OpFlops since(void) { return op_flops_sub(op_flops_total(FLOPS_KINDS), t0); }

// Checks the FLOPs since mark() (forward, backward, recomputed).
static void expect(const char *what, double fwd, double bwd, double rec) {
    OpFlops f = since();
    CHECK(f.forward == fwd && f.backward == bwd && f.recomputed == rec,
          "%s: forward %.0f backward %.0f recomputed %.0f, expected %.0f / %.0f / %.0f", what, f.forward, f.backward,
          f.recomputed, fwd, bwd, rec);
}

// Runs y's backward from sum(y) and checks the backward FLOPs (the sum counts none).
static void expect_backward(const char *what, Tensor *y, double bwd, double rec) {
    mark();
    ag_backward(op_sum(y));
    expect(what, 0, bwd, rec);
    ag_step_reset();
}

static void test_gemm_ops(void) {
    int64_t sa[4] = {2, 3, 4, 5}, sb[4] = {2, 3, 5, 6}, sbt[2] = {6, 5};
    double mm = 2.0 * 6 * 4 * 6 * 5;  // batch 6, M 4, N 6, K 5
    for (int grads = 0; grads < 3; grads++) {  // a only, b only, both
        Tensor *a = leaf("a", 4, sa, grads != 1, 1), *b = leaf("b", 4, sb, grads != 0, 2);
        mark();
        Tensor *y = op_matmul(a, b, false);
        expect("matmul forward", mm, 0, 0);
        expect_backward("matmul backward", y, (grads == 2 ? 2 : 1) * mm, 0);
        tensor_free(a);
        tensor_free(b);
    }
    Tensor *a = leaf("a", 4, sa, true, 1), *bt = leaf("bt", 2, sbt, true, 3);  // broadcast, b transposed
    mark();
    Tensor *y = op_matmul(a, bt, true);
    expect("matmul broadcast trans_b forward", mm, 0, 0);
    expect_backward("matmul broadcast trans_b backward", y, 2 * mm, 0);
    tensor_free(a);
    tensor_free(bt);

    int64_t sx[3] = {2, 7, 8}, sw[2] = {5, 8}, sbias[1] = {5};
    double lin = 2.0 * 14 * 5 * 8;  // rows 14, out 5, in 8
    for (int c = 0; c < 3; c++) {  // frozen weight; trainable weight; trainable weight, x without grad
        Tensor *x = leaf("x", 3, sx, c != 2, 4), *w = leaf("w", 2, sw, c != 0, 5), *bias = leaf("bias", 1, sbias, true, 6);
        mark();
        y = op_linear(x, w, bias);
        expect("linear forward", lin, 0, 0);
        expect_backward(c == 0 ? "linear backward, frozen weight (no dW)" : c == 1 ? "linear backward, dX and dW"
                                                                                   : "linear backward, dW only",
                        y, (c == 1 ? 2 : 1) * lin, 0);
        tensor_free(x);
        tensor_free(w);
        tensor_free(bias);
    }

    // op_add_projection_into, linear form (rows 14, in 8, out 5) and 1x1-conv form (2 x 36 pixels, 3 -> 4).
    Tensor *x = leaf("x", 3, sx, true, 7), *w = leaf("w", 2, sw, true, 8), *w0 = leaf("w0", 2, sw, false, 9);
    Tensor *base = op_linear(x, w0, NULL);
    mark();
    y = op_add_projection_into(base, x, w, 0.5f);
    expect("projection (linear) forward", lin, 0, 0);
    // base's own op_linear backward adds a dX product (w0 frozen).
    expect_backward("projection (linear) backward, dX and dW (+ base dX)", y, 2 * lin + lin, 0);
    int64_t sxi[4] = {2, 3, 6, 6}, swi[4] = {4, 3, 1, 1};
    Tensor *xi = leaf("xi", 4, sxi, false, 10), *wi = leaf("wi", 4, swi, true, 11), *wi0 = leaf("wi0", 4, swi, false, 12);
    Tensor *base4 = op_conv2d(xi, wi0, NULL, 1, 0);
    mark();
    y = op_add_projection_into(base4, xi, wi, 1.0f);
    double proj = 2.0 * 72 * 4 * 3;
    expect("projection (1x1 conv) forward", proj, 0, 0);
    expect_backward("projection (1x1 conv) backward, dW only", y, proj, 0);
    tensor_free(x);
    tensor_free(w);
    tensor_free(w0);
    tensor_free(xi);
    tensor_free(wi);
    tensor_free(wi0);
    CHECK(op_flops_total(FLOPS_GEMM).forward > 0 && op_flops_total(FLOPS_CONV).forward > 0,
          "kinds: GEMM %.0f, conv %.0f", op_flops_total(FLOPS_GEMM).forward, op_flops_total(FLOPS_CONV).forward);
}

static void test_convolutions(void) {
    // 2 x 3 x 9 x 11, 4 x 3 x 3 x 3, stride 2, padding 1: Ho 5, Wo 6 (the zero padding is counted).
    int64_t sx[4] = {2, 3, 9, 11}, sw[4] = {4, 3, 3, 3}, sb[1] = {4};
    double conv = 2.0 * 2 * 4 * (5 * 6) * (3 * 3 * 3);
    for (int c = 0; c < 3; c++) {  // frozen weight (dX); both; weight only (dW)
        Tensor *x = leaf("x", 4, sx, c != 2, 1), *w = leaf("w", 4, sw, c != 0, 2), *b = leaf("b", 1, sb, true, 3);
        OpFlops conv0 = op_flops_total(FLOPS_CONV);
        mark();
        Tensor *y = op_conv2d(x, w, b, 2, 1);
        CHECK(y->shape[2] == 5 && y->shape[3] == 6, "conv output %s", shape_str(y));
        expect("conv2d forward", conv, 0, 0);
        expect_backward("conv2d backward", y, (c == 1 ? 2 : 1) * conv, 0);
        OpFlops k = op_flops_sub(op_flops_total(FLOPS_CONV), conv0);
        CHECK(k.forward == conv && k.backward == (c == 1 ? 2 : 1) * conv, "conv kind: %.0f / %.0f", k.forward, k.backward);
        tensor_free(x);
        tensor_free(w);
        tensor_free(b);
    }
    // Fused: group norm + SiLU + conv (8 channels, 2 groups), 8 -> 4, 3 x 3, padding 1 on 2 x 8 x 6 x 6.
    int64_t sg[4] = {2, 8, 6, 6}, swg[4] = {4, 8, 3, 3}, sc[1] = {8};
    double gconv = 2.0 * 2 * 4 * 36 * (8 * 9);
    for (int c = 0; c < 2; c++) {  // frozen conv weight, x needs grad (dX); trainable weight, x without (dW)
        Tensor *x = leaf("x", 4, sg, c == 0, 4), *gamma = leaf("gamma", 1, sc, false, 5), *beta = leaf("beta", 1, sc, false, 6);
        Tensor *w = leaf("w", 4, swg, c == 1, 7);
        mark();
        Tensor *y = op_group_norm_silu_conv2d(x, 2, gamma, beta, 1e-5f, w, NULL, 1, 1);
        expect("group_norm_silu_conv2d forward", gconv, 0, 0);
        expect_backward(c ? "group_norm_silu_conv2d backward, dW" : "group_norm_silu_conv2d backward, dX", y, gconv, 0);
        tensor_free(x);
        tensor_free(gamma);
        tensor_free(beta);
        tensor_free(w);
    }
    // Concat (3 + 5 channels) + conv 8 -> 4: both gradients.
    int64_t s3[4] = {2, 3, 6, 6}, s5[4] = {2, 5, 6, 6};
    Tensor *xs[2] = {leaf("x3", 4, s3, true, 8), leaf("x5", 4, s5, false, 9)};
    Tensor *w = leaf("w", 4, swg, true, 10);
    mark();
    Tensor *y = op_concat_conv2d(xs, 2, w, NULL, 1, 1);
    expect("concat_conv2d forward", gconv, 0, 0);
    expect_backward("concat_conv2d backward, dX and dW", y, 2 * gconv, 0);
    // Upsample 2x (2 x 3 x 4 x 5 -> 8 x 10) + conv 3 -> 4, 3 x 3, padding 1.
    int64_t su[4] = {2, 3, 4, 5};
    Tensor *xu = leaf("xu", 4, su, true, 11), *wu = leaf("wu", 4, sw, false, 12);
    mark();
    y = op_upsample_nearest2x_conv2d(xu, wu, NULL, 1, 1);
    double uconv = 2.0 * 2 * 4 * (8 * 10) * 27;
    expect("upsample_nearest2x_conv2d forward", uconv, 0, 0);
    expect_backward("upsample_nearest2x_conv2d backward, dX (frozen weight)", y, uconv, 0);
    tensor_free(xs[0]);
    tensor_free(xs[1]);
    tensor_free(w);
    tensor_free(xu);
    tensor_free(wu);
}

static void test_attention(void) {
    // B 2, Lq 6, Lk 5, H 3, D 4: one product is 2 * 6 * 6 * 5 * 4.
    int64_t sq[3] = {2, 6, 12}, skv[3] = {2, 5, 12};
    double one = 2.0 * 6 * 6 * 5 * 4;
    struct { bool q, k, v; int products; } cases[] = {
        {true, true, true, 4},     // dV, dP, dQ, dK
        {true, false, false, 2},   // dP, dQ
        {false, false, true, 1},   // dV only: no dP
        {false, true, true, 3},    // dV, dP, dK
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Tensor *q = leaf("q", 3, sq, cases[i].q, 1), *k = leaf("k", 3, skv, cases[i].k, 2), *v = leaf("v", 3, skv, cases[i].v, 3);
        mark();
        Tensor *o = op_attention(q, k, v, 3, 0);
        expect("attention forward (Q K^T, P V)", 2 * one, 0, 0);
        expect_backward("attention backward (+ Q K^T remade)", o, cases[i].products * one, one);
        tensor_free(q);
        tensor_free(k);
        tensor_free(v);
    }
}

// ag_checkpoint: the block's first run counts as forward, its re-run in backward as recomputed.
static Tensor *linear_block(void *ctx, Tensor *const *in) { return op_linear(in[0], (Tensor *)ctx, NULL); }

static void test_recompute(void) {
    int64_t sx[2] = {6, 8}, sw[2] = {5, 8};
    Tensor *x = leaf("x", 2, sx, true, 1), *w = leaf("w", 2, sw, true, 2);
    double lin = 2.0 * 6 * 5 * 8;
    mark();
    Tensor *y = ag_checkpoint(linear_block, w, 1, &x);
    expect("checkpointed block forward", lin, 0, 0);
    mark();
    ag_backward(op_sum(y));
    expect("checkpointed block backward (re-run recomputed)", 0, 2 * lin, lin);
    ag_step_reset();
    tensor_free(x);
    tensor_free(w);
}

static void peak_from_env(void *ctx) {
    (void)ctx;
    char label[64];
    op_peak_tflops(DEV_CPU, label, sizeof label);
}

static void test_peaks(void) {
    const char *label;
    CHECK(dod_peak_bf16_tflops("NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", &label) == 989.4 && !strcmp(label, "H100 SXM"),
          "H100 SXM");
    CHECK(dod_peak_bf16_tflops("NVIDIA H100 PCIe (sm_90, 79.1 GiB)", &label) == 756.0 && !strcmp(label, "H100 PCIe"),
          "H100 PCIe");
    CHECK(dod_peak_bf16_tflops("NVIDIA H200 (sm_90, 139.8 GiB)", &label) == 989.4 && !strcmp(label, "H200"), "H200");
    CHECK(dod_peak_bf16_tflops("NVIDIA GH200 480GB", &label) == 0 && !label, "GH200 is not an H200 row");
    CHECK(dod_peak_bf16_tflops("NVIDIA H100 NVL", NULL) == 0, "H100 NVL is not an SXM row");
    CHECK(dod_peak_bf16_tflops("NVIDIA A100-SXM4-80GB", NULL) == 0, "unknown GPU");
    CHECK(dod_peak_bf16_tflops(NULL, NULL) == 0, "no name");

    char line[512], label_buf[256];
    OpFlops f = {2e9, 4e9, 1e9};  // 6 GFLOP model, 7 executed, in 0.5 s: 12 / 14 GFLOP/s
    unsetenv("DOD_PEAK_TFLOPS");
    CHECK(op_peak_tflops(DEV_CPU, label_buf, sizeof label_buf) == 0, "the CPU has no assumed peak");
    op_flops_rate_line(f, 0.5, DEV_CPU, line, sizeof line);
    CHECK(strstr(line, "12.00 GFLOP/s") && strstr(line, "executed (with recomputation) 14.00 GFLOP/s") &&
              !strstr(line, "MFU ") && !strstr(line, "HFU") && strstr(line, "no MFU"),
          "CPU rate line: %s", line);
    setenv("DOD_PEAK_TFLOPS", "0.024", 1);  // 24 GFLOP/s: MFU 50%, HFU 58.3%
    op_flops_rate_line(f, 0.5, DEV_CPU, line, sizeof line);
    CHECK(strstr(line, "MFU 50.0%") && strstr(line, "HFU 58.3%") && strstr(line, "0.024 TFLOP/s from DOD_PEAK_TFLOPS"),
          "rate line: %s",
          line);
    unsetenv("DOD_PEAK_TFLOPS");
    setenv("DOD_PEAK_TFLOPS", "fast", 1);
    expect_fatal("DOD_PEAK_TFLOPS=fast", peak_from_env, NULL, (const char *[]){"DOD_PEAK_TFLOPS", "'fast'", NULL});
    setenv("DOD_PEAK_TFLOPS", "-3", 1);
    expect_fatal("DOD_PEAK_TFLOPS=-3", peak_from_env, NULL, (const char *[]){"DOD_PEAK_TFLOPS", "'-3'", NULL});
    unsetenv("DOD_PEAK_TFLOPS");
}

// The profile table carries the FLOP columns and the summary (DOD_PROFILE set before the first op).
static void test_profile_columns(void) {
    if (!op_profile_enabled()) {
        printf("SKIP profile columns: DOD_PROFILE was not set at the first op\n");
        return;
    }
    op_profile_reset();
    int64_t sx[2] = {64, 32}, sw[2] = {16, 32};
    Tensor *x = leaf("x", 2, sx, false, 1), *w = leaf("w", 2, sw, true, 2);
    ag_backward(op_sum(op_linear(x, w, NULL)));
    ag_step_reset();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    op_profile_report(f, "test");
    fclose(f);
    double flops = 2.0 * 64 * 16 * 32;
    char want_fwd[64], want_bwd[64];
    snprintf(want_fwd, sizeof want_fwd, "%.2f", flops / 1e9);
    snprintf(want_bwd, sizeof want_bwd, "model %.3f GFLOP", 2 * flops / 1e9);
    CHECK(strstr(buf, "GFLOP/s") && strstr(buf, "op_linear") && strstr(buf, want_fwd) && strstr(buf, want_bwd) &&
              strstr(buf, "ops without FLOPs counted") && strstr(buf, "GEMM (linear, matmul, projection)"),
          "profile report:\n%s", buf);
    free(buf);
    tensor_free(x);
    tensor_free(w);
    op_profile_reset();
}

// ---- the DOD fixture step against PyTorch's count -----------------------------------------------
static double json_number(const cJSON *root, const char *stage, const char *pass) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, stage);
    const cJSON *v = s ? cJSON_GetObjectItemCaseSensitive(s, pass) : NULL;
    if (!cJSON_IsNumber(v)) {
        fprintf(stderr, "tests/fixtures/dod/flops.json: no number %s.%s (run scripts/count_flops_torch.py)\n", stage, pass);
        exit(2);
    }
    return v->valuedouble;
}

static void test_dod_step(void) {
    const char *path = DOD_SOURCE_DIR "/tests/fixtures/dod/flops.json";
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: cannot open (run scripts/count_flops_torch.py)\n", path);
        exit(2);
    }
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        fprintf(stderr, "%s: not JSON\n", path);
        exit(2);
    }
    const int64_t batch = 2, crop = 32, latent = 8;  // the fixture's batch and crop (meta.json); 32 / 2^(3 - 1)
    for (int stage = 1; stage <= 2; stage++) {
        DodModelConfig cfg = dod_fixture_config(stage);
        DodModel *m = dod_model_create(&cfg);
        Tensor *lq, *hq;
        dod_synthetic_pair(batch, crop, &lq, &hq);
        mark();
        DodLoss l = dod_model_forward_loss(m, lq, hq, 3);
        OpFlops fwd = since();
        mark();
        ag_backward(l.total);
        OpFlops bwd = since();
        ag_step_reset();
        char key[8];
        snprintf(key, sizeof key, "s%d", stage);
        double torch_fwd = json_number(root, key, "forward"), torch_bwd = json_number(root, key, "backward");
        // The two places where the twins compute differently on purpose (scripts/count_flops_torch.py):
        // our modulation splits W_fuse = [W_e | W_b] into one [N, de] and one [10, block] product (both
        // gradients in stage 1) where PyTorch runs one product per block; and ours runs the frozen conv_in
        // whose output the trainable copy replaces (a forward conv of conv_in's shape on the latent).
        const DodModulationConfig *mc = &cfg.modulation;
        double r2 = 2.0 * cfg.lora_rank;
        double fuse = flops_gemm(1, batch, (int64_t)r2, mc->de_dim) + flops_gemm(1, LORA_N_BLOCKS, (int64_t)r2, mc->block_dim);
        const Tensor *w = m->conv_in_w;
        double conv_in = flops_gemm(batch, w->shape[0], latent * latent, w->shape[1] * w->shape[2] * w->shape[3]);
        double want_fwd = torch_fwd - json_number(root, "modulation_fuse", "forward") + fuse + conv_in;
        double want_bwd = stage == 1 ? torch_bwd - json_number(root, "modulation_fuse", "backward_s1") + 2 * fuse : torch_bwd;
        printf("stage %d: forward %.0f FLOPs (PyTorch %.0f, expected %.0f), backward %.0f + %.0f recomputed (PyTorch "
               "%.0f, expected %.0f)\n", stage, fwd.forward, torch_fwd, want_fwd, bwd.backward, bwd.recomputed, torch_bwd,
               want_bwd);
        CHECK(fwd.forward == want_fwd && fwd.backward == 0 && fwd.recomputed == 0,
              "stage %d forward: ours %.0f, expected %.0f from PyTorch's aten products", stage, fwd.forward, want_fwd);
        CHECK(bwd.backward == want_bwd && bwd.forward == 0, "stage %d backward: ours %.0f, expected %.0f from PyTorch's",
              stage, bwd.backward, want_bwd);
        tensor_free(lq);
        tensor_free(hq);
        dod_model_free(m);
    }
    cJSON_Delete(root);
}

int main(void) {
    setenv("DOD_PROFILE", "1", 0);  // before the first op: the profile's columns are tested below
    test_gemm_ops();
    test_convolutions();
    test_attention();
    test_recompute();
    test_peaks();
    test_profile_columns();
    test_dod_step();
    return check_summary();
}
