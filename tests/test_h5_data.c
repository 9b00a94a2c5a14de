// The dataset file: pack -> read back bit-exact (real photos in PNG/JPEG/BMP), hyperslab crops equal
// crops of the full image, stored-noisy and recipe tasks, atomic append, and bad input of every
// kind (corrupt image, size mismatch, unmatched names, foreign / corrupt / newer HDF5 files,
// a corrupt chunk, a missing task, a crop outside the image).
#include <hdf5.h>

#include "tests/check.h"
#include "tests/data_test_util.h"

#include "data/degrade.h"
#include "data/h5ds.h"
#include "data/pack.h"

static char root[256];

// LQ dir of Rain100L-style names rain-00K.png (rain synthesised from the photos) and HQ dir of
// norain-00K.<original extension> (the fixture files themselves, copied byte for byte).
static void make_rain_dirs(const char *lq, const char *hq) {
    char err[1024];
    for (int k = 0; k < DATA_N_FIXTURES; k++) {
        char src[1024], dst[1024], params[512];
        data_fixture_path(data_fixture_names[k], src, sizeof src);
        snprintf(dst, sizeof dst, "%s/norain-%03d%s", hq, k + 1, strrchr(data_fixture_names[k], '.'));
        CHECK(data_copy_file(src, dst) == 0, "copy %s", src);
        Image img;
        CHECK(image_load(src, &img, err, sizeof err) == 0, "%s", err);
        Image rain = degrade_rain(&img, 5 + k, params, sizeof params);
        snprintf(dst, sizeof dst, "%s/rain-%03d.png", lq, k + 1);
        CHECK(image_save_png(dst, &rain, err, sizeof err) == 0, "%s", err);
        image_free(&img);
        image_free(&rain);
    }
}

static int images_equal(const Image *a, const Image *b) {
    return a->w == b->w && a->h == b->h && a->c == b->c && !memcmp(a->pix, b->pix, (size_t)a->w * a->h * a->c);
}

static void test_round_trip_and_crops(const char *lq, const char *hq, const char *out) {
    char err[2048];
    PackOptions o = {.out_path = out, .task = "derain", .lq_dir = lq, .hq_dir = hq, .deflate = 4, .quiet = 1};
    CHECK(pack_run(&o, err, sizeof err) == 0, "pack: %s", err);
    H5ds *f = h5ds_open(out, err, sizeof err), *g = h5ds_open(out, err, sizeof err);
    CHECK(f != NULL && g != NULL, "open: %s", err);
    if (!f || !g) return;
    h5ds_set_direct_chunks(g, 0);   // g reads through H5Dread hyperslabs, f inflates chunks itself
    int t = h5ds_find_task(f, "derain", err, sizeof err);
    CHECK(t == 0 && h5ds_task(f, t)->count == DATA_N_FIXTURES && h5ds_task(f, t)->lq_mode == LQ_STORED,
          "task derain: %s", err);
    for (int k = 0; k < DATA_N_FIXTURES && t == 0; k++) {
        Image got_lq, got_hq, want_lq, want_hq;
        char path[1024], attr[256];
        CHECK(h5ds_read_sample(f, t, k, &got_lq, &got_hq, err, sizeof err) == 0, "%s", err);
        // sample k is norain-00(k+1): names sort in the fixture order
        data_fixture_path(data_fixture_names[k], path, sizeof path);
        image_load(path, &want_hq, err, sizeof err);
        snprintf(path, sizeof path, "%s/rain-%03d.png", lq, k + 1);
        image_load(path, &want_lq, err, sizeof err);
        CHECK(images_equal(&got_hq, &want_hq), "HQ %d (%s) not bit-exact", k, data_fixture_names[k]);
        CHECK(images_equal(&got_lq, &want_lq), "LQ %d not bit-exact", k);
        CHECK(h5ds_sample_attr(f, t, k, "hq_source", attr, sizeof attr, err, sizeof err) == 0, "%s", err);
        char want_name[64];
        snprintf(want_name, sizeof want_name, "norain-%03d%s", k + 1, strrchr(data_fixture_names[k], '.'));
        CHECK(!strcmp(attr, want_name), "hq_source '%s' vs '%s'", attr, want_name);
        CHECK(h5ds_sample_attr(f, t, k, "lq_source", attr, sizeof attr, err, sizeof err) == 0, "%s", err);
        snprintf(want_name, sizeof want_name, "rain-%03d.png", k + 1);
        CHECK(!strcmp(attr, want_name), "lq_source '%s' vs '%s'", attr, want_name);
        // hyperslab crops (across chunk borders, at the edges, 1 x 1, whole) == crops of the full image
        int boxes[][4] = {{0, 0, 8, 8}, {60, 60, 10, 9}, {got_hq.h - 17, got_hq.w - 33, 17, 33},
                          {1, 63, got_hq.h - 1, 2}, {got_hq.h - 1, got_hq.w - 1, 1, 1}, {0, 0, got_hq.h, got_hq.w}};
        for (size_t b = 0; b < sizeof boxes / sizeof boxes[0]; b++) {
            int y = boxes[b][0], x = boxes[b][1], ch = boxes[b][2], cw = boxes[b][3];
            for (int which = 0; which < 2; which++) {
                const Image *full = which == H5DS_LQ ? &got_lq : &got_hq;
                uint8_t *crop = malloc((size_t)ch * cw * 3), *slab = malloc((size_t)ch * cw * 3);
                CHECK(h5ds_read_crop(f, t, k, which, y, x, ch, cw, crop, err, sizeof err) == 0, "%s", err);
                CHECK(h5ds_read_crop(g, t, k, which, y, x, ch, cw, slab, err, sizeof err) == 0, "%s", err);
                int same = 1;
                for (int r = 0; r < ch; r++)
                    same &= !memcmp(crop + (size_t)r * cw * 3, full->pix + ((size_t)(y + r) * full->w + x) * 3,
                                    (size_t)cw * 3);
                CHECK(same, "sample %d crop %zu (%s) differs from the full image's crop", k, b, which ? "hq" : "lq");
                CHECK(!memcmp(crop, slab, (size_t)ch * cw * 3), "sample %d crop %zu: direct chunks != hyperslab", k, b);
                free(crop);
                free(slab);
            }
        }
        image_free(&got_lq);
        image_free(&got_hq);
        image_free(&want_lq);
        image_free(&want_hq);
        // and the full images through the hyperslab path are the stored files too
        Image slab_lq, slab_hq;
        CHECK(h5ds_read_sample(g, t, k, &slab_lq, &slab_hq, err, sizeof err) == 0, "%s", err);
        data_fixture_path(data_fixture_names[k], path, sizeof path);
        image_load(path, &want_hq, err, sizeof err);
        CHECK(images_equal(&slab_hq, &want_hq), "hyperslab HQ %d not bit-exact", k);
        image_free(&slab_lq);
        image_free(&slab_hq);
        image_free(&want_hq);
    }
    h5ds_close(g);
    // a crop outside the image names the sample and both sizes
    uint8_t px[3 * 4];
    CHECK(h5ds_read_crop(f, 0, 0, H5DS_HQ, 127, 0, 2, 2, px, err, sizeof err) == -1 && strstr(err, "derain/00000000") &&
              strstr(err, "128x160"),
          "crop outside: %s", err);
    // a missing task lists those present
    CHECK(h5ds_find_task(f, "dehaze", err, sizeof err) == -1 && strstr(err, "no task 'dehaze'") && strstr(err, "derain"),
          "missing task: %s", err);
    h5ds_close(f);
}

static void test_clean_tasks_and_append(const char *out) {
    char err[2048], clean[1024];
    snprintf(clean, sizeof clean, "%s/tests/fixtures/data", DOD_SOURCE_DIR);
    // append without --append: refused, file untouched
    PackOptions o = {.out_path = out, .task = "denoise", .clean_dir = clean, .n_sigmas = 3, .sigmas = {15, 25, 50},
                     .deflate = 1, .quiet = 1};
    struct stat before, after;
    stat(out, &before);
    CHECK(pack_run(&o, err, sizeof err) == -1 && strstr(err, "already exists"), "no --append: %s", err);
    o.append = 1;
    CHECK(pack_run(&o, err, sizeof err) == 0, "append denoise: %s", err);
    // a stored-noisy evaluation task
    PackOptions e = {.out_path = out, .append = 1, .task = "denoise_s25", .clean_dir = clean, .n_sigmas = 1,
                     .sigmas = {25}, .store_noisy = 1, .seed = 77, .deflate = 4, .quiet = 1};
    CHECK(pack_run(&e, err, sizeof err) == 0, "store-noisy: %s", err);
    // appending to denoise with another sigma list is refused and leaves the file as it was
    stat(out, &before);
    o.sigmas[2] = 75;
    CHECK(pack_run(&o, err, sizeof err) == -1 && strstr(err, "same mode and sigma"), "sigma clash: %s", err);
    stat(out, &after);
    CHECK(before.st_ino == after.st_ino && before.st_size == after.st_size && before.st_mtime == after.st_mtime,
          "refused append changed the file");
    CHECK(data_count_entries(root, ".tmp.") == 0, "temp files left behind");

    H5ds *f = h5ds_open(out, err, sizeof err);
    CHECK(f && h5ds_n_tasks(f) == 3, "3 tasks after appends: %s", err);
    if (!f) return;
    int td = h5ds_find_task(f, "denoise", NULL, 0), te = h5ds_find_task(f, "denoise_s25", NULL, 0);
    CHECK(td >= 0 && h5ds_task(f, td)->lq_mode == LQ_GAUSSIAN_NOISE && h5ds_task(f, td)->n_sigmas == 3 &&
              h5ds_task(f, td)->sigmas[1] == 25,
          "denoise recipe");
    CHECK(te >= 0 && h5ds_task(f, te)->lq_mode == LQ_STORED, "denoise_s25 stored");
    for (int k = 0; k < DATA_N_FIXTURES && td >= 0 && te >= 0; k++) {
        Image lq, hq, lq2, hq2, want;
        char path[1024];
        data_fixture_path(data_fixture_names[k], path, sizeof path);
        image_load(path, &want, err, sizeof err);
        // list_images sorts names: astronaut, chelsea, coffee, hubble, rocket
        char src[256];
        CHECK(h5ds_sample_attr(f, te, k, "hq_source", src, sizeof src, err, sizeof err) == 0, "%s", err);
        int idx = -1;
        for (int j = 0; j < DATA_N_FIXTURES; j++) idx = !strcmp(src, data_fixture_names[j]) ? j : idx;
        CHECK(idx >= 0, "hq_source '%s'", src);
        if (idx < 0) continue;
        image_free(&want);
        data_fixture_path(data_fixture_names[idx], path, sizeof path);
        image_load(path, &want, err, sizeof err);
        CHECK(h5ds_read_sample(f, te, k, &lq, &hq, err, sizeof err) == 0, "%s", err);
        CHECK(images_equal(&hq, &want), "stored-noisy HQ %s not bit-exact", src);
        Image expect = image_alloc(want.w, want.h, 3);
        degrade_gaussian_noise(want.pix, expect.pix, (size_t)want.w * want.h * 3, 25, pack_noise_key(77, src, 25));
        CHECK(images_equal(&lq, &expect), "stored noisy LQ of %s is not noise(hq, 25, key(77, name))", src);
        // recipe task: HQ stored, LQ synthesised deterministically at sigmas[0]
        CHECK(h5ds_read_sample(f, td, k, &lq2, &hq2, err, sizeof err) == 0, "%s", err);
        Image again_lq, again_hq;
        h5ds_read_sample(f, td, k, &again_lq, &again_hq, err, sizeof err);
        CHECK(images_equal(&lq2, &again_lq) && !images_equal(&lq2, &hq2), "recipe LQ not deterministic or not noisy");
        Image lq_direct;
        CHECK(h5ds_read_image(f, td, k, H5DS_LQ, &lq_direct, err, sizeof err) == -1 && strstr(err, "stores no LQ"),
              "LQ of a recipe task: %s", err);
        image_free(&lq);
        image_free(&hq);
        image_free(&lq2);
        image_free(&hq2);
        image_free(&again_lq);
        image_free(&again_hq);
        image_free(&expect);
        image_free(&want);
    }
    h5ds_close(f);
}

static void test_bad_images(const char *lq, const char *hq) {
    char err[2048], out[512], path[1024];
    snprintf(out, sizeof out, "%s/bad.h5", root);
    PackOptions o = {.out_path = out, .task = "derain", .lq_dir = lq, .hq_dir = hq, .deflate = 1, .quiet = 1};
    // a truncated PNG: pack fails, no output, no temp file
    char good[1024];
    snprintf(path, sizeof path, "%s/rain-003.png", lq);
    snprintf(good, sizeof good, "%s/rain-003.keep", root);
    rename(path, good);
    FILE *in = fopen(good, "rb"), *dst = fopen(path, "wb");
    char buf[300];
    size_t n = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, n, dst);
    fclose(in);
    fclose(dst);
    CHECK(pack_run(&o, err, sizeof err) == -1 && strstr(err, "nothing written"), "corrupt image: %s", err);
    CHECK(!data_file_exists(out) && data_count_entries(root, ".tmp.") == 0, "partial output left");
    rename(good, path);
    // LQ/HQ size mismatch
    snprintf(path, sizeof path, "%s/rain-001.png", lq);
    Image small = data_generated_image(40, 30, 1);
    snprintf(good, sizeof good, "%s/rain-001.keep", root);
    rename(path, good);
    image_save_png(path, &small, err, sizeof err);
    image_free(&small);
    CHECK(pack_run(&o, err, sizeof err) == -1 && !data_file_exists(out), "size mismatch accepted");
    rename(good, path);
    // unmatched file: an error, or with skip_unmatched a warning
    snprintf(path, sizeof path, "%s/rain-999.png", lq);
    Image extra = data_generated_image(20, 20, 2);
    image_save_png(path, &extra, err, sizeof err);
    image_free(&extra);
    CHECK(pack_run(&o, err, sizeof err) == -1 && !data_file_exists(out), "unmatched accepted");
    o.skip_unmatched = 1;
    o.deflate = 0;   // raw chunks: the direct path copies them without inflating
    CHECK(pack_run(&o, err, sizeof err) == 0 && data_file_exists(out), "skip_unmatched: %s", err);
    unlink(path);
    H5ds *f = h5ds_open(out, err, sizeof err), *g = h5ds_open(out, err, sizeof err);
    if (f && g) {
        h5ds_set_direct_chunks(g, 0);
        Image a_lq, a_hq, b_lq, b_hq, want;
        data_fixture_path(data_fixture_names[1], path, sizeof path);
        image_load(path, &want, err, sizeof err);
        CHECK(h5ds_read_sample(f, 0, 1, &a_lq, &a_hq, err, sizeof err) == 0, "%s", err);
        CHECK(h5ds_read_sample(g, 0, 1, &b_lq, &b_hq, err, sizeof err) == 0, "%s", err);
        CHECK(images_equal(&a_hq, &want) && images_equal(&b_hq, &want) && images_equal(&a_lq, &b_lq),
              "uncompressed file: direct and hyperslab reads differ from the source");
        image_free(&a_lq);
        image_free(&a_hq);
        image_free(&b_lq);
        image_free(&b_hq);
        image_free(&want);
    }
    h5ds_close(f);
    h5ds_close(g);
}

static void write_attr_int(hid_t obj, const char *name, int v) {
    hid_t s = H5Screate(H5S_SCALAR);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, H5T_NATIVE_INT, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &v);
    H5Aclose(a);
    H5Sclose(s);
}

static void test_bad_files(const char *good) {
    char err[2048], path[512];
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    // not HDF5
    snprintf(path, sizeof path, "%s/text.h5", root);
    FILE *f = fopen(path, "w");
    fprintf(f, "hello, not a dataset\n");
    fclose(f);
    CHECK(!h5ds_open(path, err, sizeof err) && strstr(err, "not an HDF5 file") && strstr(err, "text.h5"), "text: %s", err);
    // missing
    snprintf(path, sizeof path, "%s/missing.h5", root);
    CHECK(!h5ds_open(path, err, sizeof err) && strstr(err, "missing.h5"), "missing: %s", err);
    // foreign HDF5
    snprintf(path, sizeof path, "%s/foreign.h5", root);
    hid_t fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(H5Gcreate2(fid, "/images", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Fclose(fid);
    CHECK(!h5ds_open(path, err, sizeof err) && strstr(err, "not a dod dataset"), "foreign: %s", err);
    // truncated dod file
    snprintf(path, sizeof path, "%s/truncated.h5", root);
    data_copy_file(good, path);
    struct stat st;
    stat(path, &st);
    CHECK(truncate(path, st.st_size / 2) == 0, "truncate");
    H5ds *h = h5ds_open(path, err, sizeof err);
    CHECK(!h && strstr(err, "truncated.h5"), "truncated: %s", err);
    h5ds_close(h);
    // a newer format version is refused with a clear message
    snprintf(path, sizeof path, "%s/newer.h5", root);
    data_copy_file(good, path);
    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    write_attr_int(fid, "dod_format_version", H5DS_FORMAT_VERSION + 1);
    H5Fclose(fid);
    CHECK(!h5ds_open(path, err, sizeof err) && strstr(err, "newer than this build"), "newer: %s", err);
    // appending to a foreign file is refused and leaves it alone
    snprintf(path, sizeof path, "%s/foreign.h5", root);
    stat(path, &st);
    CHECK(!h5ds_begin_write(path, 1, err, sizeof err) && strstr(err, "not a dod dataset"), "append foreign: %s", err);
    // a corrupt chunk: reading the sample fails and names it
    snprintf(path, sizeof path, "%s/chunk.h5", root);
    data_copy_file(good, path);
    fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(fid, "/tasks/derain/00000001/hq", H5P_DEFAULT);
    hid_t space = H5Dget_space(ds);
    haddr_t addr = 0;
    hsize_t size = 0, offset[3];
    unsigned mask;
    herr_t rc = H5Dget_chunk_info(ds, space, 0, offset, &mask, &addr, &size);
    H5Sclose(space);
    H5Dclose(ds);
    H5Fclose(fid);
    CHECK(rc >= 0 && size > 16, "chunk info");
    FILE *w = fopen(path, "r+b");
    fseek(w, (long)addr, SEEK_SET);
    for (hsize_t i = 0; i < size; i++) fputc(0xA5 ^ (int)(i * 7), w);
    fclose(w);
    H5ds *c = h5ds_open(path, err, sizeof err);
    CHECK(c != NULL, "open with a corrupt chunk: %s", err);
    if (c) {
        Image lq, hq;
        CHECK(h5ds_read_sample(c, 0, 1, &lq, &hq, err, sizeof err) == -1 && strstr(err, "derain/00000001"),
              "corrupt chunk: %s", err);
        CHECK(h5ds_read_sample(c, 0, 0, &lq, &hq, err, sizeof err) == 0, "sample 0 should still read: %s", err);
        image_free(&lq);
        image_free(&hq);
        h5ds_set_direct_chunks(c, 0);
        CHECK(h5ds_read_sample(c, 0, 1, &lq, &hq, err, sizeof err) == -1 && strstr(err, "derain/00000001"),
              "corrupt chunk through a hyperslab: %s", err);
        h5ds_close(c);
    }
}

int main(void) {
    char lq[512], hq[512], out[512];
    data_scratch_dir("h5data", root, sizeof root);
    data_mkdir(root, "rainy", lq, sizeof lq);
    data_mkdir(root, "gt", hq, sizeof hq);
    snprintf(out, sizeof out, "%s/train.h5", root);
    make_rain_dirs(lq, hq);
    test_round_trip_and_crops(lq, hq, out);
    char pristine[600];
    snprintf(pristine, sizeof pristine, "%s/derain_only.h5", root);
    data_copy_file(out, pristine);
    test_clean_tasks_and_append(out);
    test_bad_images(lq, hq);
    test_bad_files(pristine);
    data_rm_rf(root);
    return check_summary();
}
