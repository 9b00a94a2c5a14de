// PyTorch checkpoint reader: the committed torch files (both formats, shared storages, strided views,
// every dtype; scripts/make_torch_ckpt_fixtures.py) read bit-exactly against the bytes torch holds;
// refused pickles name the global; truncated and corrupt files fail naming the file; pickles built
// here byte by byte exercise the unpickler's limits.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers/safetensors.h"
#include "layers/sd_weights.h"
#include "layers/torch_ckpt.h"
#include "tests/check.h"

#define FIX DOD_SOURCE_DIR "/tests/fixtures/torch_ckpt/"

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) dod_fatal("test_torch_ckpt", "%s: cannot open (run scripts/make_torch_ckpt_fixtures.py)", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) dod_fatal("test_torch_ckpt", "%s: short read", path);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

// Every tensor of expected_<stem>.txt (name dtype ndim dims... offset nbytes into .raw) must be in the
// checkpoint with that dtype and shape and read to exactly those bytes; and nothing else is listed.
static void check_against_expected(const char *ckpt, const char *expected_stem) {
    char path[1024];
    TorchCkpt *ck;
    char err[TORCH_ERR_LEN];
    int rc = torch_ckpt_open(ckpt, &ck, err);
    CHECK(rc == 0, "%s: %s", ckpt, err);
    if (rc) return;
    size_t nraw;
    snprintf(path, sizeof path, FIX "%s.raw", expected_stem);
    uint8_t *raw = slurp(path, &nraw);
    snprintf(path, sizeof path, FIX "%s.txt", expected_stem);
    FILE *f = fopen(path, "r");
    char name[512], dt[32];
    int ndim, lines = 0, exact = 0;
    while (fscanf(f, "%511s %31s %d", name, dt, &ndim) == 3) {
        long long shape[TORCH_MAX_DIMS], off, nbytes;
        for (int d = 0; d < ndim; d++) CHECK(fscanf(f, "%lld", &shape[d]) == 1, "expected.txt shape");
        CHECK(fscanf(f, "%lld %lld", &off, &nbytes) == 2, "expected.txt offsets");
        lines++;
        const TorchTensor *t = torch_ckpt_find(ck, name);
        CHECK(t != NULL, "%s: tensor %s missing", ckpt, name);
        if (!t) continue;
        bool same_shape = t->ndim == ndim;
        for (int d = 0; same_shape && d < ndim; d++) same_shape = t->shape[d] == shape[d];
        CHECK(same_shape, "%s: %s: shape differs", ckpt, name);
        CHECK(!strcmp(torch_dtype_name(t->dtype), dt), "%s: %s: dtype %s, want %s", ckpt, name, torch_dtype_name(t->dtype), dt);
        CHECK((long long)(t->numel * (int64_t)torch_dtype_size(t->dtype)) == nbytes, "%s: %s: size", ckpt, name);
        uint8_t *got = malloc((size_t)nbytes + 1);
        CHECK(torch_ckpt_read(ck, t, got, err) == 0, "%s", err);
        bool ok = off + nbytes <= (long long)nraw && !memcmp(got, raw + off, (size_t)nbytes);
        CHECK(ok, "%s: %s: bytes differ from what torch holds", ckpt, name);
        exact += ok;
        free(got);
    }
    fclose(f);
    CHECK(lines > 0 && torch_ckpt_count(ck) == lines, "%s lists %d tensors, torch %d", ckpt, torch_ckpt_count(ck), lines);
    printf("ok %s (%s): %d of %d tensors bit-exact\n", strrchr(ckpt, '/') + 1, torch_ckpt_format(ck), exact, lines);
    free(raw);
    torch_ckpt_close(ck);
}

static void expect_refused(const char *file, const char *frag1, const char *frag2) {
    char path[1024], err[TORCH_ERR_LEN] = "";
    snprintf(path, sizeof path, FIX "%s", file);
    TorchCkpt *ck = (TorchCkpt *)0x1;
    int rc = torch_ckpt_open(path, &ck, err);
    CHECK(rc == -1 && ck == NULL, "%s must be refused", file);
    CHECK(strstr(err, path) != NULL, "message must name the file: %s", err);
    CHECK(strstr(err, frag1) != NULL, "%s: message lacks '%s': %s", file, frag1, err);
    if (frag2) CHECK(strstr(err, frag2) != NULL, "%s: message lacks '%s': %s", file, frag2, err);
    // The tensor-file layer passes the refusal on.
    SafeTensors *st;
    char serr[ST_ERR_LEN];
    CHECK(tensor_file_open(path, &st, serr) == ST_ERR_TORCH && strstr(serr, frag1), "%s via tensor_file_open: %s", file, serr);
    printf("ok refuses %s: %s\n", file, err);
}

static void test_names(void) {
    TorchCkpt *ck;
    char err[TORCH_ERR_LEN];
    CHECK(torch_ckpt_open(FIX "lightning.ckpt", &ck, err) == 0, "%s", err);
    CHECK(torch_ckpt_count(ck) == 2 && torch_ckpt_find(ck, "model.w") && torch_ckpt_find(ck, "optimizer_states/0/exp_avg"),
          "lightning.ckpt: want model.w (state_dict/ dropped) and optimizer_states/0/exp_avg");
    float w[6];
    const TorchTensor *t = torch_ckpt_find(ck, "model.w");
    CHECK(t && torch_ckpt_read(ck, t, w, err) == 0 && w[0] == 0 && w[5] == 5, "model.w values");
    torch_ckpt_close(ck);
    CHECK(torch_ckpt_open(FIX "bare_tensor.pt", &ck, err) == 0, "%s", err);
    t = torch_ckpt_find(ck, "tensor");
    CHECK(torch_ckpt_count(ck) == 1 && t && t->ndim == 1 && t->shape[0] == 3 && t->storage_offset == 3,
          "bare tensor: one tensor named 'tensor', a view at offset 3");
    CHECK(t && torch_ckpt_read(ck, t, w, err) == 0 && w[0] == 3 && w[2] == 5, "bare tensor values");
    torch_ckpt_close(ck);
}

// The tensor-file handle: float64 presented as F32, integers and bools as I64, heap copies only.
static void test_tensor_file(void) {
    SafeTensors *st;
    char err[ST_ERR_LEN];
    CHECK(tensor_file_open(FIX "state_legacy.pt", &st, err) == ST_OK, "%s", err);
    const StEntry *f64 = safetensors_find(st, "dtypes/f64"), *u8 = safetensors_find(st, "dtypes/u8"),
                  *bf = safetensors_find(st, "dtypes/bf16"), *b = safetensors_find(st, "dtypes/bool");
    CHECK(f64 && u8 && bf && b, "entries listed");
    if (!(f64 && u8 && bf && b)) return;
    CHECK(f64->dtype == DT_F32 && !strcmp(tensor_file_stored_dtype(st, f64), "F64"), "f64 presented as F32");
    CHECK(u8->dtype == DT_I64 && !strcmp(tensor_file_stored_dtype(st, u8), "U8"), "u8 presented as I64");
    CHECK(safetensors_bytes(st, f64) == NULL, "no raw bytes for checkpoint entries");
    TorchCkpt *ck;
    char terr[TORCH_ERR_LEN];
    CHECK(torch_ckpt_open(FIX "state_legacy.pt", &ck, terr) == 0, "%s", terr);
    double d[15];
    torch_ckpt_read(ck, torch_ckpt_find(ck, "dtypes/f64"), d, terr);
    Tensor *t;
    CHECK(safetensors_tensor(st, f64, DT_F32, NULL, &t, err) == ST_OK && t->owns_data, "%s", err);
    bool ok = t->numel == 15 && t->shape[0] == 5 && t->shape[1] == 3;
    for (int i = 0; ok && i < 15; i++) ok = ((float *)t->data)[i] == (float)d[i];
    CHECK(ok, "f64 -> f32 = (float) of each double, in row-major order of the transposed view");
    tensor_free(t);
    CHECK(safetensors_tensor(st, u8, DT_I64, NULL, &t, err) == ST_OK, "%s", err);
    ok = t->numel == 24;
    for (int i = 0; ok && i < 24; i++) ok = ((int64_t *)t->data)[i] == i;   // (arange(-6, 18) + 6) as uint8
    CHECK(ok, "u8 -> i64 values");
    tensor_free(t);
    CHECK(safetensors_tensor(st, b, DT_I64, NULL, &t, err) == ST_OK, "%s", err);
    ok = true;
    for (int i = 0; ok && i < 24; i++) ok = ((int64_t *)t->data)[i] == ((i - 6) % 3 == 0);
    CHECK(ok, "bool -> i64 values");
    tensor_free(t);
    uint16_t h[12];
    torch_ckpt_read(ck, torch_ckpt_find(ck, "dtypes/bf16"), h, terr);
    CHECK(safetensors_tensor(st, bf, DT_F32, NULL, &t, err) == ST_OK, "%s", err);
    ok = true;
    for (int i = 0; ok && i < 12; i++) ok = ((float *)t->data)[i] == bf16_to_f32(h[i]);
    CHECK(ok, "bf16 -> f32 exact");
    tensor_free(t);
    CHECK(safetensors_tensor(st, u8, DT_F32, NULL, &t, err) == ST_ERR_DTYPE && strstr(err, "dtypes/u8"), "u8 as f32 refused: %s", err);
    torch_ckpt_close(ck);
    safetensors_close(st);
    // A safetensors file still opens as one.
    CHECK(tensor_file_open(DOD_SOURCE_DIR "/tests/fixtures/sd/sd1_tiny/ldm.safetensors", &st, err) == ST_OK &&
          safetensors_bytes(st, safetensors_entry(st, 0)) != NULL, "safetensors through tensor_file_open: %s", err);
    safetensors_close(st);
}

// The SD single-file fixture as a Lightning .ckpt (legacy format) loads to the same weights, bit for
// bit, as the safetensors it was made from.
static void test_sd_single_file(void) {
    const char *cfg = DOD_SOURCE_DIR "/tests/fixtures/sd/sd1_tiny/model";
    SdModel a, b;
    char *err = NULL;
    int ra = sd_model_load_single_file(DOD_SOURCE_DIR "/tests/fixtures/sd/sd1_tiny/ldm.safetensors", cfg, DT_F32, &a, &err);
    CHECK(ra == 0, "%s", err ? err : "");
    free(err);
    int rb = sd_model_load_single_file(FIX "sd1_tiny_ldm.ckpt", cfg, DT_F32, &b, &err);
    CHECK(rb == 0, "%s", err ? err : "");
    free(err);
    if (ra || rb) return;
    int same = 0, total = 0;
    ParamStore *pa[2] = {a.unet, a.vae}, *pb[2] = {b.unet, b.vae};
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < params_count(pa[p]); i++, total++) {
            Tensor *x = params_at(pa[p], i), *y = params_get(pb[p], x->name);
            same += y && y->numel == x->numel && !memcmp(x->data, y->data, sizeof(float) * (size_t)x->numel);
        }
    CHECK(total > 0 && same == total && params_count(a.unet) == params_count(b.unet) && b.n_other_tensors == a.n_other_tensors,
          "sd1_tiny_ldm.ckpt: %d of %d tensors equal the safetensors load", same, total);
    printf("ok sd1_tiny_ldm.ckpt: %d tensors bit-equal to ldm.safetensors\n", same);
    sd_model_free(&a);
    sd_model_free(&b);
}

// A NaN in a checkpoint's storage (state_legacy.pt with dtypes/f64's first value replaced, the 8
// bytes of that double found once in the file) is refused when the tensor is read, naming both.
static void test_nonfinite(void) {
    char err[ST_ERR_LEN], terr[TORCH_ERR_LEN];
    size_t n;
    uint8_t *data = slurp(FIX "state_legacy.pt", &n);
    TorchCkpt *ck;
    double d[15];
    CHECK(torch_ckpt_open(FIX "state_legacy.pt", &ck, terr) == 0 &&
          torch_ckpt_read(ck, torch_ckpt_find(ck, "dtypes/f64"), d, terr) == 0, "%s", terr);
    torch_ckpt_close(ck);
    int found = 0;
    size_t at = 0;
    for (size_t i = 0; i + 8 <= n; i++)
        if (!memcmp(data + i, &d[0], 8)) found++, at = i;
    CHECK(found == 1, "the first f64 value occurs %d times in the file", found);
    double nan = NAN;
    memcpy(data + at, &nan, 8);
    char path[64] = "/tmp/dod_test_torch_nan_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, data, n) == (ssize_t)n && close(fd) == 0, "writing %s", path);
    SafeTensors *st;
    Tensor *t = NULL;
    CHECK(tensor_file_open(path, &st, err) == ST_OK, "%s", err);
    CHECK(safetensors_tensor(st, safetensors_find(st, "dtypes/f64"), DT_F32, NULL, &t, err) == ST_ERR_NONFINITE &&
          t == NULL && strstr(err, path) && strstr(err, "tensor dtypes/f64 holds a non-finite value (nan at element") &&
          strstr(err, "read as F32"), "NaN in a PyTorch checkpoint: %s", err);
    CHECK(safetensors_tensor(st, safetensors_find(st, "dtypes/bf16"), DT_F32, NULL, &t, err) == ST_OK, "%s", err);
    tensor_free(t);
    safetensors_close(st);
    unlink(path);
    free(data);
}

// Every prefix of a file, and every single-byte corruption of its first `flip_bytes` bytes, must fail
// cleanly or (flips inside tensor data) open; a failure names the file.
static void test_truncated_and_corrupt(const char *file, size_t flip_bytes) {
    char path[1024], err[TORCH_ERR_LEN];
    snprintf(path, sizeof path, FIX "%s", file);
    size_t n;
    uint8_t *data = slurp(path, &n);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        TorchCkpt *ck;
        uint8_t *copy = malloc(len + 1);   // exact-size copy, so reading past it shows under ASan
        memcpy(copy, data, len);
        int rc = torch_ckpt_open_memory("cut.pt", copy, len, &ck, err);
        if (rc == 0 || !strstr(err, "cut.pt")) {
            if (bad++ < 3) fprintf(stderr, "%s cut to %zu bytes: rc %d: %s\n", file, len, rc, err);
            if (!rc) torch_ckpt_close(ck);
        }
        free(copy);
    }
    CHECK(bad == 0, "%s: %d truncations not refused", file, bad);
    int opened = 0, refused = 0;
    uint8_t *copy = malloc(n);
    for (size_t i = 0; i < flip_bytes && i < n; i++) {
        memcpy(copy, data, n);
        copy[i] ^= 0x5a;
        TorchCkpt *ck;
        if (torch_ckpt_open_memory("flip.pt", copy, n, &ck, err) == 0) {
            for (int k = 0; k < torch_ckpt_count(ck); k++) {   // reading must stay in bounds too
                const TorchTensor *t = torch_ckpt_tensor(ck, k);
                void *buf = malloc((size_t)t->numel * torch_dtype_size(t->dtype) + 1);
                torch_ckpt_read(ck, t, buf, err);
                free(buf);
            }
            torch_ckpt_close(ck);
            opened++;
        } else {
            refused++;
            if (!strstr(err, "flip.pt")) bad++;
        }
    }
    free(copy);
    CHECK(bad == 0, "%s: corrupt-file messages must name the file", file);
    printf("ok %s: %zu truncations refused; %d of %d single-byte corruptions refused, the rest read in bounds\n", file,
           n, refused, opened + refused);
    free(data);
}

// ---- pickles built byte by byte ------------------------------------------------------------------
typedef struct {
    uint8_t b[4096];
    size_t n;
} Buf;

static void put(Buf *p, const void *s, size_t n) {
    memcpy(p->b + p->n, s, n);
    p->n += n;
}
static void put_str(Buf *p, const char *s) {   // BINUNICODE
    uint32_t n = (uint32_t)strlen(s);
    put(p, "X", 1);
    put(p, &n, 4);
    put(p, s, n);
}
#define PUT(p, lit) put((p), (lit), sizeof(lit) - 1)

// A legacy checkpoint around main_pkl with one float storage "k" of `numel` elements (0: none).
static size_t legacy_file(uint8_t *out, const Buf *main_pkl, int numel) {
    Buf f = {.n = 0};
    PUT(&f, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    PUT(&f, "\x80\x02M\xe9\x03.");   // 1001
    PUT(&f, "\x80\x02}.");
    put(&f, main_pkl->b, main_pkl->n);
    if (numel) {
        PUT(&f, "\x80\x02]");
        put_str(&f, "k");
        PUT(&f, "a.");
        int64_t c = numel;
        put(&f, &c, 8);
        for (int i = 0; i < numel; i++) {
            float v = (float)i;
            put(&f, &v, 4);
        }
    } else {
        PUT(&f, "\x80\x02].");
    }
    memcpy(out, f.b, f.n);
    return f.n;
}

// {name: tensor of `size` elements, offset `off`, stride 1, over storage "k" of `numel` floats}
static void tensor_dict(Buf *p, int size, int off, int numel) {
    PUT(p, "\x80\x02}");
    put_str(p, "w");
    PUT(p, "ctorch._utils\n_rebuild_tensor_v2\n((");
    put_str(p, "storage");
    PUT(p, "ctorch\nFloatStorage\n");
    put_str(p, "k");
    put_str(p, "cpu");
    uint8_t sz[] = {'K', (uint8_t)numel, 'N', 't', 'Q', 'K', (uint8_t)off, 'K', (uint8_t)size, 0x85, 'K', 1, 0x85, 0x89, '}', 't', 'R', 's', '.'};
    put(p, sz, sizeof sz);
}

static void expect_legacy(const char *what, const Buf *main_pkl, int numel, const char *frag) {
    uint8_t file[8192];
    size_t n = legacy_file(file, main_pkl, numel);
    TorchCkpt *ck;
    char err[TORCH_ERR_LEN] = "";
    int rc = torch_ckpt_open_memory(what, file, n, &ck, err);
    if (!frag) {
        CHECK(rc == 0, "%s: %s", what, err);
        if (!rc) torch_ckpt_close(ck);
        return;
    }
    CHECK(rc == -1 && strstr(err, what) && strstr(err, frag), "%s: want an error with '%s', got rc %d: %s", what, frag, rc, err);
    if (rc == 0) torch_ckpt_close(ck);
    else printf("ok refuses %s: %s\n", what, err);
}

static void test_crafted(void) {
    Buf p = {.n = 0};
    tensor_dict(&p, 4, 0, 4);
    expect_legacy("good.pt", &p, 4, NULL);
    p.n = 0, tensor_dict(&p, 4, 1, 4);
    expect_legacy("past_storage.pt", &p, 4, "reaches element 4 of a storage of 4");
    p.n = 0, tensor_dict(&p, 4, 0, 4);
    expect_legacy("missing_storage.pt", &p, 0, "storage k is not in the storage key list");
    p.n = 0, tensor_dict(&p, 4, 0, 200);
    expect_legacy("count_mismatch.pt", &p, 4, "more than the file holds");

    const struct {
        const char *name, *pkl, *frag;
        size_t len;
    } cases[] = {
#define C(name, lit, frag) {name, lit, frag, sizeof(lit) - 1}
        C("inst.pt", "\x80\x02(ios\nsystem\n.", "INST (instance of global os.system)"),
        C("global.pt", "\x80\x02" "cbuiltins\ngetattr\n.", "global builtins.getattr is not allowed"),
        C("stack_global.pt", "\x80\x04\x8c\x02os\x8c\x06system\x93.", "global os.system is not allowed"),
        C("newobj.pt", "\x80\x02" "ccollections\nOrderedDict\n)\x81.", "NEWOBJ"),
        C("obj.pt", "\x80\x02(ccollections\nOrderedDict\no.", "OBJ"),
        C("ext.pt", "\x80\x02\x82\x01.", "EXT"),
        C("persid_text.pt", "\x80\x02P0\n.", "PERSID"),
        C("memo_skip.pt", "\x80\x02Nr\x00\x00\x01\x00.", "memo index 65536 runs ahead of the 1 values"),
        C("memo_unset.pt", "\x80\x02h\x05.", "memo index 5 was never stored"),
        C("long9.pt", "\x80\x02\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01.", "wider than 64 bits"),
        C("string_past_end.pt", "\x80\x02X\xff\xff\xff\x7f", "runs past the end"),
        C("underflow.pt", "\x80\x02s.", "stack underflow"),
        C("no_stop.pt", "\x80\x02N", "STOP with 2 values on the stack"),   // runs on into the key list
        C("unknown_op.pt", "\x80\x02\xff.", "unknown opcode 0xff"),
        C("protocol9.pt", "\x80\x09N.", "pickle protocol 9"),
        C("reduce_str.pt", "\x80\x02X\x01\x00\x00\x00" "a)R.", "REDUCE calls a str"),
        C("storage_call.pt", "\x80\x02" "ctorch\nFloatStorage\n)R.", "not callable"),
        C("build_list.pt", "\x80\x02]}b.", "BUILD on a list"),
        C("bad_pid.pt", "\x80\x02X\x01\x00\x00\x00xQ.", "persistent id is a str"),
        C("hooks.pt", "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
                      "X\x01\x00\x00\x00kX\x03\x00\x00\x00" "cpuK\x01NtQK\x00K\x01\x85K\x01\x85\x89}K\x01K\x02stR.",
          "1 backward hooks"),
        // Containers: a list holding itself, and a list referencing one list 2^40 times over.
        C("cycle.pt", "\x80\x02]q\x00h\x00" "a.", "nested deeper than 64"),
#undef C
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Buf b = {.n = 0};
        put(&b, cases[i].pkl, cases[i].len);
        expect_legacy(cases[i].name, &b, 0, cases[i].frag);
    }
    // A list containing one tensor-holding list twice, 40 levels deep: visiting it would take 2^40 steps.
    Buf b = {.n = 0};
    PUT(&b, "\x80\x02]");
    for (int i = 0; i < 40; i++) PUT(&b, "\x32\x86");   // DUP, TUPLE2: (x, x)
    PUT(&b, ".");
    expect_legacy("shared.pt", &b, 0, "more than 4194304 values to visit");
    // Deep MARK nesting is bounded.
    Buf m = {.n = 0};
    PUT(&m, "\x80\x02");
    for (int i = 0; i < 3000; i++) PUT(&m, "(");
    PUT(&m, ".");
    expect_legacy("marks.pt", &m, 0, "MARKs open");
}

int main(void) {
    check_against_expected(FIX "state_zip.pt", "expected");
    check_against_expected(FIX "state_legacy.pt", "expected");
    check_against_expected(FIX "state_archive.pt", "expected");
    check_against_expected(FIX "state_deflated.pt", "expected");
    check_against_expected(FIX "legacy_v1.pth", "legacy_v1_expected");
    test_names();
    test_tensor_file();
    test_nonfinite();
    test_sd_single_file();
    expect_refused("evil_global.pt", "global os.system is not allowed", NULL);
    expect_refused("evil_reduce.pt", "global posix.system is not allowed", NULL);
    expect_refused("evil_eval.pt", "global builtins.eval is not allowed", NULL);
    expect_refused("evil_inst.pt", "INST", "os.system");
    expect_refused("big_endian.pt", "byteorder is \"big\"", NULL);
    test_truncated_and_corrupt("state_legacy.pt", 3413);
    test_truncated_and_corrupt("state_zip.pt", 1200);
    test_truncated_and_corrupt("legacy_v1.pth", 728);
    test_crafted();
    return check_summary();
}
