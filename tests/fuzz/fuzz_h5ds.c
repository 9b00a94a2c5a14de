// Fuzz target: dod dataset files, by structured mutation. HDF5 files of random bytes mostly test
// libhdf5's own parser; what dod must survive is a well-formed HDF5 file whose contents are not
// what dod-data writes. So the input is read as a list of choices (tests/fuzz/fuzz_util.h) that
// build such a file with the HDF5 API: for the root, each task and each sample, every attribute
// the reader takes comes as the right thing or as another type, shape, size or value (NaN,
// negative, huge, arrays of fixed or variable-length strings), and every image dataset with chosen
// dimensions (up to 2^40 declared), element type, layout, chunk shape, filters, written or not,
// and with chunks overwritten by raw bytes. The empty input builds a valid file. Then everything a
// tool reads is read: open, sample sizes, whole samples in both read modes, crops, provenance and
// stored-noise attributes, and loader samples.
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>

#include "data/h5ds.h"
#include "data/loader.h"
#include "data/sample_noise.h"
#include "tests/fuzz/fuzz_util.h"

// Attribute `name` on obj: the intended value (choice 0) or a variant chosen by the input.
// kind: 0 string (want = its text), 1 int64 (want_i), 2 float64 list (want_d, n_d values).
static void put_attr(FuzzBytes *b, hid_t obj, const char *name, int kind, const char *want, int64_t want_i,
                     const double *want_d, int n_d) {
    unsigned v = fuzz_pick(b, 12);
    if (v == 11) return;   // absent
    hsize_t n = 1;
    int scalar = 1;
    if (v == 3 || v == 4 || v == 8) {   // lists of 0..20 elements
        n = fuzz_pick(b, 21);
        scalar = 0;
    }
    if (kind == 2 && v == 0) n = (hsize_t)n_d, scalar = n_d == 1;
    hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t type;
    size_t count = scalar ? 1 : (size_t)n;
    void *buf;
    if ((kind == 0 && v < 3) || v == 3 || v == 5) {   // fixed-length strings
        size_t len = kind == 0 && v == 0 ? strlen(want) + 1 : 1 + fuzz_pick(b, 4) * (1 + fuzz_u8(b)) * 64;
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, len);
        buf = calloc(count ? count : 1, len);
        for (size_t i = 0; i < count; i++) {
            char *s = (char *)buf + i * len;
            if (kind == 0 && v == 0) memcpy(s, want, len);
            else for (size_t k = 0; k + 1 < len; k++) s[k] = (char)('a' + fuzz_pick(b, 26));
        }
    } else if (v == 4 || v == 6) {   // variable-length strings
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, H5T_VARIABLE);
        buf = calloc(count ? count : 1, sizeof(char *));
        for (size_t i = 0; i < count; i++) ((const char **)buf)[i] = kind == 0 && fuzz_pick(b, 2) ? want : "x";
    } else if ((kind == 1 && v < 3) || v == 7 || v == 8) {   // int64
        type = H5Tcopy(H5T_NATIVE_INT64);
        buf = calloc(count ? count : 1, 8);
        for (size_t i = 0; i < count; i++)
            ((int64_t *)buf)[i] = v == 0 ? want_i : v == 1 ? want_i + (int64_t)fuzz_pick(b, 5) - 2 : (int64_t)fuzz_u64(b);
    } else {   // float64: the intended list, NaN / inf / huge / random bits
        type = H5Tcopy(H5T_NATIVE_DOUBLE);
        buf = calloc(count ? count : 1, 8);
        for (size_t i = 0; i < count; i++) {
            double d = want_d && (int)i < n_d ? want_d[i] : (double)want_i;
            unsigned w = fuzz_pick(b, 6);
            if (v != 0 && w == 1) d = NAN;
            if (v != 0 && w == 2) d = -INFINITY;
            if (v != 0 && w == 3) d = 1e300;
            if (v != 0 && w == 4) {
                uint64_t bits = fuzz_u64(b);
                memcpy(&d, &bits, 8);
            }
            ((double *)buf)[i] = d;
        }
    }
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Awrite(a, type, buf);
        H5Aclose(a);
    }
    free(buf);
    H5Tclose(type);
    H5Sclose(space);
}

// One image dataset `name` in group g: intended (h x w x 3 uint8, 16 x 16 x 3 deflate chunks,
// written) or a variant chosen by the input.
static void put_image(FuzzBytes *b, hid_t g, const char *name, int h, int w) {
    if (fuzz_pick(b, 16) == 15) return;   // missing
    hsize_t dims[4] = {(hsize_t)h, (hsize_t)w, 3, 1};
    int rank = 3;
    switch (fuzz_pick(b, 10)) {
    case 1: dims[0] = 1 + fuzz_pick(b, 200); dims[1] = 1 + fuzz_pick(b, 200); break;
    case 2: dims[0] = (hsize_t)1 << (20 + fuzz_pick(b, 21)); break;   // declared, never written
    case 3: dims[1] = ((hsize_t)1 << 32) + fuzz_pick(b, 128); break;
    case 4: dims[2] = fuzz_pick(b, 6); break;
    case 5: rank = 1 + (int)fuzz_pick(b, 4); break;
    default: break;
    }
    int huge = dims[0] > 4096 || dims[1] > 4096;
    hid_t types[4] = {H5T_STD_U8LE, H5T_STD_I8LE, H5T_STD_U16LE, H5T_IEEE_F32LE};
    hid_t type = types[fuzz_pick(b, 8) < 5 ? 0 : fuzz_pick(b, 4)];
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    unsigned layout = fuzz_pick(b, 8);
    hsize_t maxdims[4] = {H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED};
    int chunked = layout < 5 || huge;
    if (chunked) {
        hsize_t c[4] = {16, 16, 3, 1};
        if (layout == 1 || layout == 2)
            for (int k = 0; k < rank; k++) c[k] = 1 + fuzz_pick(b, 70);
        for (int k = 0; k < rank; k++)
            if (c[k] > dims[k] && layout != 2) c[k] = dims[k] ? dims[k] : 1;
        H5Pset_chunk(dcpl, rank, c);
        unsigned filters = layout == 0 ? 1 : fuzz_u8(b);
        if (filters & 2) H5Pset_shuffle(dcpl);
        if (filters & 1) H5Pset_deflate(dcpl, 1 + fuzz_pick(b, 9));
        if (filters & 4) H5Pset_fletcher32(dcpl);
        if (filters & 8) H5Pset_nbit(dcpl);
    } else if (layout == 6) {
        H5Pset_layout(dcpl, H5D_COMPACT);
    }
    hid_t space = H5Screate_simple(rank, dims, chunked ? maxdims : NULL);
    hid_t ds = H5Dcreate2(g, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (getenv("DOD_FUZZ_VERBOSE")) {
        hsize_t c[4] = {0};
        if (chunked) H5Pget_chunk(dcpl, 4, c);
        fprintf(stderr, "image %s: rank %d dims %llu %llu %llu %llu layout %u chunk %llu %llu %llu %llu filters %d\n", name,
                rank, (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)dims[2],
                (unsigned long long)dims[3], layout, (unsigned long long)c[0], (unsigned long long)c[1],
                (unsigned long long)c[2], (unsigned long long)c[3], H5Pget_nfilters(dcpl));
    }
    size_t total = 1;
    for (int k = 0; k < rank; k++) total *= dims[k];
    if (ds >= 0 && !huge && total > 0 && total <= (1u << 20) && fuzz_pick(b, 8) != 7) {   // (libhdf5 1.10.8 crashes writing a chunk of an empty dataset)
        uint8_t *pix = malloc(total ? total : 1);
        uint8_t seed = (uint8_t)fuzz_u8(b);
        for (size_t i = 0; i < total; i++) pix[i] = (uint8_t)(i * 31 + seed);
        H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pix);
        free(pix);
        if (chunked && fuzz_pick(b, 4) == 3) {   // one chunk replaced by raw bytes of a chosen size
            size_t n = 1 + fuzz_u8(b) * (1 + fuzz_pick(b, 64));
            uint8_t *raw = malloc(n ? n : 1);
            for (size_t i = 0; i < n; i++) raw[i] = (uint8_t)fuzz_u8(b);
            hsize_t off[4] = {0, 0, 0, 0};
            H5Dwrite_chunk(ds, H5P_DEFAULT, fuzz_pick(b, 4), off, n, raw);
            free(raw);
        }
    }
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(space);
    H5Pclose(dcpl);
}

static const char *const task_names[3] = {"dehaze", "denoise", "x"};

static void build(FuzzBytes *b, const char *path) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return;
    put_attr(b, f, "dod_format", 0, "dod-degradation-dataset", 0, NULL, 0);
    put_attr(b, f, "dod_format_version", 1, NULL, 1, NULL, 0);
    hid_t tasks = H5Gcreate2(f, "tasks", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int n_tasks = 1 + (int)fuzz_pick(b, 3);
    for (int t = 0; t < n_tasks; t++) {
        hid_t g = H5Gcreate2(tasks, task_names[t], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        int noise = t == 1;
        int n = 1 + (int)fuzz_pick(b, 3);
        double sig[3] = {15, 25, 50};
        put_attr(b, g, "lq_mode", 0, noise ? "gaussian_noise" : "stored", 0, NULL, 0);
        put_attr(b, g, "count", 1, NULL, n, NULL, 0);
        if (noise) put_attr(b, g, "noise_sigmas", 2, NULL, 0, sig, 3);
        for (int i = 0; i < n; i++) {
            char sname[16];
            snprintf(sname, sizeof sname, "%08d", i);
            if (fuzz_pick(b, 20) == 19) continue;   // a missing sample group
            hid_t s = H5Gcreate2(g, sname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            int h = 20 + (int)fuzz_pick(b, 30), w = 20 + (int)fuzz_pick(b, 30);
            put_image(b, s, "hq", h, w);
            if (!noise) put_image(b, s, "lq", h, w);
            put_attr(b, s, "hq_source", 0, "a.png", 0, NULL, 0);
            if (fuzz_pick(b, 2)) put_attr(b, s, "lq_source", 0, "b.png", 0, NULL, 0);
            if (fuzz_pick(b, 2)) {
                double sigma = 25;
                put_attr(b, s, "noise_sigma", 2, NULL, 0, &sigma, 1);
                put_attr(b, s, "noise_seed", 1, NULL, 7, NULL, 0);
            }
            H5Gclose(s);
        }
        if (fuzz_pick(b, 16) == 15) H5Lcreate_soft("/tasks/dehaze", g, "link", H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(g);
    }
    if (fuzz_pick(b, 16) == 15) H5Lcreate_external("/nonexistent.h5", "/x", tasks, "ext", H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(tasks);
    H5Fclose(f);
}

// Everything the tools read. DOD_FUZZ_VERBOSE=1 prints what was refused (to check a seed reaches
// the reads it is meant for).
static void exercise(const char *path) {
    char err[2048], buf[256];
    int verbose = getenv("DOD_FUZZ_VERBOSE") != NULL;
    H5ds *f = h5ds_open(path, err, sizeof err);
    if (!f) {
        if (verbose) fprintf(stderr, "open: %s\n", err);
        return;
    }
    for (int t = 0; t < h5ds_n_tasks(f); t++) {
        const H5dsTask *task = h5ds_task(f, t);
        if (task->count < 0 || task->count > 64) abort();   // bounded by the sample groups built
        h5ds_count_groups(f, t);
        for (int64_t i = 0; i < task->count; i++) {
            int h, w;
            if (h5ds_sample_size(f, t, i, &h, &w, err, sizeof err) == 0) {
                uint8_t crop[8 * 8 * 3];
                if (h >= 8 && w >= 8) h5ds_read_crop(f, t, i, H5DS_HQ, h - 8, w / 3, 8, 8, crop, err, sizeof err);
            }
            for (int direct = 1; direct >= 0; direct--) {
                h5ds_set_direct_chunks(f, direct);
                Image lq, hq;
                if (h5ds_read_sample(f, t, i, &lq, &hq, err, sizeof err) == 0) {
                    if (verbose) fprintf(stderr, "sample %s/%lld: %dx%d read\n", task->name, (long long)i, hq.h, hq.w);
                    image_free(&lq);
                    image_free(&hq);
                } else if (verbose) {
                    fprintf(stderr, "sample: %s\n", err);
                }
            }
            h5ds_sample_attr(f, t, i, "hq_source", buf, sizeof buf, err, sizeof err);
            h5ds_sample_attr(f, t, i, "lq_source", buf, sizeof buf, err, sizeof err);
            double sigma;
            uint64_t seed;
            h5_sample_noise(path, task->name, i, &sigma, &seed, err, sizeof err);
        }
    }
    // loader samples, synchronously: the crop, resize-small and noise paths
    LoaderConfig lc;
    loader_config_default(&lc);
    lc.path = path;
    lc.crop = 16;
    lc.n_threads = 0;
    int n = 0;
    for (int t = 0; t < h5ds_n_tasks(f) && n < 2; t++) {
        snprintf(lc.tasks[n].name, sizeof lc.tasks[n].name, "%s", h5ds_task(f, t)->name);
        lc.tasks[n++].count = 1;
    }
    lc.n_tasks = n;
    h5ds_close(f);
    if (n == 0) return;
    Loader *L = loader_open(&lc, err, sizeof err);
    if (!L) return;
    Batch batch;
    loader_batch_init(L, &batch);
    for (int64_t step = 0; step < 3; step++)
        if (loader_get(L, step, &batch, err, sizeof err)) {
            if (verbose) fprintf(stderr, "loader: %s\n", err);
            break;
        }
    batch_free(&batch);
    loader_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int quiet;
    if (!quiet) H5Eset_auto2(H5E_DEFAULT, NULL, NULL), quiet = 1;
    char path[256];
    fuzz_scratch(path, sizeof path, "data.h5");
    FuzzBytes b = {data, size, 0};
    build(&b, path);
    exercise(path);
    unlink(path);
    return 0;
}

int fuzz_write_seeds(const char *dir) {
    static const uint8_t valid[1] = {0};   // all choices 0: the file dod-data would write
    static const uint8_t array_attr[] = {3, 4};   // dod_format: a list of 4 fixed strings
    static const uint8_t list_count[] = {0, 0, 0, 2, 0, 4, 5};   // a task's count: a list of 5 integers
    static const uint8_t three_tasks[] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1};
    return fuzz_seed(dir, "valid", valid, sizeof valid) || fuzz_seed(dir, "array_attr", array_attr, sizeof array_attr) ||
           fuzz_seed(dir, "list_count", list_count, sizeof list_count) ||
           fuzz_seed(dir, "three_tasks", three_tasks, sizeof three_tasks);
}
