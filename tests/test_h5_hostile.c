// Hostile and broken dataset files: every attribute and image dataset the reader takes from a file is
// replaced, one at a time, by one of another shape, type, size or layout (made here with the raw
// HDF5 API), and the reader must refuse it with a message naming the file and the attribute or
// dataset, never read past a buffer (run under ASan with -DDOD_SANITIZE=ON), allocate what the
// file merely declares, or return fill values as data. Also: keyed_permute for any count, and the
// image caps of autograd/base.h with their environment overrides.
#include <hdf5.h>
#include <stdint.h>

#include "tests/check.h"
#include "tests/data_test_util.h"
#include "tests/h5_test_util.h"

#include "data/h5ds.h"
#include "data/keyed_rng.h"
#include "data/sample_noise.h"

static char root[256], base[300];
enum { SIDE = 24 };

// The pristine file: task "t" (stored, 2 samples of SIDE x SIDE with hq_source) and task "n"
// (gaussian_noise, sigmas 15 and 25, 1 sample, with stored-noise attributes on it).
static void make_base(void) {
    char err[1024];
    H5ds *f = h5ds_begin_write(base, 0, err, sizeof err);
    CHECK(f != NULL, "%s", err);
    double sig[2] = {15, 25};
    int t = h5ds_define_task(f, "t", LQ_STORED, NULL, 0, err, sizeof err);
    int n = h5ds_define_task(f, "n", LQ_GAUSSIAN_NOISE, sig, 2, err, sizeof err);
    for (int i = 0; i < 2; i++) {
        Image hq = image_alloc(SIDE, SIDE, 3), lq = image_alloc(SIDE, SIDE, 3);
        for (int k = 0; k < SIDE * SIDE * 3; k++) hq.pix[k] = (uint8_t)(k * 7 + i), lq.pix[k] = (uint8_t)(k * 3 + i);
        H5dsSampleMeta meta = {.hq_source = "a.png", .lq_source = "b.png"};
        CHECK(h5ds_append_sample(f, t, &hq, &lq, &meta, err, sizeof err) == i, "%s", err);
        if (i == 0) {
            H5dsSampleMeta noisy = {.hq_source = "c.png", .has_noise = 1, .noise_sigma = 25, .noise_seed = 7};
            CHECK(h5ds_append_sample(f, n, &hq, NULL, &noisy, err, sizeof err) == 0, "%s", err);
        }
        image_free(&hq);
        image_free(&lq);
    }
    CHECK(h5ds_commit(f, err, sizeof err) == 0, "%s", err);
}

// A copy of the base file named after the case; returns it opened read-write at `object`.
static hid_t file_w, obj_w;
static const char *case_file(const char *name, const char *object) {
    static char path[400];
    snprintf(path, sizeof path, "%s/%s.h5", root, name);
    CHECK(data_copy_file(base, path) == 0, "copy %s", path);
    file_w = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    obj_w = H5Oopen(file_w, object, H5P_DEFAULT);
    CHECK(file_w >= 0 && obj_w >= 0, "open %s in %s", object, path);
    return path;
}
static void case_done(void) {
    H5Oclose(obj_w);
    H5Fclose(file_w);
}

static void put_attr(const char *name, hid_t type, int n, const void *v) {
    CHECK(h5t_attr(obj_w, name, type, (hsize_t)n, v) == 0, "attribute %s", name);
}

// h5ds_open refuses the file with a message holding the path and want.
static void expect_open_refused(const char *path, const char *want, const char *what) {
    char err[2048] = "";
    H5ds *f = h5ds_open(path, err, sizeof err);
    CHECK(f == NULL && strstr(err, path) && strstr(err, want), "%s: opened=%d, message '%s' (want '%s')", what, f != NULL,
          err, want);
    h5ds_close(f);
}

// One attribute replaced per case: a list where one value belongs (fixed and variable-length
// strings, numbers), a string where a number belongs and the reverse, a 200 kB string, counts
// beyond the sample groups or negative.
typedef enum { A_FIXED, A_VLEN, A_INT, A_INT64, A_DOUBLE } AttrKind;

static void test_root_and_task_attributes(void) {
    const struct {
        const char *file, *object, *attr;
        AttrKind kind;
        int n;         // elements (0: a scalar)
        size_t size;   // fixed strings: bytes each
        double v;      // numbers: every element
        const char *want;
    } cases[] = {
        {"fmt_fixed_array", "/", "dod_format", A_FIXED, 4, 40, 0, "dod_format holds 4 values"},
        {"fmt_vlen_array", "/", "dod_format", A_VLEN, 3, 0, 0, "dod_format holds 3 values"},
        {"fmt_huge_string", "/", "dod_format", A_FIXED, 0, 200000, 0, "dod_format is a string of 200000 bytes"},
        {"fmt_int", "/", "dod_format", A_INT, 0, 0, 1, "dod_format is not a string"},
        {"version_array", "/", "dod_format_version", A_INT, 4, 0, 1, "dod_format_version holds 4 values"},
        {"version_string", "/", "dod_format_version", A_FIXED, 0, 4, 0, "dod_format_version is not an integer"},
        {"lq_mode_vlen_array", "/tasks/t", "lq_mode", A_VLEN, 5, 0, 0, "/tasks/t: attribute lq_mode holds 5 values"},
        {"lq_mode_fixed_array", "/tasks/t", "lq_mode", A_FIXED, 2, 6, 0, "/tasks/t: attribute lq_mode holds 2 values"},
        {"count_float", "/tasks/t", "count", A_DOUBLE, 0, 0, 2, "attribute count is not an integer"},
        {"count_huge", "/tasks/t", "count", A_INT64, 0, 0, 4611686018427387904.0,
         "count says 4611686018427387904 samples but the group holds 2"},
        {"count_1e15", "/tasks/t", "count", A_INT64, 0, 0, 1e15, "but the group holds 2"},
        {"count_negative", "/tasks/t", "count", A_INT64, 0, 0, -1, "attribute count is -1"},
        {"count_array", "/tasks/t", "count", A_INT64, 3, 0, 2, "attribute count holds 3 values"},
        {"sigma_nan", "/tasks/n", "noise_sigmas", A_DOUBLE, 2, 0, NAN, "noise_sigmas: value 0 is nan"},
        {"sigma_inf", "/tasks/n", "noise_sigmas", A_DOUBLE, 2, 0, INFINITY, "noise_sigmas: value 0 is inf"},
        {"sigma_zero", "/tasks/n", "noise_sigmas", A_DOUBLE, 1, 0, 0, "value 0 is 0 (must be in (0, 255])"},
        {"sigma_big", "/tasks/n", "noise_sigmas", A_DOUBLE, 1, 0, 300, "value 0 is 300 (must be in (0, 255])"},
        {"sigma_17", "/tasks/n", "noise_sigmas", A_DOUBLE, 17, 0, 20, "noise_sigmas holds 17 values"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *p = case_file(cases[k].file, cases[k].object);
        int count = cases[k].n ? cases[k].n : 1;
        int ints[32];
        int64_t i64s[32];
        double dbls[32];
        for (int i = 0; i < count; i++)
            ints[i] = (int)cases[k].v, i64s[i] = (int64_t)cases[k].v, dbls[i] = cases[k].v;
        if (cases[k].kind == A_FIXED)
            CHECK(h5t_fixed_strings(obj_w, cases[k].attr, (hsize_t)cases[k].n, cases[k].size, "stored") == 0, "%s",
                  cases[k].file);
        else if (cases[k].kind == A_VLEN)
            CHECK(h5t_vlen_strings(obj_w, cases[k].attr, (hsize_t)cases[k].n) == 0, "%s", cases[k].file);
        else
            put_attr(cases[k].attr, cases[k].kind == A_INT ? H5T_NATIVE_INT : cases[k].kind == A_INT64 ? H5T_NATIVE_INT64
                                                                                                   : H5T_NATIVE_DOUBLE,
                     cases[k].n, cases[k].kind == A_INT ? (void *)ints : cases[k].kind == A_INT64 ? (void *)i64s : (void *)dbls);
        case_done();
        expect_open_refused(p, cases[k].want, cases[k].file);
    }
    // a task that is an external link to another file, and one whose name is too long
    const char *p = case_file("task_external_link", "/tasks");
    H5Lcreate_external("/etc/hostname", "/x", obj_w, "ext", H5P_DEFAULT, H5P_DEFAULT);
    case_done();
    expect_open_refused(p, "/tasks/ext is a soft or external link", "external link task");
    p = case_file("task_long_name", "/tasks");
    char longname[100];
    memset(longname, 'a', 99);
    longname[99] = 0;
    H5Gclose(H5Gcreate2(obj_w, longname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    case_done();
    expect_open_refused(p, "longer than 63 characters", "long task name");
}

static void test_sample_attributes(void) {
    char err[2048], buf[64];
    const char *p = case_file("hq_source_array", "/tasks/t/00000000");
    CHECK(h5t_fixed_strings(obj_w, "hq_source", 3, 100, "abc") == 0, "hq_source");
    CHECK(h5t_vlen_strings(obj_w, "lq_source", 4) == 0, "lq_source");
    case_done();
    H5ds *f = h5ds_open(p, err, sizeof err);
    CHECK(f != NULL, "%s", err);
    if (f) {
        int t = h5ds_find_task(f, "t", err, sizeof err);
        CHECK(h5ds_sample_attr(f, t, 0, "hq_source", buf, sizeof buf, err, sizeof err) == -1 && strstr(err, p) &&
                  strstr(err, "00000000: attribute hq_source holds 3 values") && buf[0] == 0,
              "hq_source array: %s", err);
        CHECK(h5ds_sample_attr(f, t, 0, "lq_source", buf, sizeof buf, err, sizeof err) == -1 &&
                  strstr(err, "attribute lq_source holds 4 values"),
              "lq_source vlen array: %s", err);
        CHECK(h5ds_sample_attr(f, t, 1, "hq_source", buf, sizeof buf, err, sizeof err) == 0 && !strcmp(buf, "a.png"),
              "the untouched sample still reads: '%s' %s", buf, err);
        CHECK(h5ds_sample_attr(f, t, 1, "synth_params", buf, sizeof buf, err, sizeof err) == 0 && buf[0] == 0,
              "an absent attribute is empty");
        // a long fixed string truncates into the caller's buffer, terminated
        h5ds_close(f);
    }
    p = case_file("hq_source_long", "/tasks/t/00000001");
    CHECK(h5t_fixed_strings(obj_w, "hq_source", 1, 1000, "0123456789") == 0, "hq_source");
    case_done();
    f = h5ds_open(p, err, sizeof err);
    if (f) {
        CHECK(h5ds_sample_attr(f, h5ds_find_task(f, "t", NULL, 0), 1, "hq_source", buf, sizeof buf, err, sizeof err) == 0 && strlen(buf) == 63,
              "1000-byte string into 64 bytes: %zu", strlen(buf));
        h5ds_close(f);
    }

    double sigma;
    uint64_t seed;
    CHECK(h5_sample_noise(base, "n", 0, &sigma, &seed, err, sizeof err) == 1 && sigma == 25 && seed == 7,
          "stored noise of the base file: %s", err);
    const struct {
        const char *name;
        hid_t type;
        int n;
        double v[3];
        const char *want;
    } noise[] = {{"noise_sigma_array", H5T_NATIVE_DOUBLE, 3, {25, 25, 25}, "noise_sigma holds 3 values"},
                 {"noise_sigma_nan", H5T_NATIVE_DOUBLE, 0, {NAN}, "noise_sigma: value 0 is nan"},
                 {"noise_sigma_big", H5T_NATIVE_DOUBLE, 0, {1e300}, "noise_sigma is 1e+300"},
                 {"noise_seed_float", H5T_NATIVE_DOUBLE, 0, {7}, "noise_seed is not an integer"}};
    for (size_t k = 0; k < sizeof noise / sizeof noise[0]; k++) {
        p = case_file(noise[k].name, "/tasks/n/00000000");
        put_attr(strstr(noise[k].name, "seed") ? "noise_seed" : "noise_sigma", noise[k].type, noise[k].n, noise[k].v);
        case_done();
        CHECK(h5_sample_noise(p, "n", 0, &sigma, &seed, err, sizeof err) == -2 && strstr(err, p) &&
                  strstr(err, noise[k].want),
              "%s: %s", noise[k].name, err);
    }
}

// Replaces /tasks/t/00000000/hq by a dataset of shape dims (uint8 unless type given) created with
// dcpl; data (may be NULL: nothing written) is written whole.
static const char *image_case(const char *name, int ndim, const hsize_t *dims, hid_t type, hid_t dcpl,
                              const uint8_t *data) {
    const char *p = case_file(name, "/tasks/t/00000000");
    H5Ldelete(obj_w, "hq", H5P_DEFAULT);
    hsize_t maxdims[3] = {H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED};
    hid_t space = H5Screate_simple(ndim, dims, H5Pget_layout(dcpl) == H5D_CHUNKED ? maxdims : NULL);
    hid_t ds = H5Dcreate2(obj_w, "hq", type ? type : H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(ds >= 0, "create %s", name);
    if (data) CHECK(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, "write %s", name);
    H5Dclose(ds);
    H5Sclose(space);
    case_done();
    return p;
}

// Reads HQ 0 of task t of p, directly and through hyperslabs: with want_err it must fail with a
// message holding p and want_err; otherwise give exactly the h x w image want (whole, and a crop
// across chunk borders).
static void check_read(const char *p, const char *want_err, const uint8_t *want, int h, int w, const char *what) {
    char err[2048] = "";
    H5ds *f = h5ds_open(p, err, sizeof err);
    CHECK(f != NULL, "%s: %s", what, err);
    if (!f) return;
    int t = h5ds_find_task(f, "t", NULL, 0);
    for (int direct = 1; direct >= 0; direct--) {
        h5ds_set_direct_chunks(f, direct);
        Image img = {0};
        err[0] = 0;
        int rc = h5ds_read_image(f, t, 0, H5DS_HQ, &img, err, sizeof err);
        if (want_err) {
            CHECK(rc == -1 && strstr(err, p) && strstr(err, want_err), "%s (direct %d): message '%s' (want '%s')", what,
                  direct, err, want_err);
            continue;
        }
        CHECK(rc == 0 && img.h == h && img.w == w && !memcmp(img.pix, want, (size_t)h * w * 3), "%s (direct %d): %s",
              what, direct, rc ? err : "bytes differ");
        uint8_t crop[5 * 7 * 3];
        rc = h5ds_read_crop(f, t, 0, H5DS_HQ, 3, 2, 5, 7, crop, err, sizeof err);
        int same = rc == 0;
        for (int r = 0; same && r < 5; r++) same = !memcmp(crop + r * 7 * 3, want + ((size_t)(3 + r) * w + 2) * 3, 7 * 3);
        CHECK(same, "%s (direct %d): crop %s", what, direct, rc ? err : "bytes differ");
        image_free(&img);
    }
    h5ds_close(f);
}
static void expect_read_refused(const char *p, const char *want_err, const char *what) {
    check_read(p, want_err, NULL, 0, 0, what);
}
static void expect_read_equal(const char *p, const uint8_t *want, int h, int w, const char *what) {
    check_read(p, NULL, want, h, w, what);
}

static void test_image_datasets(void) {
    uint8_t pix[40 * 36 * 3];
    for (size_t k = 0; k < sizeof pix; k++) pix[k] = (uint8_t)(k * 13 + 5);
    hid_t chunked = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t c8[3] = {8, 8, 3};
    H5Pset_chunk(chunked, 3, c8);
    H5Pset_deflate(chunked, 4);
    hid_t contiguous = H5Pcreate(H5P_DATASET_CREATE);

    // declared sizes: 2^32 + 64 rows (truncated to 64 by an int cast), a 100000-pixel side, a
    // pixel count over the cap; none allocated before the refusal
    hsize_t tall[3] = {((hsize_t)1 << 32) + 64, 64, 3}, wide[3] = {16, 100000, 3}, big[3] = {16384, 16384, 3};
    expect_read_refused(image_case("dims_2p32", 3, tall, 0, chunked, NULL), "4294967360x64 (HxW) pixels exceeds the "
                        "largest side DOD_MAX_IMAGE_SIDE = 16384", "2^32 + 64 rows");
    expect_read_refused(image_case("dims_wide", 3, wide, 0, chunked, NULL), "DOD_MAX_IMAGE_SIDE", "100000 wide");
    expect_read_refused(image_case("dims_pixels", 3, big, 0, chunked, NULL), "exceeds DOD_MAX_IMAGE_PIXELS = 67108864",
                        "16384^2 pixels");
    hsize_t rank2[2] = {24, 24}, four[3] = {24, 24, 4};
    expect_read_refused(image_case("rank2", 2, rank2, 0, contiguous, NULL), "is not a uint8 [H, W, 3] image", "rank 2");
    expect_read_refused(image_case("channels4", 3, four, 0, contiguous, NULL), "is not a uint8", "4 channels");
    hsize_t img[3] = {40, 36, 3};
    expect_read_refused(image_case("int8", 3, img, H5T_STD_I8LE, contiguous, pix), "is not a uint8", "signed bytes");
    expect_read_refused(image_case("float", 3, img, H5T_IEEE_F32LE, contiguous, pix), "is not a uint8", "floats");

    // never written: chunks (deflate and none) and contiguous storage; libhdf5 would return zeros
    expect_read_refused(image_case("unwritten_chunks", 3, img, 0, chunked, NULL), "never written",
                        "chunked, nothing written");
    expect_read_refused(image_case("unwritten_contiguous", 3, img, 0, contiguous, NULL), "storage was never written",
                        "contiguous, nothing written");

    // layouts read correctly: contiguous, compact, chunks of 1 or 2 channels with shuffle + deflate
    expect_read_equal(image_case("contiguous", 3, img, 0, contiguous, pix), pix, 40, 36, "contiguous");
    hid_t compact = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_layout(compact, H5D_COMPACT);
    expect_read_equal(image_case("compact", 3, img, 0, compact, pix), pix, 40, 36, "compact");
    hsize_t c_odd[3][3] = {{7, 5, 1}, {16, 9, 2}, {40, 36, 3}};
    for (int k = 0; k < 3; k++) {
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 3, c_odd[k]);
        if (k < 2) H5Pset_shuffle(dcpl);
        if (k != 2) H5Pset_deflate(dcpl, 6);
        char name[32];
        snprintf(name, sizeof name, "chunks_%d", k);
        expect_read_equal(image_case(name, 3, img, 0, dcpl, pix), pix, 40, 36, name);
        H5Pclose(dcpl);
    }

    // filters and chunk shapes refused by name
    hid_t fletcher = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(fletcher, 3, c8);
    H5Pset_fletcher32(fletcher);
    expect_read_refused(image_case("fletcher32", 3, img, 0, fletcher, pix), "the fletcher32 filter, which dod does not "
                        "read", "fletcher32");
    hid_t nbit = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(nbit, 3, c8);
    H5Pset_nbit(nbit);
    expect_read_refused(image_case("nbit", 3, img, 0, nbit, pix), "the nbit filter", "nbit");
    hid_t bigchunk = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t c64[3] = {64, 64, 3};
    H5Pset_chunk(bigchunk, 3, c64);
    expect_read_refused(image_case("chunk_over_image", 3, img, 0, bigchunk, pix),
                        "chunk shape 64x64x3 does not fit inside the 40x36x3 image", "chunk larger than the image");

    // chunks whose stored bytes lie: too many (60000 for a chunk of 192 bytes), garbage, and raw bytes of the wrong size
    const struct {
        const char *name;
        size_t bytes;
        uint32_t mask;
        const char *want;
    } raw[] = {{"chunk_60k", 60000, 0, "declares 60000 bytes, more than the 205 a 8x8x3 chunk can take"},
               {"chunk_garbage", 50, 0, "inflate failed"},
               {"chunk_raw_short", 100, 1, "decodes to 100 bytes, expected 192"}};
    for (size_t k = 0; k < sizeof raw / sizeof raw[0]; k++) {
        const char *p = image_case(raw[k].name, 3, img, 0, chunked, pix);
        file_w = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t ds = H5Dopen2(file_w, "/tasks/t/00000000/hq", H5P_DEFAULT);
        uint8_t *junk = calloc(raw[k].bytes, 1);
        for (size_t b = 0; b < raw[k].bytes; b++) junk[b] = (uint8_t)(b * 31 + 1);
        hsize_t off[3] = {8, 8, 0};
        CHECK(H5Dwrite_chunk(ds, H5P_DEFAULT, raw[k].mask, off, raw[k].bytes, junk) >= 0, "write_chunk %s", raw[k].name);
        free(junk);
        H5Dclose(ds);
        H5Fclose(file_w);
        char err[2048] = "";
        H5ds *f = h5ds_open(p, err, sizeof err);
        Image im;
        CHECK(f && h5ds_read_image(f, h5ds_find_task(f, "t", NULL, 0), 0, H5DS_HQ, &im, err, sizeof err) == -1 && strstr(err, raw[k].want),
              "%s: '%s'", raw[k].name, err);
        h5ds_close(f);
    }

    // An unfiltered chunk replaced, through the same open dataset that wrote it, by one stored
    // longer than its shape: H5Dget_chunk_storage_size then reports the nominal 5 bytes while
    // H5Dread_chunk copies the 267 stored (found by fuzzing: a heap overflow of the chunk buffer).
    {
        hsize_t d513[3] = {5, 1, 3}, c511[3] = {5, 1, 1}, off[3] = {0, 0, 0};
        const char *p = case_file("chunk_unfiltered_long", "/tasks/t/00000000");
        H5Ldelete(obj_w, "hq", H5P_DEFAULT);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 3, c511);
        hsize_t maxdims[3] = {H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED};
        hid_t space = H5Screate_simple(3, d513, maxdims);
        hid_t ds = H5Dcreate2(obj_w, "hq", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        uint8_t junk[267];
        memset(junk, 7, sizeof junk);
        CHECK(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pix) >= 0 &&
                  H5Dwrite_chunk(ds, H5P_DEFAULT, 1, off, sizeof junk, junk) >= 0,
              "write 267 bytes as a 5-byte chunk");
        H5Dclose(ds);
        H5Sclose(space);
        H5Pclose(dcpl);
        case_done();
        expect_read_refused(p, "declares 267 bytes, more than the 5 a 5x1x1 chunk can take", "unfiltered chunk stored long");
    }

    // a soft link where a sample's image should be is not followed
    const char *p = case_file("soft_link_image", "/tasks/t/00000000");
    H5Ldelete(obj_w, "hq", H5P_DEFAULT);
    H5Lcreate_soft("/tasks/t/00000001/hq", obj_w, "hq", H5P_DEFAULT, H5P_DEFAULT);
    case_done();
    expect_read_refused(p, "/tasks/t/00000000/hq is a soft or external link", "soft link");

    H5Pclose(chunked);
    H5Pclose(contiguous);
    H5Pclose(compact);
    H5Pclose(fletcher);
    H5Pclose(nbit);
    H5Pclose(bigchunk);
}

// The caps follow their environment variables.
static void test_caps_env(void) {
    char err[2048];
    H5ds *f = h5ds_open(base, err, sizeof err);
    Image img;
    setenv("DOD_MAX_IMAGE_SIDE", "20", 1);
    CHECK(h5ds_read_image(f, h5ds_find_task(f, "t", NULL, 0), 0, H5DS_HQ, &img, err, sizeof err) == -1 && strstr(err, "DOD_MAX_IMAGE_SIDE = 20"),
          "side cap 20: %s", err);
    unsetenv("DOD_MAX_IMAGE_SIDE");
    setenv("DOD_MAX_IMAGE_PIXELS", "575", 1);
    CHECK(h5ds_read_image(f, h5ds_find_task(f, "t", NULL, 0), 0, H5DS_HQ, &img, err, sizeof err) == -1 && strstr(err, "DOD_MAX_IMAGE_PIXELS = 575"),
          "pixel cap 575: %s", err);
    setenv("DOD_MAX_IMAGE_PIXELS", "576", 1);
    CHECK(h5ds_read_image(f, h5ds_find_task(f, "t", NULL, 0), 0, H5DS_HQ, &img, err, sizeof err) == 0, "pixel cap 576 = 24 x 24: %s", err);
    image_free(&img);
    unsetenv("DOD_MAX_IMAGE_PIXELS");
    h5ds_close(f);
}

// keyed_permute is a bijection for small n and ends, inside [0, n), for every n up to 2^64 - 1
// (a domain of 2^64 needs 32-bit halves: no shift by 64).
static void test_keyed_permute(void) {
    enum { N = 1000 };
    static uint8_t seen[N];
    for (uint64_t i = 0; i < N; i++) seen[keyed_permute(42, N, i)]++;
    int bijective = 1;
    for (int i = 0; i < N; i++) bijective &= seen[i] == 1;
    CHECK(bijective, "keyed_permute(1000) is a permutation");
    const uint64_t ns[] = {2, 3, ((uint64_t)1 << 62) - 1, ((uint64_t)1 << 62) + 1, (uint64_t)1 << 63,
                           ((uint64_t)1 << 63) + 12345, UINT64_MAX};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (uint64_t i = 0; i < 64; i++) {
            uint64_t idx = i * 0x9E3779B97F4A7C15ull % ns[k];
            uint64_t x = keyed_permute(7 + i, ns[k], idx);
            CHECK(x < ns[k], "keyed_permute(n %llu, i %llu) = %llu", (unsigned long long)ns[k], (unsigned long long)idx,
                  (unsigned long long)x);
        }
    CHECK(keyed_permute(1, 0, 5) == 0 && keyed_permute(1, 1, 0) == 0, "n 0 and 1");
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    data_scratch_dir("h5hostile", root, sizeof root);
    snprintf(base, sizeof base, "%s/base.h5", root);
    make_base();
    test_root_and_task_attributes();
    test_sample_attributes();
    test_image_datasets();
    test_caps_env();
    test_keyed_permute();
    data_rm_rf(root);
    return check_summary();
}
