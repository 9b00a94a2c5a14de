// Shape ops: concat, split, chunk, reshape, permute, pad2d, upsample_nearest2x, gather_hw,
// global_avg_pool, embedding (values checked index by index, gradients by finite differences) and the timestep
// embedding against diffusers' get_timestep_embedding (fixture). Plus shape errors.
#include "tests/check.h"
#include "tests/op_test_util.h"

static float at(const Tensor *t, int64_t i) { return tensor_data_f32(t)[i]; }

// ---- gradcheck bodies ----
typedef struct { int n, dim; } CatCtx;
static Tensor *cat_fn(void *ctx, Tensor *const *in) { CatCtx *c = ctx; return op_concat(in, c->n, c->dim); }
static Tensor *split_fn(void *ctx, Tensor *const *in) {
    (void)ctx;
    Tensor *p[3];
    int64_t sizes[] = {1, 3, 2};
    op_split(in[0], 1, 3, sizes, p);
    Tensor *swapped[3] = {p[2], p[0], p[1]};  // reorder: every piece's backward lands in its own slice
    return op_concat(swapped, 3, 1);
}
static Tensor *split_one_fn(void *ctx, Tensor *const *in) {
    (void)ctx;
    Tensor *p[3];
    op_chunk(in[0], 3, -1, p);
    return p[1];  // the other pieces get no gradient
}
static Tensor *reshape_fn(void *ctx, Tensor *const *in) {
    (void)ctx;
    int64_t a[] = {4, -1}, b[] = {2, 2, 15};
    return op_mul(op_reshape(in[0], 2, a), op_reshape(op_reshape(in[0], 3, b), 2, a));  // grad 2 x w
}
static Tensor *permute_fn(void *ctx, Tensor *const *in) { return op_permute(in[0], ctx); }
static Tensor *pad_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_pad2d(in[0], 1, 2, 0, 3); }
static Tensor *up_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_upsample_nearest2x(in[0]); }
static Tensor *gap_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_global_avg_pool(in[0]); }
// Rows and columns out of order, repeated, and skipped (input row 1 and column 1 unread: gradient 0).
static const int64_t gather_rows[] = {4, 0, 0, 2, 3, 4, 4}, gather_cols[] = {3, 3, 2, 0, 0};
static Tensor *gather_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_gather_hw(in[0], gather_rows, 7, gather_cols, 5); }
static Tensor *emb_fn(void *ctx, Tensor *const *in) { (void)ctx; int64_t ids[] = {2, 0, 2, 4}; return op_embedding(in[0], ids, 4); }

// ---- death tests ----
static void cat_bad(void *ctx) {
    (void)ctx;
    int64_t a[] = {2, 3, 4}, b[] = {2, 5, 3};
    Tensor *xs[2] = {test_input("a", 3, a, 1, 1, false), test_input("b", 3, b, 2, 1, false)};
    op_concat(xs, 2, 1);
}
static void reshape_bad(void *ctx) {
    (void)ctx;
    int64_t a[] = {2, 3, 4}, t[] = {5, 5};
    op_reshape(test_input("a", 3, a, 1, 1, false), 2, t);
}
static void chunk_bad(void *ctx) {
    (void)ctx;
    int64_t a[] = {2, 7};
    Tensor *p[2];
    op_chunk(test_input("a", 2, a, 1, 1, false), 2, 1, p);
}
static void pad_bad(void *ctx) {
    (void)ctx;
    int64_t a[] = {2, 3, 4};
    op_pad2d(test_input("a", 3, a, 1, 1, false), 1, 1, 1, 1);
}
static void gather_bad_index(void *ctx) {
    (void)ctx;
    int64_t a[] = {1, 2, 3, 4}, rows[] = {0, 3}, cols[] = {1};
    op_gather_hw(test_input("a", 4, a, 1, 1, false), rows, 2, cols, 1);
}
static void gather_bad_rank(void *ctx) {
    (void)ctx;
    int64_t a[] = {2, 3, 4}, rows[] = {0}, cols[] = {0};
    op_gather_hw(test_input("a", 3, a, 1, 1, false), rows, 1, cols, 1);
}
static void emb_bad(void *ctx) {
    (void)ctx;
    int64_t a[] = {5, 3}, ids[] = {1, 5};
    op_embedding(test_input("t", 2, a, 1, 1, false), ids, 2);
}

static void timestep_fixture_case(int dim, bool flip, float shift, const char *block) {
    static double ts[16], ref[8 * 320];
    int n = fixture_read("timestep_embedding.txt", "timesteps", ts, 16);
    int m = fixture_read("timestep_embedding.txt", block, ref, 8 * 320);
    CHECK(m == n * dim, "fixture %s has %d values, want %d", block, m, n * dim);
    float t[16];
    for (int i = 0; i < n; i++) t[i] = (float)ts[i];
    Tensor *y = op_timestep_embedding(t, n, dim, flip, shift);
    CHECK(y->ndim == 2 && y->shape[0] == n && y->shape[1] == dim, "timestep embedding shape %s", shape_str(y));
    double worst = 0;
    for (int i = 0; i < m; i++) worst = fmax(worst, fabs(ref[i] - at(y, i)));
    // Arguments reach 999 * 1: a 1-ulp difference in exp() between libm and torch moves sin/cos by
    // up to ~1e-4 there; small timesteps agree to ~1e-7.
    char what[96];
    snprintf(what, sizeof what, "timestep embedding %s vs diffusers", block);
    CHECK_NEAR(worst, 0.0, 2e-4, what);
    double worst_small = 0;  // rows with t <= 1
    for (int i = 0; i < n; i++)
        if (ts[i] <= 1.0)
            for (int k = 0; k < dim; k++) worst_small = fmax(worst_small, fabs(ref[i * dim + k] - at(y, i * dim + k)));
    snprintf(what, sizeof what, "timestep embedding %s vs diffusers, t <= 1", block);
    CHECK_NEAR(worst_small, 0.0, 1e-6, what);
    ag_step_reset();
}

int main(void) {
    // concat along dim 1 and dim -1: values by index.
    {
        int64_t a[] = {2, 2, 3}, b[] = {2, 1, 3};
        Tensor *xa = test_input("a", 3, a, 1, 1, false), *xb = test_input("b", 3, b, 2, 1, false);
        Tensor *xs[2] = {xa, xb};
        Tensor *y = op_concat(xs, 2, 1);
        CHECK(y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 3, "concat shape %s", shape_str(y));
        bool ok = true;
        for (int n = 0; n < 2; n++)
            for (int c = 0; c < 3; c++)
                for (int k = 0; k < 3; k++) {
                    float want = c < 2 ? at(xa, (n * 2 + c) * 3 + k) : at(xb, n * 3 + k);
                    ok &= at(y, (n * 3 + c) * 3 + k) == want;
                }
        CHECK(ok, "concat dim 1 values");
        int64_t c1[] = {2, 2, 1};
        Tensor *xc = test_input("c", 3, c1, 3, 1, false);
        Tensor *ys[2] = {xa, xc};
        Tensor *z = op_concat(ys, 2, -1);
        CHECK(z->shape[2] == 4 && at(z, 3) == at(xc, 0) && at(z, 4) == at(xa, 3), "concat dim -1 values");
        tensor_free(xa); tensor_free(xb); tensor_free(xc);
        ag_step_reset();
    }
    // split: pieces hold the right slices; chunk equal pieces.
    {
        int64_t s[] = {2, 6, 2};
        Tensor *x = test_input("x", 3, s, 4, 1, false);
        Tensor *p[3];
        int64_t sizes[] = {1, 3, 2};
        op_split(x, 1, 3, sizes, p);
        CHECK(p[1]->shape[1] == 3 && at(p[1], 0) == at(x, 2) && at(p[2], 5) == at(x, 21), "split values");
        Tensor *q[2];
        op_chunk(x, 2, -1, q);
        CHECK(q[1]->shape[2] == 1 && at(q[1], 4) == at(x, 9), "chunk values");
        tensor_free(x);
        ag_step_reset();
    }
    // reshape shares storage, infers -1.
    {
        int64_t s[] = {3, 4}, t[] = {2, -1, 2};
        Tensor *x = test_input("x", 2, s, 5, 1, false);
        Tensor *y = op_reshape(x, 3, t);
        CHECK(y->data == x->data && y->shape[1] == 3 && y->numel == 12, "reshape shares data, infers 3: %s", shape_str(y));
        tensor_free(x);
        ag_step_reset();
    }
    // permute [2, 3, 4, 5] by (2, 0, 3, 1).
    static int perm[] = {2, 0, 3, 1};
    {
        int64_t s[] = {2, 3, 4, 5};
        Tensor *x = test_input("x", 4, s, 6, 1, false);
        Tensor *y = op_permute(x, perm);
        CHECK(y->shape[0] == 4 && y->shape[1] == 2 && y->shape[2] == 5 && y->shape[3] == 3, "permute shape %s", shape_str(y));
        bool ok = true;
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 3; b++)
                for (int c = 0; c < 4; c++)
                    for (int d = 0; d < 5; d++) ok &= at(y, ((c * 2 + a) * 5 + d) * 3 + b) == at(x, ((a * 3 + b) * 4 + c) * 5 + d);
        CHECK(ok, "permute values");
        tensor_free(x);
        ag_step_reset();
    }
    // pad2d, upsample, global average pool.
    {
        int64_t s[] = {1, 2, 3, 4};
        Tensor *x = test_input("x", 4, s, 7, 1, false);
        Tensor *p = op_pad2d(x, 1, 2, 0, 3);  // -> [1, 2, 6, 7]
        CHECK(p->shape[2] == 6 && p->shape[3] == 7, "pad2d shape %s", shape_str(p));
        CHECK(at(p, 0) == 0 && at(p, 1) == at(x, 0) && at(p, 7 + 4) == at(x, 7) && at(p, 3 * 7 + 1) == 0 &&
                  at(p, 42 + 2 * 7 + 3) == at(x, 12 + 2 * 4 + 2),
              "pad2d values");
        Tensor *u = op_upsample_nearest2x(x);  // [1, 2, 6, 8]
        bool ok = u->shape[2] == 6 && u->shape[3] == 8;
        for (int c = 0; ok && c < 2; c++)
            for (int h = 0; h < 6; h++)
                for (int w = 0; w < 8; w++) ok &= at(u, (c * 6 + h) * 8 + w) == at(x, (c * 3 + h / 2) * 4 + w / 2);
        CHECK(ok, "upsample_nearest2x values");
        Tensor *g = op_global_avg_pool(x);
        double m = 0;
        for (int i = 12; i < 24; i++) m += at(x, i);
        CHECK(g->ndim == 2 && g->shape[1] == 2, "gap shape %s", shape_str(g));
        CHECK_NEAR(at(g, 1), m / 12, 1e-6, "global_avg_pool channel 1");
        tensor_free(x);
        ag_step_reset();
    }
    // gather_hw: every output pixel by index; a larger one through the parallel loops (forward and the
    // backward, against the scatter-add of the output gradient in row-major order: bit for bit).
    {
        int64_t s[] = {2, 3, 5, 4};
        Tensor *x = test_input("x", 4, s, 9, 1, false);
        Tensor *y = op_gather_hw(x, gather_rows, 7, gather_cols, 5);
        bool ok = y->ndim == 4 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 7 && y->shape[3] == 5;
        for (int p = 0; ok && p < 6; p++)
            for (int i = 0; i < 7; i++)
                for (int j = 0; j < 5; j++) ok &= at(y, (p * 7 + i) * 5 + j) == at(x, (p * 5 + gather_rows[i]) * 4 + gather_cols[j]);
        CHECK(ok, "gather_hw values (%s)", shape_str(y));
        tensor_free(x);
        ag_step_reset();
        int64_t big[] = {2, 8, 40, 30}, rows[45], cols[33];
        for (int i = 0; i < 45; i++) rows[i] = (i * 7) % 40;
        for (int j = 0; j < 33; j++) cols[j] = j < 30 ? 29 - j : j - 30;
        Tensor *xb = test_input("xb", 4, big, 10, 1, true);
        Tensor *yb = op_gather_hw(xb, rows, 45, cols, 33);
        Tensor *w = tensor_new(4, yb->shape, DT_F32);
        tensor_randn(w, 11, 1.0f);
        ag_backward(op_sum(op_mul(yb, w)));
        float *want = calloc((size_t)xb->numel, sizeof(float));
        ok = true;
        for (int p = 0; p < 16; p++)
            for (int i = 0; i < 45; i++)
                for (int j = 0; j < 33; j++) {
                    int64_t src = (p * 40 + rows[i]) * 30 + cols[j], dst = (p * 45 + i) * 33 + j;
                    ok &= at(yb, dst) == at(xb, src);
                    want[src] += at(w, dst);
                }
        CHECK(ok, "gather_hw values, parallel path");
        CHECK(memcmp(want, xb->grad, sizeof(float) * (size_t)xb->numel) == 0, "gather_hw gradient == the scatter-add");
        free(want);
        tensor_free(xb);
        ag_step_reset();
    }
    // embedding rows.
    {
        int64_t s[] = {5, 3}, ids[] = {4, 0, 4};
        Tensor *t = test_input("t", 2, s, 8, 1, false);
        Tensor *y = op_embedding(t, ids, 3);
        CHECK(y->shape[0] == 3 && at(y, 0) == at(t, 12) && at(y, 5) == at(t, 2) && at(y, 8) == at(t, 14), "embedding rows");
        tensor_free(t);
        ag_step_reset();
    }
    timestep_fixture_case(320, true, 0.0f, "emb_320_1_0");
    timestep_fixture_case(7, false, 1.0f, "emb_7_0_1");
    timestep_fixture_case(16, false, 0.0f, "emb_16_0_0");

    // Gradients (all linear maps: eps 1e-2, tight tolerances).
    {
        int64_t a[] = {2, 3, 4}, b[] = {2, 1, 4}, c[] = {2, 5, 4};
        Tensor *in[3] = {test_input("a", 3, a, 1, 1, true), test_input("b", 3, b, 2, 1, true), test_input("c", 3, c, 3, 1, false)};
        CatCtx cc = {3, 1};
        gradcheck("concat dim 1 of [2,3,4] [2,1,4] [2,5,4]", cat_fn, &cc, 3, in, 1e-2, 1e-3, 1e-5, 0);
        for (int i = 0; i < 3; i++) tensor_free(in[i]);
        Tensor *many[10];
        int64_t m[] = {3, 2};
        for (int i = 0; i < 10; i++) many[i] = test_input("m", 2, m, 10 + i, 1, i % 3 != 1);
        CatCtx cm = {10, -1};
        gradcheck("concat of 10 tensors (staged past AG_MAX_INPUTS)", cat_fn, &cm, 10, many, 1e-2, 1e-3, 1e-5, 0);
        for (int i = 0; i < 10; i++) tensor_free(many[i]);
    }
    {
        int64_t s[] = {2, 6, 3};
        Tensor *x = test_input("x", 3, s, 20, 1, true);
        gradcheck("split [2,6,3] dim 1 into 1,3,2", split_fn, NULL, 1, &x, 1e-2, 1e-3, 1e-5, 0);
        gradcheck("chunk [2,6,3] into 3 along -1, piece 1", split_one_fn, NULL, 1, &x, 1e-2, 1e-3, 1e-5, 0);
        tensor_free(x);
    }
    {
        int64_t s[] = {3, 20};
        Tensor *x = test_input("x", 2, s, 21, 1, true);
        gradcheck("reshape twice, product of views", reshape_fn, NULL, 1, &x, 1e-2, 1e-3, 1e-5, 0);
        tensor_free(x);
    }
    {
        int64_t s[] = {2, 3, 4, 5}, s2[] = {1, 3, 5, 7};
        Tensor *x = test_input("x", 4, s, 22, 1, true);
        gradcheck("permute (2,0,3,1)", permute_fn, perm, 1, &x, 1e-2, 1e-3, 1e-5, 0);
        tensor_free(x);
        Tensor *y = test_input("y", 4, s2, 23, 1, true);
        gradcheck("pad2d (1,2,0,3) [1,3,5,7]", pad_fn, NULL, 1, &y, 1e-2, 1e-3, 1e-5, 0);
        gradcheck("upsample_nearest2x [1,3,5,7]", up_fn, NULL, 1, &y, 1e-2, 1e-3, 1e-5, 0);
        gradcheck("global_avg_pool [1,3,5,7]", gap_fn, NULL, 1, &y, 1e-2, 1e-3, 1e-5, 0);
        tensor_free(y);
        int64_t st[] = {5, 3};
        Tensor *t = test_input("table", 2, st, 24, 1, true);
        gradcheck("embedding with repeated ids", emb_fn, NULL, 1, &t, 1e-2, 1e-3, 1e-5, 0);
        tensor_free(t);
        int64_t sg[] = {2, 3, 5, 4};
        Tensor *g = test_input("x", 4, sg, 25, 1, true);
        gradcheck("gather_hw with repeated, unordered and unread rows/columns", gather_fn, NULL, 1, &g, 1e-2, 1e-3, 1e-5, 0);
        tensor_free(g);
    }
    expect_fatal("concat [2,3,4] with [2,5,3] on dim 1", cat_bad, NULL, (const char *[]){"op_concat", "[2, 5, 3]", "[2, 3, 4]", NULL});
    expect_fatal("reshape [2,3,4] to [5,5]", reshape_bad, NULL, (const char *[]){"op_reshape", "[2, 3, 4]", "[5, 5]", NULL});
    expect_fatal("chunk 7 into 2", chunk_bad, NULL, (const char *[]){"op_chunk", "[2, 7]", NULL});
    expect_fatal("pad2d on 3-d", pad_bad, NULL, (const char *[]){"op_pad2d", "[2, 3, 4]", NULL});
    expect_fatal("gather_hw row 3 of 3", gather_bad_index, NULL,
                 (const char *[]){"op_gather_hw", "row index 3 of output row 1", "[1, 2, 3, 4]", NULL});
    expect_fatal("gather_hw on 3-d", gather_bad_rank, NULL, (const char *[]){"op_gather_hw", "[2, 3, 4]", NULL});
    expect_fatal("embedding id 5 of 5 rows", emb_bad, NULL, (const char *[]){"op_embedding", "id 1 is 5", "[5, 3]", NULL});
    return check_summary();
}
