// The dod degradation-dataset HDF5 file: open/check, read crops and samples, atomic writes.
// Layout and rules: data/h5ds.h and docs/data-format.md.
#include "data/h5ds.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "autograd/base.h"
#include "data/degrade.h"
#include "data/keyed_rng.h"

struct H5ds {
    hid_t file;
    char path[4096];        // the file as the user named it
    char tmp_path[4200];    // writing: the temp file that becomes path on commit
    int writable, deflate;
    int hyperslab_only;     // 1: never read chunks directly (h5ds_set_direct_chunks)
    int n_tasks;
    H5dsTask tasks[H5DS_MAX_TASKS];
};

// HDF5 prints its error stack to stderr by default; we turn that off (per thread: the thread-safe
// library keeps one error stack per thread) and report the innermost reason ourselves.
static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t keep_last_desc(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    snprintf((char *)data, 256, "%s", e->desc ? e->desc : "");
    return 0;
}

// The innermost message of this thread's HDF5 error stack (walked from the API call downwards).
static const char *hdf5_reason(char *buf) {
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_last_desc, buf);
    H5Eclear2(H5E_DEFAULT);
    return buf[0] ? buf : "unknown HDF5 error";
}

static void sample_path(const H5ds *f, int t, int64_t i, char *buf, size_t len) {
    snprintf(buf, len, "/tasks/%s/%08" PRId64, f->tasks[t].name, i);
}

// ---- attributes -----------------------------------------------------------------------------
static int write_str_attr(hid_t obj, const char *name, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    hid_t space = H5Screate(H5S_SCALAR);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = attr < 0 ? -1 : H5Awrite(attr, type, value);
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
    return rc < 0 ? -1 : 0;
}

// Reads a string attribute (fixed or variable length) into buf; -1 when absent or not a string.
static int read_str_attr(hid_t obj, const char *name, char *buf, size_t len) {
    buf[0] = 0;
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ftype = H5Aget_type(attr);
    int rc = -1;
    if (H5Tget_class(ftype) == H5T_STRING) {
        if (H5Tis_variable_str(ftype) > 0) {
            char *s = NULL;
            hid_t mtype = H5Tcopy(H5T_C_S1);
            H5Tset_size(mtype, H5T_VARIABLE);
            if (H5Aread(attr, mtype, &s) >= 0 && s) {
                snprintf(buf, len, "%s", s);
                H5free_memory(s);
                rc = 0;
            }
            H5Tclose(mtype);
        } else {
            size_t size = H5Tget_size(ftype);
            char *tmp = dod_calloc(size + 1, "string attribute");
            if (H5Aread(attr, ftype, tmp) >= 0) {
                snprintf(buf, len, "%s", tmp);
                rc = 0;
            }
            free(tmp);
        }
    }
    H5Tclose(ftype);
    H5Aclose(attr);
    return rc;
}

static int write_num_attr(hid_t obj, const char *name, hid_t type, const void *values, hsize_t n) {
    hid_t space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = attr < 0 ? -1 : H5Awrite(attr, type, values);
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

// Reads up to cap numbers of a numeric attribute as mtype; returns how many, or -1.
static int read_num_attr(hid_t obj, const char *name, hid_t mtype, void *values, int cap) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t space = H5Aget_space(attr);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    int rc = -1;
    if (n >= 1 && n <= cap && H5Aread(attr, mtype, values) >= 0) rc = (int)n;
    H5Sclose(space);
    H5Aclose(attr);
    return rc;
}

// ---- opening and checking -----------------------------------------------------------------------
static herr_t collect_task(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group;
    (void)info;
    H5ds *f = data;
    if (f->n_tasks >= H5DS_MAX_TASKS) return 1;   // stop; reported by the caller
    snprintf(f->tasks[f->n_tasks++].name, H5DS_TASK_NAME_MAX, "%s", name);
    return 0;
}

// Reads the root attributes and every task's description into f. 0, or -1 with a message.
static int load_index(H5ds *f, char *err, size_t errlen) {
    char fmt[128], reason[256];
    if (read_str_attr(f->file, "dod_format", fmt, sizeof fmt) || strcmp(fmt, H5DS_FORMAT_NAME)) {
        snprintf(err, errlen,
                 "%s: an HDF5 file but not a dod dataset (root attribute dod_format is %s%s%s, expected '%s'); "
                 "make one with dod-data pack or dod-data synth",
                 f->path, fmt[0] ? "'" : "missing", fmt, fmt[0] ? "'" : "", H5DS_FORMAT_NAME);
        return -1;
    }
    int version = 0;
    if (read_num_attr(f->file, "dod_format_version", H5T_NATIVE_INT, &version, 1) != 1) {
        snprintf(err, errlen, "%s: dod dataset without a dod_format_version attribute (damaged file?)", f->path);
        return -1;
    }
    if (version > H5DS_FORMAT_VERSION) {
        snprintf(err, errlen,
                 "%s: dataset format version %d is newer than this build reads (%d); update dod to read it",
                 f->path, version, H5DS_FORMAT_VERSION);
        return -1;
    }
    if (version < 1) {
        snprintf(err, errlen, "%s: invalid dataset format version %d", f->path, version);
        return -1;
    }
    // version < H5DS_FORMAT_VERSION would be upgraded here, one step per version (none exist yet).
    f->n_tasks = 0;
    if (H5Lexists(f->file, "/tasks", H5P_DEFAULT) <= 0) {
        snprintf(err, errlen, "%s: dod dataset without the /tasks group (damaged file?)", f->path);
        return -1;
    }
    hid_t tasks = H5Gopen2(f->file, "/tasks", H5P_DEFAULT);
    hsize_t idx = 0;
    herr_t it = H5Literate(tasks, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_task, f);
    H5Gclose(tasks);
    if (it < 0) {
        snprintf(err, errlen, "%s: cannot list /tasks: %s", f->path, hdf5_reason(reason));
        return -1;
    }
    if (it > 0) {
        snprintf(err, errlen, "%s: more than %d tasks", f->path, H5DS_MAX_TASKS);
        return -1;
    }
    for (int t = 0; t < f->n_tasks; t++) {
        H5dsTask *task = &f->tasks[t];
        char gpath[256], mode[64];
        snprintf(gpath, sizeof gpath, "/tasks/%s", task->name);
        hid_t g = H5Gopen2(f->file, gpath, H5P_DEFAULT);
        if (g < 0) {
            snprintf(err, errlen, "%s: %s is not a group: %s", f->path, gpath, hdf5_reason(reason));
            return -1;
        }
        int ok = read_str_attr(g, "lq_mode", mode, sizeof mode) == 0 &&
                 read_num_attr(g, "count", H5T_NATIVE_INT64, &task->count, 1) == 1 && task->count >= 0;
        if (ok && !strcmp(mode, "stored")) {
            task->lq_mode = LQ_STORED;
        } else if (ok && !strcmp(mode, "gaussian_noise")) {
            task->lq_mode = LQ_GAUSSIAN_NOISE;
            task->n_sigmas = read_num_attr(g, "noise_sigmas", H5T_NATIVE_DOUBLE, task->sigmas, H5DS_MAX_SIGMAS);
            ok = task->n_sigmas >= 1;
        } else {
            ok = 0;
        }
        H5Gclose(g);
        if (!ok) {
            snprintf(err, errlen, "%s: task group %s lacks a valid lq_mode/count/noise_sigmas attribute", f->path,
                     gpath);
            return -1;
        }
    }
    return 0;
}

static H5ds *open_file(const char *path, const char *tmp_path, int writable, char *err, size_t errlen) {
    quiet_hdf5();
    const char *file_path = tmp_path ? tmp_path : path;
    struct stat st;
    if (stat(file_path, &st) != 0) {
        snprintf(err, errlen, "%s: cannot open dataset: %s", path, strerror(errno));
        return NULL;
    }
    char reason[256];
    if (H5Fis_hdf5(file_path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        snprintf(err, errlen, "%s: not an HDF5 file (no HDF5 signature): corrupt, truncated, or another format",
                 path);
        return NULL;
    }
    hid_t file = H5Fopen(file_path, writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        snprintf(err, errlen, "%s: cannot open as HDF5 (corrupt or truncated?): %s", path, hdf5_reason(reason));
        return NULL;
    }
    H5ds *f = dod_calloc(sizeof *f, "H5ds");
    f->file = file;
    f->writable = writable;
    f->deflate = 4;
    snprintf(f->path, sizeof f->path, "%s", path);
    if (tmp_path) snprintf(f->tmp_path, sizeof f->tmp_path, "%s", tmp_path);
    if (load_index(f, err, errlen)) {
        H5Fclose(file);
        free(f);
        return NULL;
    }
    return f;
}

H5ds *h5ds_open(const char *path, char *err, size_t errlen) { return open_file(path, NULL, 0, err, errlen); }

void h5ds_close(H5ds *f) {
    if (!f) return;
    quiet_hdf5();
    H5Fclose(f->file);
    free(f);
}

int h5ds_n_tasks(const H5ds *f) { return f->n_tasks; }
const H5dsTask *h5ds_task(const H5ds *f, int t) { return &f->tasks[t]; }

int h5ds_find_task(const H5ds *f, const char *name, char *err, size_t errlen) {
    for (int t = 0; t < f->n_tasks; t++)
        if (!strcmp(f->tasks[t].name, name)) return t;
    if (err) {
        int n = snprintf(err, errlen, "%s: no task '%s' (tasks in the file:", f->path, name);
        for (int t = 0; t < f->n_tasks && n > 0 && (size_t)n < errlen; t++)
            n += snprintf(err + n, errlen - n, " %s", f->tasks[t].name);
        if (n > 0 && (size_t)n < errlen) snprintf(err + n, errlen - n, "%s)", f->n_tasks ? "" : " none");
    }
    return -1;
}

// ---- reading samples -----------------------------------------------------------------------------
// Opens the LQ or HQ dataset of a sample and checks it is uint8 [H, W, 3]. Returns the dataset
// (and its size) or -1 with a message.
static hid_t open_image(H5ds *f, int t, int64_t i, int which, int *h, int *w, char *err, size_t errlen) {
    quiet_hdf5();
    char path[512], reason[256];
    if (t < 0 || t >= f->n_tasks || i < 0 || i >= f->tasks[t].count) {
        snprintf(err, errlen, "%s: sample %" PRId64 " of task %d is out of range", f->path, i, t);
        return -1;
    }
    if (which == H5DS_LQ && f->tasks[t].lq_mode != LQ_STORED) {
        snprintf(err, errlen, "%s: task %s stores no LQ images (lq_mode gaussian_noise)", f->path, f->tasks[t].name);
        return -1;
    }
    sample_path(f, t, i, path, sizeof path);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/%s", which == H5DS_LQ ? "lq" : "hq");
    hid_t ds = H5Dopen2(f->file, path, H5P_DEFAULT);
    if (ds < 0) {
        snprintf(err, errlen, "%s: cannot open %s: %s", f->path, path, hdf5_reason(reason));
        return -1;
    }
    hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
    hsize_t dims[3] = {0, 0, 0};
    int ok = H5Sget_simple_extent_ndims(space) == 3 && H5Sget_simple_extent_dims(space, dims, NULL) == 3 &&
             dims[2] == 3 && dims[0] > 0 && dims[1] > 0 && H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 1;
    H5Sclose(space);
    H5Tclose(type);
    if (!ok) {
        snprintf(err, errlen, "%s: %s is not a uint8 [H, W, 3] image", f->path, path);
        H5Dclose(ds);
        return -1;
    }
    *h = (int)dims[0];
    *w = (int)dims[1];
    return ds;
}

int h5ds_sample_size(H5ds *f, int t, int64_t i, int *h, int *w, char *err, size_t errlen) {
    hid_t ds = open_image(f, t, i, H5DS_HQ, h, w, err, errlen);
    if (ds < 0) return -1;
    H5Dclose(ds);
    return 0;
}

void h5ds_set_direct_chunks(H5ds *f, int on) { f->hyperslab_only = !on; }

// The fast path of h5ds_read_crop: fetch each stored chunk the crop touches with H5Dread_chunk
// (still compressed: cheap under the library's global lock) and inflate it here with zlib, so
// several loader threads inflate at once, which H5Dread's internal filter pipeline cannot do.
// Only for the layout this format writes (chunked, channels whole, no filter or deflate alone).
// Returns 0 on success, 1 when the dataset is not of that layout (use the hyperslab path), -1 on
// a read or inflate error (with the message in reason).
static int read_crop_direct(hid_t ds, int y, int x, int ch, int cw, uint8_t *dst, char *reason, size_t rlen) {
    hid_t dcpl = H5Dget_create_plist(ds);
    hsize_t cdims[3] = {0, 0, 0};
    int usable = H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 3, cdims) == 3 && cdims[2] == 3;
    int nfilters = usable ? H5Pget_nfilters(dcpl) : -1;
    if (nfilters == 1) {
        unsigned flags, cd[8];
        size_t ncd = 8;
        usable = H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, 0, NULL, NULL) == H5Z_FILTER_DEFLATE;
    } else {
        usable = usable && nfilters == 0;
    }
    H5Pclose(dcpl);
    if (!usable) return 1;
    size_t chunk_bytes = (size_t)cdims[0] * cdims[1] * 3, cap = 0;
    uint8_t *packed = NULL, *chunk = dod_malloc(chunk_bytes, "chunk");
    int rc = 0;
    for (hsize_t cy = (hsize_t)y / cdims[0] * cdims[0]; rc == 0 && cy < (hsize_t)(y + ch); cy += cdims[0])
        for (hsize_t cx = (hsize_t)x / cdims[1] * cdims[1]; rc == 0 && cx < (hsize_t)(x + cw); cx += cdims[1]) {
            hsize_t offset[3] = {cy, cx, 0}, stored = 0;
            uint32_t filter_mask = 0;
            if (H5Dget_chunk_storage_size(ds, offset, &stored) < 0 || stored == 0) {
                rc = 1;   // unallocated chunk (fill value): let H5Dread handle it
                break;
            }
            if (stored > cap) {
                free(packed);
                cap = stored;
                packed = dod_malloc(cap, "packed chunk");
            }
            if (H5Dread_chunk(ds, H5P_DEFAULT, offset, &filter_mask, packed) < 0) {
                hdf5_reason(reason);
                rc = -1;
                break;
            }
            if (nfilters == 0 || (filter_mask & 1)) {   // stored without deflate
                if (stored != chunk_bytes) {
                    snprintf(reason, rlen, "raw chunk at (%d, %d) has %llu bytes, expected %zu", (int)cy, (int)cx,
                             (unsigned long long)stored, chunk_bytes);
                    rc = -1;
                    break;
                }
                memcpy(chunk, packed, chunk_bytes);
            } else {
                uLongf out_len = chunk_bytes;
                int z = uncompress(chunk, &out_len, packed, stored);
                if (z != Z_OK || out_len != chunk_bytes) {
                    snprintf(reason, rlen, "inflate of chunk at (%d, %d) failed: %s", (int)cy, (int)cx,
                             z != Z_OK ? zError(z) : "wrong size");
                    rc = -1;
                    break;
                }
            }
            // the part of this chunk inside the crop
            int y0 = (int)cy > y ? (int)cy : y, y1 = (int)(cy + cdims[0]) < y + ch ? (int)(cy + cdims[0]) : y + ch;
            int x0 = (int)cx > x ? (int)cx : x, x1 = (int)(cx + cdims[1]) < x + cw ? (int)(cx + cdims[1]) : x + cw;
            for (int r = y0; r < y1; r++)
                memcpy(dst + ((size_t)(r - y) * cw + (x0 - x)) * 3,
                       chunk + (((size_t)(r - cy)) * cdims[1] + (x0 - cx)) * 3, (size_t)(x1 - x0) * 3);
        }
    free(packed);
    free(chunk);
    return rc;
}

int h5ds_read_crop(H5ds *f, int t, int64_t i, int which, int y, int x, int ch, int cw, uint8_t *dst, char *err,
                   size_t errlen) {
    int h, w;
    char reason[256];
    hid_t ds = open_image(f, t, i, which, &h, &w, err, errlen);
    if (ds < 0) return -1;
    if (y < 0 || x < 0 || ch <= 0 || cw <= 0 || y + ch > h || x + cw > w) {
        snprintf(err, errlen, "%s: crop %dx%d at (y %d, x %d) does not fit sample %s/%08" PRId64 " (%dx%d, HxW)", f->path,
                 ch, cw, y, x, f->tasks[t].name, i, h, w);
        H5Dclose(ds);
        return -1;
    }
    if (!f->hyperslab_only) {
        int direct = read_crop_direct(ds, y, x, ch, cw, dst, reason, sizeof reason);
        if (direct <= 0) {
            if (direct < 0)
                snprintf(err, errlen, "%s: reading %s of sample %s/%08" PRId64 " failed (corrupt data?): %s", f->path,
                         which == H5DS_LQ ? "lq" : "hq", f->tasks[t].name, i, reason);
            H5Dclose(ds);
            return direct;
        }
    }
    hsize_t start[3] = {(hsize_t)y, (hsize_t)x, 0}, count[3] = {(hsize_t)ch, (hsize_t)cw, 3};
    hid_t fspace = H5Dget_space(ds);
    hid_t mspace = H5Screate_simple(3, count, NULL);
    herr_t rc = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    if (rc >= 0) rc = H5Dread(ds, H5T_NATIVE_UINT8, mspace, fspace, H5P_DEFAULT, dst);
    if (rc < 0)
        snprintf(err, errlen, "%s: reading %s of sample %s/%08" PRId64 " failed (corrupt data?): %s", f->path,
                 which == H5DS_LQ ? "lq" : "hq", f->tasks[t].name, i, hdf5_reason(reason));
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Dclose(ds);
    return rc < 0 ? -1 : 0;
}

int h5ds_read_image(H5ds *f, int t, int64_t i, int which, Image *img, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    int h, w;
    hid_t ds = open_image(f, t, i, which, &h, &w, err, errlen);
    if (ds < 0) return -1;
    H5Dclose(ds);
    Image out = image_alloc(w, h, 3);
    if (h5ds_read_crop(f, t, i, which, 0, 0, h, w, out.pix, err, errlen)) {
        image_free(&out);
        return -1;
    }
    *img = out;
    return 0;
}

int h5ds_read_sample(H5ds *f, int t, int64_t i, Image *lq, Image *hq, char *err, size_t errlen) {
    memset(lq, 0, sizeof *lq);
    if (h5ds_read_image(f, t, i, H5DS_HQ, hq, err, errlen)) return -1;
    const H5dsTask *task = &f->tasks[t];
    if (task->lq_mode == LQ_GAUSSIAN_NOISE) {
        *lq = image_alloc(hq->w, hq->h, 3);
        uint64_t key = rng_key(rng_key(H5DS_EVAL_NOISE_SEED, rng_hash_string(task->name)), (uint64_t)i);
        degrade_gaussian_noise(hq->pix, lq->pix, (size_t)hq->w * hq->h * 3, task->sigmas[0], key);
        return 0;
    }
    if (h5ds_read_image(f, t, i, H5DS_LQ, lq, err, errlen)) {
        image_free(hq);
        return -1;
    }
    if (lq->w != hq->w || lq->h != hq->h) {
        snprintf(err, errlen, "%s: sample %s/%08" PRId64 ": LQ %dx%d and HQ %dx%d differ in size", f->path, task->name,
                 i, lq->w, lq->h, hq->w, hq->h);
        image_free(lq);
        image_free(hq);
        return -1;
    }
    return 0;
}

int h5ds_sample_attr(H5ds *f, int t, int64_t i, const char *attr, char *buf, size_t len) {
    quiet_hdf5();
    char path[512];
    buf[0] = 0;
    if (t < 0 || t >= f->n_tasks || i < 0 || i >= f->tasks[t].count) return -1;
    sample_path(f, t, i, path, sizeof path);
    hid_t g = H5Gopen2(f->file, path, H5P_DEFAULT);
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    read_str_attr(g, attr, buf, len);
    H5Gclose(g);
    return 0;
}

int64_t h5ds_count_groups(H5ds *f, int t) {
    quiet_hdf5();
    char path[256];
    snprintf(path, sizeof path, "/tasks/%s", f->tasks[t].name);
    hid_t g = H5Gopen2(f->file, path, H5P_DEFAULT);
    if (g < 0) return -1;
    H5G_info_t info;
    herr_t rc = H5Gget_info(g, &info);
    H5Gclose(g);
    return rc < 0 ? -1 : (int64_t)info.nlinks;
}

// ---- writing ----------------------------------------------------------------------------------------
static int copy_file(const char *src, const char *dst, char *err, size_t errlen) {
    int in = open(src, O_RDONLY), out = in < 0 ? -1 : open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) {
        snprintf(err, errlen, "%s: cannot copy to %s for appending: %s", src, dst, strerror(errno));
        if (in >= 0) close(in);
        return -1;
    }
    enum { BUF = 1 << 20 };
    char *buf = dod_malloc(BUF, "file copy buffer");
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, BUF)) > 0)
        if (write(out, buf, (size_t)n) != n) {
            rc = -1;
            break;
        }
    if (n < 0 || rc) {
        snprintf(err, errlen, "%s: copying to %s failed: %s", src, dst, strerror(errno));
        rc = -1;
    }
    free(buf);
    close(in);
    close(out);
    return rc;
}

H5ds *h5ds_begin_write(const char *final_path, int append, char *err, size_t errlen) {
    quiet_hdf5();
    char tmp[4200], reason[256];
    if (fs_temp_path(final_path, tmp, sizeof tmp)) {
        snprintf(err, errlen, "%.3000s: path too long", final_path);
        return NULL;
    }
    struct stat st;
    int exists = stat(final_path, &st) == 0;
    if (exists && !append) {
        snprintf(err, errlen, "%s: already exists (pass --append to add tasks/samples to it, or remove it)",
                 final_path);
        return NULL;
    }
    if (exists) {
        // Check the existing file before copying it, so a foreign file is refused untouched.
        H5ds *probe = h5ds_open(final_path, err, errlen);
        if (!probe) return NULL;
        h5ds_close(probe);
        if (copy_file(final_path, tmp, err, errlen)) {
            unlink(tmp);
            return NULL;
        }
        H5ds *f = open_file(final_path, tmp, 1, err, errlen);
        if (!f) unlink(tmp);
        return f;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        snprintf(err, errlen, "%s: cannot create %s: %s", final_path, tmp, hdf5_reason(reason));
        return NULL;
    }
    int version = H5DS_FORMAT_VERSION;
    hid_t tasks = H5Gcreate2(file, "/tasks", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int bad = tasks < 0 || write_str_attr(file, "dod_format", H5DS_FORMAT_NAME) ||
              write_num_attr(file, "dod_format_version", H5T_NATIVE_INT, &version, 1);
    if (tasks >= 0) H5Gclose(tasks);
    if (bad) {
        snprintf(err, errlen, "%s: cannot initialise %s: %s", final_path, tmp, hdf5_reason(reason));
        H5Fclose(file);
        unlink(tmp);
        return NULL;
    }
    H5ds *f = dod_calloc(sizeof *f, "H5ds");
    f->file = file;
    f->writable = 1;
    f->deflate = 4;
    snprintf(f->path, sizeof f->path, "%s", final_path);
    snprintf(f->tmp_path, sizeof f->tmp_path, "%s", tmp);
    return f;
}

void h5ds_set_deflate(H5ds *f, int level) { f->deflate = level < 0 ? 0 : level > 9 ? 9 : level; }

static int valid_task_name(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= H5DS_TASK_NAME_MAX) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-'))
            return 0;
    return 1;
}

int h5ds_define_task(H5ds *f, const char *name, LqMode mode, const double *sigmas, int n_sigmas, char *err,
                     size_t errlen) {
    quiet_hdf5();
    char reason[256];
    if (!valid_task_name(name)) {
        snprintf(err, errlen, "task name '%s': use 1-%d characters of [A-Za-z0-9_-]", name, H5DS_TASK_NAME_MAX - 1);
        return -1;
    }
    if (mode == LQ_GAUSSIAN_NOISE && (n_sigmas < 1 || n_sigmas > H5DS_MAX_SIGMAS)) {
        snprintf(err, errlen, "task %s: gaussian_noise needs 1..%d sigmas (got %d)", name, H5DS_MAX_SIGMAS, n_sigmas);
        return -1;
    }
    int t = h5ds_find_task(f, name, NULL, 0);
    if (t >= 0) {
        const H5dsTask *task = &f->tasks[t];
        int same = task->lq_mode == mode && (mode == LQ_STORED || task->n_sigmas == n_sigmas);
        for (int k = 0; same && mode == LQ_GAUSSIAN_NOISE && k < n_sigmas; k++) same = task->sigmas[k] == sigmas[k];
        if (!same) {
            snprintf(err, errlen,
                     "%s: task %s already exists with lq_mode %s%s; appending needs the same mode and sigma list",
                     f->path, name, task->lq_mode == LQ_STORED ? "stored" : "gaussian_noise",
                     task->lq_mode == LQ_STORED ? "" : " and its own sigmas");
            return -1;
        }
        return t;
    }
    if (f->n_tasks >= H5DS_MAX_TASKS) {
        snprintf(err, errlen, "%s: at most %d tasks per file", f->path, H5DS_MAX_TASKS);
        return -1;
    }
    char gpath[256];
    snprintf(gpath, sizeof gpath, "/tasks/%s", name);
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED);
    hid_t g = H5Gcreate2(f->file, gpath, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    int64_t zero = 0;
    int bad = g < 0 || write_str_attr(g, "lq_mode", mode == LQ_STORED ? "stored" : "gaussian_noise") ||
              write_num_attr(g, "count", H5T_NATIVE_INT64, &zero, 1);
    if (!bad && mode == LQ_GAUSSIAN_NOISE)
        bad = write_num_attr(g, "noise_sigmas", H5T_NATIVE_DOUBLE, sigmas, (hsize_t)n_sigmas) ||
              write_str_attr(g, "noise_formula", "lq = uint8(clip(hq + sigma * N(0,1), 0, 255)), truncating cast");
    if (g >= 0) H5Gclose(g);
    if (bad) {
        snprintf(err, errlen, "%s: cannot create task group %s: %s", f->path, gpath, hdf5_reason(reason));
        return -1;
    }
    H5dsTask *task = &f->tasks[f->n_tasks];
    memset(task, 0, sizeof *task);
    snprintf(task->name, sizeof task->name, "%s", name);
    task->lq_mode = mode;
    task->n_sigmas = mode == LQ_GAUSSIAN_NOISE ? n_sigmas : 0;
    for (int k = 0; k < task->n_sigmas; k++) task->sigmas[k] = sigmas[k];
    return f->n_tasks++;
}

static int write_image(hid_t group, const char *name, const Image *img, int deflate) {
    hsize_t dims[3] = {(hsize_t)img->h, (hsize_t)img->w, 3};
    hsize_t chunk[3] = {dims[0] < H5DS_CHUNK ? dims[0] : H5DS_CHUNK, dims[1] < H5DS_CHUNK ? dims[1] : H5DS_CHUNK, 3};
    hid_t space = H5Screate_simple(3, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    if (deflate > 0) H5Pset_deflate(dcpl, (unsigned)deflate);
    hid_t ds = H5Dcreate2(group, name, H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, img->pix);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

int64_t h5ds_append_sample(H5ds *f, int t, const Image *hq, const Image *lq, const H5dsSampleMeta *meta,
                           char *err, size_t errlen) {
    quiet_hdf5();
    char path[512], reason[256];
    H5dsTask *task = &f->tasks[t];
    if (!f->writable) {
        snprintf(err, errlen, "%s: opened read-only", f->path);
        return -1;
    }
    if ((task->lq_mode == LQ_STORED) != (lq != NULL)) {
        snprintf(err, errlen, "%s: task %s (lq_mode %s) %s an LQ image", f->path, task->name,
                 task->lq_mode == LQ_STORED ? "stored" : "gaussian_noise", lq ? "takes no" : "needs");
        return -1;
    }
    if (hq->c != 3 || (lq && (lq->w != hq->w || lq->h != hq->h || lq->c != 3))) {
        snprintf(err, errlen, "%s: task %s: LQ %dx%d and HQ %dx%d must be the same size, RGB", f->path, task->name,
                 lq ? lq->w : 0, lq ? lq->h : 0, hq->w, hq->h);
        return -1;
    }
    int64_t index = task->count;
    sample_path(f, t, index, path, sizeof path);
    hid_t g = H5Gcreate2(f->file, path, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int bad = g < 0 || write_image(g, "hq", hq, f->deflate) || (lq && write_image(g, "lq", lq, f->deflate));
    if (!bad && meta) {
        if (meta->hq_source) bad |= write_str_attr(g, "hq_source", meta->hq_source);
        if (meta->lq_source) bad |= write_str_attr(g, "lq_source", meta->lq_source);
        if (meta->synth_params) bad |= write_str_attr(g, "synth_params", meta->synth_params);
        if (meta->has_noise) {
            uint64_t seed = meta->noise_seed;
            bad |= write_num_attr(g, "noise_sigma", H5T_NATIVE_DOUBLE, &meta->noise_sigma, 1) ||
                   write_num_attr(g, "noise_seed", H5T_NATIVE_UINT64, &seed, 1);
        }
    }
    if (g >= 0) H5Gclose(g);
    if (!bad) {
        char gpath[256];
        snprintf(gpath, sizeof gpath, "/tasks/%s", task->name);
        hid_t tg = H5Gopen2(f->file, gpath, H5P_DEFAULT);
        int64_t count = index + 1;
        bad = tg < 0 || write_num_attr(tg, "count", H5T_NATIVE_INT64, &count, 1);
        if (tg >= 0) H5Gclose(tg);
    }
    if (bad) {
        snprintf(err, errlen, "%s: writing sample %s failed: %s", f->path, path, hdf5_reason(reason));
        return -1;
    }
    task->count = index + 1;
    return index;
}

int h5ds_commit(H5ds *f, char *err, size_t errlen) {
    quiet_hdf5();
    char reason[256];
    int rc = 0;
    if (H5Fclose(f->file) < 0) {
        snprintf(err, errlen, "%s: closing %s failed: %s", f->path, f->tmp_path, hdf5_reason(reason));
        rc = -1;
    }
    if (!rc && fs_commit_temp(f->tmp_path, f->path, err, errlen)) rc = -1;
    if (rc) unlink(f->tmp_path);
    free(f);
    return rc;
}

void h5ds_abort(H5ds *f) {
    if (!f) return;
    quiet_hdf5();
    H5Fclose(f->file);
    unlink(f->tmp_path);
    free(f);
}
