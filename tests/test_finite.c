// autograd/finite.c: the first NaN or infinity of a tensor, in every float dtype, at every position
// of the block scan (first, inside, last of a block, the last element, none), of values or of
// gradient buffers; and the value read back for the message.
#include "tests/check.h"

#include "autograd/finite.h"

static void test_positions(void) {
    enum { N = 3 * 4096 + 5 };   // the scan works in blocks of 4096
    static float x[N];
    const int64_t at[] = {0, 1, 4095, 4096, 8191, 9000, N - 1};
    CHECK(dod_first_nonfinite_f32(x, N) == -1, "all finite");
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++)
        for (int kind = 0; kind < 3; kind++) {
            x[at[k]] = kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
            CHECK(dod_first_nonfinite_f32(x, N) == at[k], "kind %d at %lld: %lld", kind, (long long)at[k],
                  (long long)dod_first_nonfinite_f32(x, N));
            x[at[k]] = 3.4e38f;   // the largest finite values are not flagged
            CHECK(dod_first_nonfinite_f32(x, N) == -1, "3.4e38 at %lld", (long long)at[k]);
            x[at[k]] = 0;
        }
    x[100] = NAN;
    x[50] = 3.4e38f;   // a large finite value before it in the same block is passed over
    CHECK(dod_first_nonfinite_f32(x, N) == 100, "NaN after 3.4e38: %lld", (long long)dod_first_nonfinite_f32(x, N));
    x[50] = INFINITY;
    CHECK(dod_first_nonfinite_f32(x, N) == 50, "the first of two");
}

static void test_dtypes_and_grads(void) {
    int64_t shape[1] = {10};
    DType dts[3] = {DT_F32, DT_BF16, DT_F16};
    for (int d = 0; d < 3; d++) {
        Tensor *t = tensor_new_persistent("w", 1, shape, DT_F32);
        tensor_fill(t, 65000.0f);   // finite in every dtype (f16's largest is 65504)
        tensor_data_f32(t)[7] = NAN;
        tensor_convert_dtype(t, dts[d]);
        CHECK(tensor_first_nonfinite(t) == 7 && isnan(tensor_value_at(t, 7)), "%s NaN at 7", dtype_name(dts[d]));
        tensor_free(t);
        t = tensor_new_persistent("w", 1, shape, DT_F32);
        tensor_data_f32(t)[3] = 1e30f;   // overflows to infinity in f16 only
        tensor_convert_dtype(t, dts[d]);
        CHECK(tensor_first_nonfinite(t) == (dts[d] == DT_F16 ? 3 : -1), "%s 1e30", dtype_name(dts[d]));
        tensor_free(t);
    }
    Tensor *a = tensor_new_persistent("a", 1, shape, DT_F32), *b = tensor_new_persistent("b", 1, shape, DT_F32);
    Tensor *both[2] = {a, b};
    int64_t index = -1;
    double value = 0;
    CHECK(tensors_first_nonfinite(both, 2, true, &index, &value) == -1, "no gradient buffers: nothing to find");
    tensor_grad(a);
    tensor_grad(b)[4] = -INFINITY;
    CHECK(tensors_first_nonfinite(both, 2, true, &index, &value) == 1 && index == 4 && isinf(value) && value < 0,
          "gradient of b at 4: %lld %g", (long long)index, value);
    CHECK(tensors_first_nonfinite(both, 2, false, &index, &value) == -1, "the values are finite");
    tensor_data_f32(a)[9] = NAN;
    CHECK(tensors_first_nonfinite(both, 2, false, &index, &value) == 0 && index == 9, "value of a at 9");
    tensor_free(a);
    tensor_free(b);
}

int main(void) {
    test_positions();
    test_dtypes_and_grads();
    return check_summary();
}
