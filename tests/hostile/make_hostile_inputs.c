// Writes malformed inputs for tests/cli_hostile_inputs.sh, at test time (no committed binaries, no
// Python):
//   dod-make-hostile h5 DIR             dataset files, each broken in one way, into DIR/*.h5
//   dod-make-hostile images DIR         image files, each in its own folder DIR/<name>/
//   dod-make-hostile patch FILE OLD NEW replaces the first OLD in FILE by NEW (same length)
//   dod-make-hostile nan FILE TENSOR    makes the first value of TENSOR in a safetensors FILE a NaN
//   dod-make-hostile set FILE TENSOR V  sets it to the number V instead
// Exit 0 on success; 1 with a message otherwise.
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/h5ds.h"
#include "layers/safetensors.h"
#include "tests/h5_test_util.h"

static char dir[2048];

static void die(const char *what) {
    fprintf(stderr, "dod-make-hostile: %s\n", what);
    exit(1);
}

static char *path_of(const char *name) {
    static char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    void *buf = malloc(*n ? *n : 1);
    if (fread(buf, 1, *n, f) != *n) die(path);
    fclose(f);
    return buf;
}

static void write_all(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f)) die(path);
}

// ---- dataset files ------------------------------------------------------------------------------
// base.h5: task dehaze (stored, 2 samples of 32x32) and task denoise (gaussian_noise, sigma 25, 2
// samples, stored-noise attributes on them), what dod-data writes.
static void make_base(const char *path) {
    char err[1024];
    H5ds *f = h5ds_begin_write(path, 0, err, sizeof err);
    if (!f) die(err);
    double sigma = 25;
    int t = h5ds_define_task(f, "dehaze", LQ_STORED, NULL, 0, err, sizeof err);
    int n = h5ds_define_task(f, "denoise", LQ_GAUSSIAN_NOISE, &sigma, 1, err, sizeof err);
    for (int i = 0; i < 2; i++) {
        Image hq = image_alloc(32, 32, 3), lq = image_alloc(32, 32, 3);
        for (int k = 0; k < 32 * 32 * 3; k++) hq.pix[k] = (uint8_t)(k * 7 + i), lq.pix[k] = (uint8_t)(k * 5 + i);
        H5dsSampleMeta meta = {.hq_source = "a.png", .has_noise = 1, .noise_sigma = 25, .noise_seed = 3};
        if (h5ds_append_sample(f, t, &hq, &lq, &meta, err, sizeof err) < 0 ||
            h5ds_append_sample(f, n, &hq, NULL, &meta, err, sizeof err) < 0)
            die(err);
        image_free(&hq);
        image_free(&lq);
    }
    if (h5ds_commit(f, err, sizeof err)) die(err);
}

static hid_t file_w, obj_w;

// A copy of base.h5 named name, opened read-write at object.
static void begin(const char *name, const char *object) {
    size_t n;
    void *bytes = read_all(path_of("base.h5"), &n);
    write_all(path_of(name), bytes, n);
    free(bytes);
    file_w = H5Fopen(path_of(name), H5F_ACC_RDWR, H5P_DEFAULT);
    obj_w = file_w < 0 ? -1 : H5Oopen(file_w, object, H5P_DEFAULT);
    if (obj_w < 0) die(name);
}
static void end(void) {
    H5Oclose(obj_w);
    H5Fclose(file_w);
}

static void attr(const char *name, hid_t type, hsize_t n, const void *v) {
    if (h5t_attr(obj_w, name, type, n, v)) die(name);
}
static void fixed_strings(const char *name, hsize_t n, size_t size) {
    if (h5t_fixed_strings(obj_w, name, n, size, "x")) die(name);
}
static void vlen_strings(const char *name, hsize_t n) {
    if (h5t_vlen_strings(obj_w, name, n)) die(name);
}

// Replaces hq of the current sample group by a dataset of dims (chunk c; NULL: contiguous).
static hid_t image(const hsize_t *dims, const hsize_t *c, hid_t type, int deflate, int fletcher) {
    H5Ldelete(obj_w, "hq", H5P_DEFAULT);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t maxdims[3] = {H5S_UNLIMITED, H5S_UNLIMITED, H5S_UNLIMITED};
    if (c) H5Pset_chunk(dcpl, 3, c);
    if (deflate) H5Pset_deflate(dcpl, 4);
    if (fletcher) H5Pset_fletcher32(dcpl);
    hid_t space = H5Screate_simple(3, dims, c ? maxdims : NULL);
    hid_t ds = H5Dcreate2(obj_w, "hq", type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sclose(space);
    H5Pclose(dcpl);
    if (ds < 0) die("image dataset");
    return ds;
}

static void write_h5(void) {
    make_base(path_of("base.h5"));
    begin("str_array_fixed.h5", "/");   // the overflow of issue 24: an array where one string belongs
    fixed_strings("dod_format", 4, 64);
    end();
    begin("str_array_vlen.h5", "/tasks/dehaze");
    vlen_strings("lq_mode", 4);
    end();
    begin("hq_source_array.h5", "/tasks/dehaze/00000001");
    fixed_strings("hq_source", 3, 300);
    end();
    begin("hq_source_vlen_array.h5", "/tasks/dehaze/00000000");
    vlen_strings("hq_source", 2);
    end();
    int64_t big = (int64_t)1 << 62, e15 = 1000000000000000;
    begin("count_2p62.h5", "/tasks/dehaze");
    attr("count", H5T_NATIVE_INT64, 0, &big);
    end();
    begin("count_1e15.h5", "/tasks/denoise");
    attr("count", H5T_NATIVE_INT64, 0, &e15);
    end();
    double nan = NAN, inf = INFINITY;
    begin("nan_sigma.h5", "/tasks/denoise");
    attr("noise_sigmas", H5T_NATIVE_DOUBLE, 0, &nan);
    end();
    begin("sample_noise_sigma_inf.h5", "/tasks/denoise/00000001");
    attr("noise_sigma", H5T_NATIVE_DOUBLE, 0, &inf);
    end();
    hsize_t tall[3] = {((hsize_t)1 << 32) + 64, 64, 3}, c64[3] = {64, 64, 3};
    begin("dims_2p32.h5", "/tasks/dehaze/00000000");   // int truncation made this 64 rows
    H5Dclose(image(tall, c64, H5T_STD_U8LE, 1, 0));
    end();
    hsize_t big_unwritten[3] = {100000, 100000, 3};
    begin("declared_30gb.h5", "/tasks/dehaze/00000001");   // declared, never written
    H5Dclose(image(big_unwritten, c64, H5T_STD_U8LE, 1, 0));
    end();
    hsize_t within[3] = {8000, 8000, 3};
    begin("unwritten_8000.h5", "/tasks/dehaze/00000000");   // within the caps, no chunk stored
    H5Dclose(image(within, c64, H5T_STD_U8LE, 1, 0));
    end();
    uint8_t pix[32 * 32 * 3];
    for (size_t k = 0; k < sizeof pix; k++) pix[k] = (uint8_t)k;
    hsize_t d32[3] = {32, 32, 3}, c8[3] = {8, 8, 3}, c511[3] = {5, 1, 1}, d513[3] = {5, 1, 3}, off[3] = {0, 0, 0};
    begin("fletcher32.h5", "/tasks/dehaze/00000000");
    hid_t ds = image(d32, c8, H5T_STD_U8LE, 1, 1);
    H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pix);
    H5Dclose(ds);
    end();
    begin("signed_int8.h5", "/tasks/dehaze/00000000");
    ds = image(d32, NULL, H5T_STD_I8LE, 0, 0);
    H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pix);
    H5Dclose(ds);
    end();
    static uint8_t junk[60000];
    memset(junk, 0xAB, sizeof junk);
    begin("chunk_size_60000.h5", "/tasks/dehaze/00000000");   // chunks of 192 bytes stored as 60000
    ds = image(d32, c8, H5T_STD_U8LE, 1, 0);
    H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pix);
    for (hsize_t y = 0; y < 32; y += 8)
        for (hsize_t x = 0; x < 32; x += 8) {
            hsize_t at[3] = {y, x, 0};
            if (H5Dwrite_chunk(ds, H5P_DEFAULT, 0, at, sizeof junk, junk) < 0) die("write_chunk");
        }
    H5Dclose(ds);
    end();
    begin("chunk_short_unfiltered.h5", "/tasks/dehaze/00000001");   // the index says 267 bytes of a 5-byte chunk
    ds = image(d513, c511, H5T_STD_U8LE, 0, 0);
    H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pix);
    if (H5Dwrite_chunk(ds, H5P_DEFAULT, 1, off, 267, junk) < 0) die("write_chunk");
    H5Dclose(ds);
    end();
    begin("external_link.h5", "/tasks");
    H5Lcreate_external("/etc/passwd", "/x", obj_w, "elsewhere", H5P_DEFAULT, H5P_DEFAULT);
    end();
    begin("soft_link_sample.h5", "/tasks/dehaze/00000001");
    H5Ldelete(obj_w, "hq", H5P_DEFAULT);
    H5Lcreate_soft("/tasks/dehaze/00000000/hq", obj_w, "hq", H5P_DEFAULT, H5P_DEFAULT);
    end();
    // byte-level damage: truncated, garbage, empty
    size_t n;
    uint8_t *bytes = read_all(path_of("base.h5"), &n);
    write_all(path_of("truncated.h5"), bytes, n / 2);
    for (size_t k = 0; k < n; k++) bytes[k] = (uint8_t)(k * 131 + 7);
    write_all(path_of("garbage.h5"), bytes, n);
    write_all(path_of("empty.h5"), bytes, 0);
    free(bytes);
    if (mkdir(path_of("directory.h5"), 0755) && access(path_of("directory.h5"), F_OK)) die("mkdir");
}

// ---- images ---------------------------------------------------------------------------------------
static void image_file(const char *name, const void *data, size_t n) {
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", dir, name);
    *strrchr(sub, '.') = '_';   // a folder per file, named after it
    mkdir(sub, 0755);
    snprintf(sub + strlen(sub), sizeof sub - strlen(sub), "/%s", name);
    write_all(sub, data, n);
}

static void put_le32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static void write_images(void) {
    // PNG header (no CRC check in stb) declaring 14417936 x 16 pixels, as in issue 24
    static const uint8_t huge_png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0x00,
                                       0xdc, 0x00, 0x10, 0, 0, 0, 16, 8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'I', 'D', 'A',
                                       'T', 0x78, 0x9c, 0x63, 0x60, 0, 0, 0, 0, 0, 0, 0, 0};
    image_file("huge_header.png", huge_png, sizeof huge_png);
    uint8_t bmp[54] = {'B', 'M'};   // BITMAPINFOHEADER, 24-bit, 30000 x 30000, no pixel data
    put_le32(bmp + 2, 54);
    put_le32(bmp + 10, 54);
    put_le32(bmp + 14, 40);
    put_le32(bmp + 18, 30000);
    put_le32(bmp + 22, 30000);
    bmp[26] = 1;
    bmp[28] = 24;
    image_file("huge_dims.bmp", bmp, sizeof bmp);
    const char *ppm = "P6\n100000 100000\n255\nabc";
    image_file("huge_dims_pnm.png", ppm, strlen(ppm));   // PNM inside: stb goes by content
    const char *ppm_in_caps = "P6\n8000 8000\n255\nabc";   // within the caps, 3 bytes of 192 MB
    image_file("truncated_8000_pnm.png", ppm_in_caps, strlen(ppm_in_caps));
    const char *ppm_overflow = "P6\n3 27777777777777777777\n255\nabc";   // an int overflow in stb's header parser
    image_file("dims_overflow_pnm.png", ppm_overflow, strlen(ppm_overflow));
    image_file("empty.png", "", 0);
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    image_file("signature_only.png", png_sig, sizeof png_sig);
    // JPEG whose Huffman table declares 272 symbols (16 x 17): stb 2.27 writes past its table
    uint8_t jpg[2 + 4 + 17 + 272 + 2] = {0xFF, 0xD8, 0xFF, 0xC4, 0x01, 0x23, 0x00};
    for (int k = 0; k < 16; k++) jpg[7 + k] = 17;
    jpg[sizeof jpg - 2] = 0xFF;
    jpg[sizeof jpg - 1] = 0xD9;
    image_file("dht_272_symbols.jpg", jpg, sizeof jpg);
    uint8_t filled[sizeof jpg + 1] = {0xFF};   // the same after a fill byte (0xFF 0xFF 0xD8 ...)
    memcpy(filled + 1, jpg, sizeof jpg);
    image_file("dht_after_fill_byte.jpg", filled, sizeof filled);
    // PNG whose IDAT chunk declares 1 GiB - 16 of the 16 bytes that follow: stb sizes its buffer from
    // the declared length before reading (2 GiB requested; found by fuzz_photo)
    uint8_t idat[8 + 25 + 8 + 16] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                     0, 0, 0, 8, 0, 0, 0, 8, 8, 6, 0, 0, 0, 0, 0, 0, 0,
                                     0x3f, 0xff, 0xff, 0xf0, 'I', 'D', 'A', 'T'};
    image_file("idat_beyond_file.png", idat, sizeof idat);
}

// ---- patches --------------------------------------------------------------------------------------
static int patch(const char *path, const char *old, const char *new) {
    if (strlen(old) != strlen(new)) die("patch: OLD and NEW differ in length");
    size_t n;
    uint8_t *b = read_all(path, &n);
    for (size_t k = 0; k + strlen(old) <= n; k++)
        if (!memcmp(b + k, old, strlen(old))) {
            memcpy(b + k, new, strlen(new));
            write_all(path, b, n);
            free(b);
            return 0;
        }
    fprintf(stderr, "dod-make-hostile: %s: '%s' not found\n", path, old);
    return 1;
}

// Sets the first value of TENSOR (f32, bf16 or f16) in a safetensors file to v (NaN when v is NULL).
static int set_first(const char *path, const char *tensor, const char *v) {
    SafeTensors *st;
    char err[ST_ERR_LEN];
    if (safetensors_open(path, &st, err) != ST_OK) die(err);
    const StEntry *e = safetensors_find(st, tensor);
    if (!e || e->numel < 1) die("nan: no such tensor");
    size_t offset = (size_t)((const uint8_t *)safetensors_bytes(st, e) - (const uint8_t *)safetensors_bytes(st, safetensors_entry(st, 0))) +
                    (size_t)safetensors_entry(st, 0)->begin;
    DType dt = e->dtype;
    safetensors_close(st);
    size_t n;
    uint8_t *b = read_all(path, &n);
    uint64_t header = 0;
    for (int k = 0; k < 8; k++) header |= (uint64_t)b[k] << (8 * k);
    size_t at = 8 + (size_t)header + offset;
    float f = v ? strtof(v, NULL) : NAN;
    if (dt == DT_F32) memcpy(b + at, &f, 4);
    else if (dt == DT_BF16) {
        uint16_t h = f32_to_bf16(f);
        memcpy(b + at, &h, 2);
    } else {
        uint16_t h = f32_to_f16(f);
        memcpy(b + at, &h, 2);
    }
    write_all(path, b, n);
    free(b);
    return 0;
}

int main(int argc, char **argv) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (argc == 3 && (!strcmp(argv[1], "h5") || !strcmp(argv[1], "images"))) {
        snprintf(dir, sizeof dir, "%s", argv[2]);
        mkdir(dir, 0755);
        if (!strcmp(argv[1], "h5")) write_h5();
        else write_images();
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "patch")) return patch(argv[2], argv[3], argv[4]);
    if (argc == 4 && !strcmp(argv[1], "nan")) return set_first(argv[2], argv[3], NULL);
    if (argc == 5 && !strcmp(argv[1], "set")) return set_first(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: dod-make-hostile h5 DIR | images DIR | patch FILE OLD NEW | nan FILE TENSOR | "
                    "set FILE TENSOR VALUE\n");
    return 2;
}
