// Pretraining images: load a list of photos into memory, cut random flipped crops for training and
// fixed crops for evaluation. The set is small (tens of photos), so everything stays decoded in RAM.
#include "train/pretrain.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/keyed_rng.h"

static bool has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return false;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
           !strcasecmp(dot, ".bmp");
}

static void add_file(PretrainImages *set, const char *path, int min_side) {
    Image img;
    char err[512];
    if (image_load(path, &img, err, sizeof err) != 0) dod_fatal("pretrain images", "%s", err);
    int short_side = img.w < img.h ? img.w : img.h;
    if (short_side < min_side) {
        // Resize up so the short side is min_side: a crop must fit inside every image.
        double s = (double)min_side / short_side;
        int w = img.w < img.h ? min_side : (int)(img.w * s + 0.5);
        int h = img.w < img.h ? (int)(img.h * s + 0.5) : min_side;
        if (w < min_side) w = min_side;
        if (h < min_side) h = min_side;
        Image big = image_resize(&img, w, h);
        image_free(&img);
        img = big;
    }
    if (set->n == set->cap) {
        set->cap = set->cap ? 2 * set->cap : 16;
        set->img = realloc(set->img, sizeof(Image) * (size_t)set->cap);
        set->path = realloc(set->path, sizeof(char *) * (size_t)set->cap);
        DOD_CHECK(set->img && set->path, "pretrain images", "out of memory for %d images", set->cap);
    }
    set->img[set->n] = img;
    set->path[set->n] = strdup(path);
    set->n++;
}

void pretrain_images_add(PretrainImages *set, const char *path, int min_side) {
    struct stat sb;
    if (stat(path, &sb) != 0) dod_fatal("pretrain images", "%s: no such file or directory", path);
    if (!S_ISDIR(sb.st_mode)) {
        add_file(set, path, min_side);
        return;
    }
    struct dirent **list = NULL;
    int n = scandir(path, &list, NULL, alphasort);
    if (n < 0) dod_fatal("pretrain images", "%s: cannot list the directory", path);
    int added = 0;
    for (int i = 0; i < n; i++) {
        if (list[i]->d_name[0] != '.' && has_image_ext(list[i]->d_name)) {
            char file[1024];
            snprintf(file, sizeof file, "%s/%s", path, list[i]->d_name);
            add_file(set, file, min_side);
            added++;
        }
        free(list[i]);
    }
    free(list);
    if (added == 0) dod_fatal("pretrain images", "%s: no .png/.jpg/.jpeg/.bmp files", path);
}

void pretrain_images_free(PretrainImages *set) {
    for (int i = 0; i < set->n; i++) {
        image_free(&set->img[i]);
        free(set->path[i]);
    }
    free(set->img);
    free(set->path);
    memset(set, 0, sizeof *set);
}

// One crop of img at (x0, y0) into dst [3, crop, crop] (=), [0, 255] -> [-1, 1], optionally flipped.
static void cut(const Image *img, int x0, int y0, int crop, bool hflip, bool vflip, float *dst) {
    const size_t plane = (size_t)crop * crop;
    for (int y = 0; y < crop; y++) {
        int sy = y0 + (vflip ? crop - 1 - y : y);
        for (int x = 0; x < crop; x++) {
            int sx = x0 + (hflip ? crop - 1 - x : x);
            const uint8_t *p = img->pix + ((size_t)sy * img->w + sx) * 3;
            for (int c = 0; c < 3; c++) dst[c * plane + (size_t)y * crop + x] = p[c] * (2.0f / 255.0f) - 1.0f;
        }
    }
}

void pretrain_random_crops(const PretrainImages *set, int crop, uint64_t key, Tensor *out) {
    DOD_CHECK(set->n > 0, "pretrain_random_crops", "no images");
    DOD_CHECK(out->ndim == 4 && out->shape[1] == 3 && out->shape[2] == crop && out->shape[3] == crop &&
                  out->dtype == DT_F32,
              "pretrain_random_crops", "out is %s, want [N, 3, %d, %d] f32", shape_str(out), crop, crop);
    for (int64_t i = 0; i < out->shape[0]; i++) {
        KeyedRng r = keyed_rng(rng_key(key, (uint64_t)i));
        const Image *img = &set->img[rng_below(&r, (uint64_t)set->n)];
        int x0 = (int)rng_below(&r, (uint64_t)(img->w - crop + 1));
        int y0 = (int)rng_below(&r, (uint64_t)(img->h - crop + 1));
        bool hflip = rng_below(&r, 2), vflip = rng_below(&r, 2);
        cut(img, x0, y0, crop, hflip, vflip, tensor_data_f32(out) + i * 3 * (int64_t)crop * crop);
    }
}

Tensor *pretrain_grid_crops(const PretrainImages *set, int crop, int per_image) {
    DOD_CHECK(set->n > 0 && per_image > 0, "pretrain_grid_crops", "%d images, %d crops each", set->n, per_image);
    int64_t shape[4] = {(int64_t)set->n * per_image, 3, crop, crop};
    Tensor *t = tensor_new_persistent("eval_crops", 4, shape, DT_F32);
    for (int i = 0; i < set->n; i++) {
        const Image *img = &set->img[i];
        for (int k = 0; k < per_image; k++) {
            // Evenly along the diagonal: k / (per_image - 1) of the free range (the centre when 1).
            double f = per_image == 1 ? 0.5 : (double)k / (per_image - 1);
            int x0 = (int)(f * (img->w - crop)), y0 = (int)(f * (img->h - crop));
            cut(img, x0, y0, crop, false, false, tensor_data_f32(t) + ((int64_t)i * per_image + k) * 3 * crop * crop);
        }
    }
    return t;
}
