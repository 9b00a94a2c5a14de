// safetensors reader/writer: round trips of every dtype (zero-copy and converted loads), and corrupt
// files built byte by byte here, each of which must fail with its own status and message.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers/safetensors.h"
#include "tests/check.h"

static char dir[64];

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int slot;
    char *p = buf[slot++ & 3];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

// Writes an 8-byte length (hlen_override >= 0 replaces the real one), the header and n data bytes.
static const char *write_raw(const char *name, const char *header, long long hlen_override, size_t ndata) {
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    uint64_t hlen = hlen_override >= 0 ? (uint64_t)hlen_override : strlen(header);
    for (int i = 0; i < 8; i++) fputc((int)((hlen >> (8 * i)) & 0xff), f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < ndata; i++) fputc((int)(i * 7 & 0xff), f);
    fclose(f);
    return path;
}

// Opening path must fail with status want and a message containing each of the given fragments.
static void expect_error(const char *path, StStatus want, const char *frag1, const char *frag2) {
    SafeTensors *st = (SafeTensors *)0x1;
    char err[ST_ERR_LEN] = "";
    StStatus rc = safetensors_open(path, &st, err);
    CHECK(rc == want, "%s: status %d, want %d (%s)", path, rc, want, err);
    CHECK(st == NULL, "%s: failed open must not return a handle", path);
    CHECK(strstr(err, path) != NULL, "message must name the file: %s", err);
    CHECK(strstr(err, frag1) != NULL, "message '%s' lacks '%s'", err, frag1);
    if (frag2) CHECK(strstr(err, frag2) != NULL, "message '%s' lacks '%s'", err, frag2);
    printf("ok rejects %-22s -> %s\n", strrchr(path, '/') + 1, err);
}

static void test_round_trip(void) {
    int64_t s23[] = {2, 3}, s5[] = {5}, s3[] = {3}, s1111[] = {1, 1, 1, 1};
    Tensor *f32 = tensor_new_persistent("w.f32", 2, s23, DT_F32);
    Tensor *f16 = tensor_new_persistent("w.f16", 1, s5, DT_F16);
    Tensor *bf16 = tensor_new_persistent("w.bf16", 1, s3, DT_BF16);
    Tensor *i64 = tensor_new_persistent("steps \"quoted\"", 1, s3, DT_I64);
    Tensor *one = tensor_new_persistent("one", 4, s1111, DT_F32);
    float vals[6] = {1.5f, -2.25f, 3e-3f, 65504.0f, -0.0f, 1e-8f};
    memcpy(f32->data, vals, sizeof vals);
    for (int i = 0; i < 5; i++) ((uint16_t *)f16->data)[i] = f32_to_f16(vals[i]);
    for (int i = 0; i < 3; i++) ((uint16_t *)bf16->data)[i] = f32_to_bf16(vals[i]);
    int64_t ivals[3] = {-1, 1ll << 40, 999};
    memcpy(i64->data, ivals, sizeof ivals);
    ((float *)one->data)[0] = 7.0f;
    // f16 first: the writer must reorder so the f32 / i64 data stay aligned.
    Tensor *all[] = {f16, f32, bf16, i64, one};
    StMetadata meta[] = {{"format", "pt"}, {"note", "line\nbreak"}};
    char err[ST_ERR_LEN];
    const char *path = tmp_path("round.safetensors");
    CHECK(safetensors_save(path, all, 5, meta, 2, err) == ST_OK, "save: %s", err);
    char tmpname[64];
    snprintf(tmpname, sizeof tmpname, "round.safetensors.tmp.%d", (int)getpid());
    CHECK(access(tmp_path(tmpname), F_OK) != 0, "no temp file left behind");

    SafeTensors *st;
    CHECK(safetensors_open(path, &st, err) == ST_OK, "open: %s", err);
    if (!st) return;
    CHECK(safetensors_count(st) == 5, "count %d", safetensors_count(st));
    CHECK(safetensors_metadata(st, "format") && !strcmp(safetensors_metadata(st, "format"), "pt"), "metadata");
    CHECK(safetensors_metadata(st, "note") && !strcmp(safetensors_metadata(st, "note"), "line\nbreak"), "escaped");
    CHECK(safetensors_metadata(st, "absent") == NULL, "absent metadata key");
    CHECK(safetensors_find(st, "nope") == NULL, "absent tensor");
    for (int i = 0; i < 5; i++) {
        const StEntry *e = safetensors_find(st, all[i]->name);
        CHECK(e != NULL, "find %s", all[i]->name);
        if (!e) continue;
        CHECK(e->dtype == all[i]->dtype && e->ndim == all[i]->ndim && e->numel == all[i]->numel, "%s header", e->name);
        CHECK(((uintptr_t)safetensors_bytes(st, e) % dtype_size(e->dtype)) == 0, "%s aligned", e->name);
        Tensor *t;
        CHECK(safetensors_tensor(st, e, e->dtype, NULL, &t, err) == ST_OK, "tensor: %s", err);
        CHECK(!t->owns_data, "%s: same-dtype load is zero copy", e->name);
        CHECK(t->data == safetensors_bytes(st, e), "%s: points into the mapping", e->name);
        CHECK(memcmp(t->data, all[i]->data, (size_t)t->numel * dtype_size(t->dtype)) == 0, "%s bytes", e->name);
        CHECK(tensor_same_shape(t, all[i]), "%s shape %s", e->name, shape_str(t));
        tensor_free(t);
    }
    // Converted loads: one heap copy, values widened / rounded like f32_to_bf16.
    Tensor *t;
    CHECK(safetensors_tensor(st, safetensors_find(st, "w.f16"), DT_BF16, "renamed", &t, err) == ST_OK, "%s", err);
    CHECK(t->owns_data && t->dtype == DT_BF16 && !strcmp(t->name, "renamed"), "f16 -> bf16 copy");
    for (int i = 0; i < 5; i++)
        CHECK(((uint16_t *)t->data)[i] == f32_to_bf16(f16_to_f32(f32_to_f16(vals[i]))), "f16->bf16 elem %d", i);
    tensor_free(t);
    CHECK(safetensors_tensor(st, safetensors_find(st, "w.f32"), DT_BF16, NULL, &t, err) == ST_OK, "%s", err);
    for (int i = 0; i < 6; i++) CHECK(((uint16_t *)t->data)[i] == f32_to_bf16(vals[i]), "f32->bf16 elem %d", i);
    tensor_free(t);
    CHECK(safetensors_tensor(st, safetensors_find(st, "w.bf16"), DT_F32, NULL, &t, err) == ST_OK, "%s", err);
    for (int i = 0; i < 3; i++)
        CHECK(((float *)t->data)[i] == bf16_to_f32(f32_to_bf16(vals[i])), "bf16->f32 elem %d", i);
    tensor_free(t);
    CHECK(safetensors_tensor(st, safetensors_find(st, "w.f32"), DT_I64, NULL, &t, err) == ST_ERR_DTYPE && !t,
          "f32 -> i64 refused");
    CHECK(strstr(err, "w.f32") && strstr(err, "cannot be loaded as I64"), "names tensor: %s", err);
    safetensors_close(st);

    // Saving over an existing file replaces it (atomic rename).
    Tensor *only[] = {one};
    CHECK(safetensors_save(path, only, 1, NULL, 0, err) == ST_OK, "resave: %s", err);
    CHECK(safetensors_open(path, &st, err) == ST_OK && safetensors_count(st) == 1, "resaved has 1 tensor");
    safetensors_close(st);
    Tensor *dup[] = {one, one};
    CHECK(safetensors_save(tmp_path("dup.safetensors"), dup, 2, NULL, 0, err) == ST_ERR_DUPLICATE, "dup save");
    CHECK(safetensors_save("/nonexistent-dir/x.safetensors", only, 1, NULL, 0, err) == ST_ERR_IO, "bad dir");
    CHECK(strstr(err, "/nonexistent-dir/x.safetensors") != NULL, "names path: %s", err);
    tensor_free(f32); tensor_free(f16); tensor_free(bf16); tensor_free(i64); tensor_free(one);
}

static void test_corrupt(void) {
    const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    // Sanity: the well-formed version of the file opens.
    SafeTensors *st;
    char err[ST_ERR_LEN];
    CHECK(safetensors_open(write_raw("good.safetensors", ok, -1, 16), &st, err) == ST_OK, "good: %s", err);
    safetensors_close(st);

    expect_error(tmp_path("missing.safetensors"), ST_ERR_IO, "cannot open", NULL);
    FILE *f = fopen(tmp_path("tiny.safetensors"), "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    expect_error(tmp_path("tiny.safetensors"), ST_ERR_TRUNCATED, "shorter than the 8-byte header length", NULL);
    // Header length pointing past the end of the file (truncated header).
    expect_error(write_raw("hdr_past_eof.safetensors", ok, 4096, 16), ST_ERR_TRUNCATED,
                 "header length 4096 runs past the end of the file", NULL);
    // Whole header there, data cut short: the tensor's offsets run past the data section.
    expect_error(write_raw("truncated_data.safetensors", ok, -1, 10), ST_ERR_OFFSETS, "tensor w",
                 "past the end of the data section");
    expect_error(write_raw("begin_gt_end.safetensors",
                           "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", -1, 16),
                 ST_ERR_OFFSETS, "tensor w", "begin 16 > end 0");
    expect_error(write_raw("size_mismatch.safetensors",
                           "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", -1, 16),
                 ST_ERR_SIZE, "tensor w", "16 bytes in data_offsets but shape x F32 needs 24");
    expect_error(write_raw("bad_dtype.safetensors",
                           "{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", -1, 16),
                 ST_ERR_DTYPE, "unsupported dtype F64 for tensor w", NULL);
    expect_error(write_raw("not_json.safetensors", "{\"w\": dtype F32 }", -1, 16), ST_ERR_HEADER, "not valid JSON",
                 NULL);
    expect_error(write_raw("json_array.safetensors", "[1, 2, 3]", -1, 0), ST_ERR_HEADER, "does not start with '{'",
                 NULL);
    expect_error(write_raw("entry_not_obj.safetensors", "{\"w\": 3}", -1, 0), ST_ERR_HEADER, "tensor w",
                 "is not an object");
    expect_error(write_raw("neg_shape.safetensors",
                           "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", -1, 8),
                 ST_ERR_SHAPE, "tensor w", "shape entry 0 is not a non-negative integer");
    expect_error(write_raw("frac_offset.safetensors",
                           "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8]}}", -1, 8),
                 ST_ERR_OFFSETS, "tensor w", "data_offsets");
    expect_error(write_raw("overlap.safetensors",
                           "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                           "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[12,16]}}", -1, 16),
                 ST_ERR_OVERLAP, "tensors a [0, 16] and b [12, 16] overlap", NULL);
    // An overlap behind an empty tensor in between (empty tensors may sit anywhere).
    expect_error(write_raw("overlap_far.safetensors",
                           "{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                           "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]}}", -1, 32),
                 ST_ERR_OVERLAP, "tensors a [0, 32] and c [20, 24] overlap", NULL);
    expect_error(write_raw("duplicate.safetensors",
                           "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                           "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", -1, 8),
                 ST_ERR_DUPLICATE, "tensor w appears twice", NULL);
    expect_error(write_raw("bad_meta.safetensors", "{\"__metadata__\":{\"k\":1}}", -1, 0), ST_ERR_HEADER,
                 "__metadata__ value for k is not a string", NULL);

    // Empty tensors and metadata-only files are legal.
    CHECK(safetensors_open(write_raw("empty.safetensors",
                                     "{\"__metadata__\":{\"k\":\"v\"},\"z\":{\"dtype\":\"BF16\",\"shape\":[0,3],"
                                     "\"data_offsets\":[0,0]}}", -1, 0), &st, err) == ST_OK, "empty: %s", err);
    if (st) {
        CHECK(safetensors_count(st) == 1 && safetensors_find(st, "z")->numel == 0, "zero-size tensor");
        safetensors_close(st);
    }
}

// Every tensor handed out is finite: a NaN as stored, and a finite f32 beyond f16's range read as
// F16, are refused naming the file, the tensor, the value and the element; read as f32 / bf16 the
// large value is fine.
static void test_nonfinite(void) {
    int64_t shape[1] = {4};
    Tensor *a = tensor_new_persistent("w.nan", 1, shape, DT_F32), *b = tensor_new_persistent("w.big", 1, shape, DT_F32);
    float va[4] = {1, 2, NAN, 4}, vb[4] = {1, 1e30f, 3, 4};
    memcpy(a->data, va, sizeof va);
    memcpy(b->data, vb, sizeof vb);
    Tensor *all[2] = {a, b};
    char err[ST_ERR_LEN];
    const char *path = tmp_path("nonfinite.safetensors");
    CHECK(safetensors_save(path, all, 2, NULL, 0, err) == ST_OK, "%s", err);
    SafeTensors *st;
    CHECK(safetensors_open(path, &st, err) == ST_OK, "%s", err);
    Tensor *t = (Tensor *)0x1;
    CHECK(safetensors_tensor(st, safetensors_find(st, "w.nan"), DT_F32, NULL, &t, err) == ST_ERR_NONFINITE && t == NULL &&
          strstr(err, path) && strstr(err, "tensor w.nan holds a non-finite value (nan at element 2)"), "NaN: %s", err);
    CHECK(safetensors_tensor(st, safetensors_find(st, "w.big"), DT_F16, NULL, &t, err) == ST_ERR_NONFINITE &&
          strstr(err, "tensor w.big holds a non-finite value (inf at element 1, read as F16)"), "1e30 as F16: %s", err);
    DType fine[2] = {DT_F32, DT_BF16};
    for (int k = 0; k < 2; k++) {
        CHECK(safetensors_tensor(st, safetensors_find(st, "w.big"), fine[k], NULL, &t, err) == ST_OK, "1e30 as %s: %s",
              dtype_name(fine[k]), err);
        if (t && t != (Tensor *)0x1) tensor_free(t);
    }
    safetensors_close(st);
    tensor_free(a);
    tensor_free(b);
    printf("ok non-finite values refused when read\n");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dod_test_st_XXXXXX");
    if (!mkdtemp(dir)) dod_fatal("test_safetensors", "cannot create a temp dir");
    test_round_trip();
    test_corrupt();
    test_nonfinite();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    return check_summary();
}
