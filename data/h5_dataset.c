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

#include "autograd/base.h"
#include "data/degrade.h"
#include "data/h5_attr.h"
#include "data/h5_image.h"
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

static herr_t keep_last_desc(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    char *buf = data;
    const char *desc = e->desc ? e->desc : "", *sys = strstr(desc, "error message = '");
    if (sys)   // an I/O error: libhdf5's text holds the system's reason amid a page of detail
        snprintf(buf, 256, "%.*s", (int)strcspn(sys + 17, "'"), sys + 17);
    else
        snprintf(buf, 256, "%s", desc);
    for (char *c = buf; *c; c++)
        if (*c == '\n') *c = ' ';
    return 0;
}

// The innermost message of the last failed HDF5 call of this thread. Recorded when the call fails
// (libhdf5's "auto" error handler), because the next successful call, often an H5?close on the
// way out, clears the error stack before the message is written.
static _Thread_local char last_failure[256];
static herr_t record_failure(hid_t stack, void *data) {
    (void)data;
    char buf[256] = "";
    H5Ewalk2(stack, H5E_WALK_DOWNWARD, keep_last_desc, buf);
    if (buf[0]) memcpy(last_failure, buf, sizeof buf);
    return 0;
}

// HDF5 prints its error stack to stderr by default; instead failures are recorded (per thread: the
// thread-safe library keeps one error stack per thread) and reported with our own message.
// H5dont_atexit: libhdf5's exit handler closes what is still open, and after an H5Fclose that
// failed (a full disk) it crashes doing so; every file here is closed explicitly, so the handler is
// not installed (this must precede the library's first initialisation, hence here).
static void quiet_hdf5(void) {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, record_failure, NULL);
    last_failure[0] = 0;   // each entry point starts afresh: no reason of an earlier call's failure
}

// The innermost message of the last failed HDF5 call of this thread (into buf; then forgotten).
static const char *hdf5_reason(char *buf) {
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_last_desc, buf);
    if (!buf[0]) memcpy(buf, last_failure, sizeof last_failure);
    last_failure[0] = 0;
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

static int write_num_attr(hid_t obj, const char *name, hid_t type, const void *values, hsize_t n) {
    hid_t space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = attr < 0 ? -1 : H5Awrite(attr, type, values);
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

// ---- opening and checking -----------------------------------------------------------------------
// 0 when every component of the absolute path is a hard link (this format has no others: a soft
// link is not what dod-data writes, an external one would open another file), else -1 with the
// reason. Each prefix is checked before the next is resolved through it.
static int hard_links_only(hid_t file, const char *path, char reason[256]) {
    char prefix[512];
    size_t n = strlen(path);
    if (n >= sizeof prefix) return snprintf(reason, 256, "path too long"), -1;
    for (size_t k = 1; k <= n; k++) {
        if (k < n && path[k] != '/') continue;
        memcpy(prefix, path, k);
        prefix[k] = 0;
        H5L_info_t info;
        if (H5Lget_info(file, prefix, &info, H5P_DEFAULT) < 0) {
            hdf5_reason(reason);
            return -1;
        }
        if (info.type != H5L_TYPE_HARD) {
            snprintf(reason, 256, "%.200s is a soft or external link (not written by dod-data)", prefix);
            return -1;
        }
    }
    return 0;
}

// H5Gopen2 of an absolute path made of hard links only. On failure the reason is in *reason.
static hid_t open_group(hid_t file, const char *path, char reason[256]) {
    if (hard_links_only(file, path, reason)) return -1;
    hid_t g = H5Gopen2(file, path, H5P_DEFAULT);
    if (g < 0) hdf5_reason(reason);
    return g;
}

typedef struct {
    H5ds *f;
    char bad[256];   // the first task link that is not a hard link with a usable name
} TaskScan;

static herr_t collect_task(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group;
    TaskScan *scan = data;
    H5ds *f = scan->f;
    if (info->type != H5L_TYPE_HARD || strlen(name) >= H5DS_TASK_NAME_MAX) {
        snprintf(scan->bad, sizeof scan->bad, "/tasks/%.64s%s is %s", name, strlen(name) > 64 ? "..." : "",
                 info->type != H5L_TYPE_HARD ? "a soft or external link (not written by dod-data)"
                                             : "a task name longer than 63 characters");
        return 1;
    }
    if (f->n_tasks >= H5DS_MAX_TASKS) return 1;   // stop; reported by the caller
    snprintf(f->tasks[f->n_tasks++].name, H5DS_TASK_NAME_MAX, "%s", name);
    return 0;
}

// Reads task t's attributes (lq_mode, count, noise_sigmas) from its group g into f->tasks[t] and
// checks them against the file: count at most the sample groups the task holds, sigmas finite
// and in (0, 255]. 0, or -1 with a message naming the file, the group and the attribute.
static int load_task(H5ds *f, hid_t g, const char *gpath, H5dsTask *task, char *err, size_t errlen) {
    char mode[64], why[256];
    int rc = h5_attr_read_str(g, "lq_mode", mode, sizeof mode, why, sizeof why);
    if (rc) {
        snprintf(err, errlen, "%s: task group %s: %s", f->path, gpath, rc > 0 ? "attribute lq_mode is missing" : why);
        return -1;
    }
    if (!strcmp(mode, "stored")) {
        task->lq_mode = LQ_STORED;
    } else if (!strcmp(mode, "gaussian_noise")) {
        task->lq_mode = LQ_GAUSSIAN_NOISE;
    } else {
        snprintf(err, errlen, "%s: task group %s: attribute lq_mode is '%.64s' (expected 'stored' or 'gaussian_noise')",
                 f->path, gpath, mode);
        return -1;
    }
    rc = h5_attr_read_num(g, "count", H5_ATTR_INT, H5T_NATIVE_INT64, &task->count, 1, why, sizeof why);
    if (rc != 1 || task->count < 0) {
        if (rc == 1) snprintf(why, sizeof why, "attribute count is %" PRId64 " (must be >= 0)", task->count);
        snprintf(err, errlen, "%s: task group %s: %s", f->path, gpath, rc == 0 ? "attribute count is missing" : why);
        return -1;
    }
    // Sample groups are the task group's links; a count above them names samples that cannot exist.
    H5G_info_t info;
    if (H5Gget_info(g, &info) < 0 || (uint64_t)task->count > (uint64_t)info.nlinks) {
        H5Eclear2(H5E_DEFAULT);
        snprintf(err, errlen,
                 "%s: task group %s: attribute count says %" PRId64 " samples but the group holds %llu (damaged file)",
                 f->path, gpath, task->count, (unsigned long long)info.nlinks);
        return -1;
    }
    if (task->lq_mode == LQ_GAUSSIAN_NOISE) {
        rc = h5_attr_read_num(g, "noise_sigmas", H5_ATTR_FLOAT, H5T_NATIVE_DOUBLE, task->sigmas, H5DS_MAX_SIGMAS, why,
                              sizeof why);
        if (rc <= 0) {
            snprintf(err, errlen, "%s: task group %s: %s", f->path, gpath,
                     rc == 0 ? "attribute noise_sigmas is missing (lq_mode gaussian_noise needs it)" : why);
            return -1;
        }
        task->n_sigmas = rc;
        for (int k = 0; k < rc; k++)
            if (!(task->sigmas[k] > 0 && task->sigmas[k] <= 255)) {
                snprintf(err, errlen, "%s: task group %s: attribute noise_sigmas: value %d is %g (must be in (0, 255])",
                         f->path, gpath, k, task->sigmas[k]);
                return -1;
            }
    }
    return 0;
}

// Reads the root attributes and every task's description into f. 0, or -1 with a message.
static int load_index(H5ds *f, char *err, size_t errlen) {
    char fmt[128], reason[256], why[256];
    int rc = h5_attr_read_str(f->file, "dod_format", fmt, sizeof fmt, why, sizeof why);
    if (rc < 0) {
        snprintf(err, errlen, "%s: root %s", f->path, why);
        return -1;
    }
    if (rc > 0 || strcmp(fmt, H5DS_FORMAT_NAME)) {
        snprintf(err, errlen,
                 "%s: an HDF5 file but not a dod dataset (root attribute dod_format is %s%.64s%s, expected '%s'); "
                 "make one with dod-data pack or dod-data synth",
                 f->path, fmt[0] ? "'" : "missing", fmt, fmt[0] ? "'" : "", H5DS_FORMAT_NAME);
        return -1;
    }
    int version = 0;
    rc = h5_attr_read_num(f->file, "dod_format_version", H5_ATTR_INT, H5T_NATIVE_INT, &version, 1, why, sizeof why);
    if (rc != 1) {
        snprintf(err, errlen, "%s: dod dataset without a valid dod_format_version attribute (damaged file?)%s%s",
                 f->path, rc < 0 ? ": " : "", rc < 0 ? why : "");
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
    hid_t tasks = H5Lexists(f->file, "/tasks", H5P_DEFAULT) > 0 ? open_group(f->file, "/tasks", reason) : -1;
    if (tasks < 0) {
        H5Eclear2(H5E_DEFAULT);
        snprintf(err, errlen, "%s: dod dataset without the /tasks group (damaged file?)", f->path);
        return -1;
    }
    hsize_t idx = 0;
    TaskScan scan = {.f = f};
    herr_t it = H5Literate(tasks, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_task, &scan);
    if (it < 0) snprintf(err, errlen, "%s: cannot list /tasks: %s", f->path, hdf5_reason(reason));
    H5Gclose(tasks);
    if (it < 0) return -1;
    if (scan.bad[0]) {
        snprintf(err, errlen, "%s: %s", f->path, scan.bad);
        return -1;
    }
    if (it > 0) {
        snprintf(err, errlen, "%s: more than %d tasks", f->path, H5DS_MAX_TASKS);
        return -1;
    }
    for (int t = 0; t < f->n_tasks; t++) {
        H5dsTask *task = &f->tasks[t];
        char gpath[256];
        snprintf(gpath, sizeof gpath, "/tasks/%s", task->name);
        hid_t g = open_group(f->file, gpath, reason);
        if (g < 0) {
            snprintf(err, errlen, "%s: %s is not a group: %s", f->path, gpath, reason);
            return -1;
        }
        rc = load_task(f, g, gpath, task, err, errlen);
        H5Gclose(g);
        if (rc) return -1;
    }
    return 0;
}

static H5ds *open_file(const char *path, const char *tmp_path, int writable, char *err, size_t errlen) {
    quiet_hdf5();
    const char *file_path = tmp_path ? tmp_path : path;
    struct stat st;
    if (stat(file_path, &st) != 0 || S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: cannot open dataset: %s", path, S_ISDIR(st.st_mode) ? "is a directory" : strerror(errno));
        return NULL;
    }
    // Filters are decoded here or by libhdf5's built-in deflate; never by a plugin library that a
    // file's filter id (and HDF5_PLUGIN_PATH) would make libhdf5 load and run.
    H5PLset_loading_state(0);
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
// Opens the LQ or HQ dataset of a sample and checks it is uint8 [H, W, 3] within the image caps
// (autograd/base.h; the dimensions are checked as the 64-bit values the file holds). Returns the
// dataset (and its size) or -1 with a message.
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
    reason[0] = 0;
    hid_t ds = hard_links_only(f->file, path, reason) ? -1 : H5Dopen2(f->file, path, H5P_DEFAULT);
    if (ds < 0) {
        if (!reason[0]) hdf5_reason(reason);
        snprintf(err, errlen, "%s: cannot open %s: %s", f->path, path, reason);
        return -1;
    }
    hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
    hsize_t dims[3] = {0, 0, 0};
    int ok = H5Sget_simple_extent_ndims(space) == 3 && H5Sget_simple_extent_dims(space, dims, NULL) == 3 &&
             dims[2] == 3 && H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == 1 &&
             H5Tget_sign(type) == H5T_SGN_NONE;
    H5Sclose(space);
    H5Tclose(type);
    H5Eclear2(H5E_DEFAULT);
    if (!ok) {
        snprintf(err, errlen, "%s: %s is not a uint8 [H, W, 3] image", f->path, path);
        H5Dclose(ds);
        return -1;
    }
    char why[256];
    if (dims[0] > INT64_MAX || dims[1] > INT64_MAX ||
        dod_limit_check_image((int64_t)dims[0], (int64_t)dims[1], why, sizeof why)) {
        if (dims[0] > INT64_MAX || dims[1] > INT64_MAX) snprintf(why, sizeof why, "dimensions beyond 2^63");
        snprintf(err, errlen, "%s: %s: %s", f->path, path, why);
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

int h5ds_read_crop(H5ds *f, int t, int64_t i, int which, int y, int x, int ch, int cw, uint8_t *dst, char *err,
                   size_t errlen) {
    int h, w;
    char why[512];
    hid_t ds = open_image(f, t, i, which, &h, &w, err, errlen);
    if (ds < 0) return -1;
    if (y < 0 || x < 0 || ch <= 0 || cw <= 0 || y > h - ch || x > w - cw) {
        snprintf(err, errlen, "%s: crop %dx%d at (y %d, x %d) does not fit sample %s/%08" PRId64 " (%dx%d, HxW)", f->path,
                 ch, cw, y, x, f->tasks[t].name, i, h, w);
        H5Dclose(ds);
        return -1;
    }
    H5ImageLayout lay;
    int rc = h5_image_layout(ds, h, w, &lay, why, sizeof why);
    if (rc == 0 && lay.chunked && !f->hyperslab_only) {
        rc = h5_image_read_chunks(ds, &lay, y, x, ch, cw, dst, why, sizeof why);
    } else if (rc == 0) {
        // Contiguous/compact storage (checked complete), or a chunked one with direct reads turned
        // off: libhdf5 reads it. Chunks go through the direct decoder first all the same: libhdf5
        // reads a missing chunk as fill values and copies one stored short past its buffer.
        if (lay.chunked) rc = h5_image_read_chunks(ds, &lay, y, x, ch, cw, dst, why, sizeof why);
        if (rc == 0) {
            hsize_t start[3] = {(hsize_t)y, (hsize_t)x, 0}, count[3] = {(hsize_t)ch, (hsize_t)cw, 3};
            hid_t fspace = H5Dget_space(ds);
            hid_t mspace = H5Screate_simple(3, count, NULL);
            if (H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                H5Dread(ds, H5T_NATIVE_UINT8, mspace, fspace, H5P_DEFAULT, dst) < 0) {
                hdf5_reason(why);
                rc = -1;
            }
            H5Sclose(mspace);
            H5Sclose(fspace);
        }
    }
    if (rc)
        snprintf(err, errlen, "%s: reading %s of sample %s/%08" PRId64 " failed (corrupt data?): %s", f->path,
                 which == H5DS_LQ ? "lq" : "hq", f->tasks[t].name, i, why);
    H5Eclear2(H5E_DEFAULT);
    H5Dclose(ds);
    return rc ? -1 : 0;
}

int h5ds_read_image(H5ds *f, int t, int64_t i, int which, Image *img, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    int h, w;
    hid_t ds = open_image(f, t, i, which, &h, &w, err, errlen);
    if (ds < 0) return -1;
    H5Dclose(ds);
    char what[600];   // an allocation failure names the image (h and w are within the caps)
    snprintf(what, sizeof what, "%dx%d image %s of sample %s/%08" PRId64 " of %.400s", h, w, which == H5DS_LQ ? "lq" : "hq",
             f->tasks[t].name, i, f->path);
    Image out = {w, h, 3, dod_malloc((size_t)w * h * 3, what)};
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

int h5ds_sample_attr(H5ds *f, int t, int64_t i, const char *attr, char *buf, size_t len, char *err, size_t errlen) {
    quiet_hdf5();
    char path[512], why[256];
    buf[0] = 0;
    if (t < 0 || t >= f->n_tasks || i < 0 || i >= f->tasks[t].count) {
        snprintf(err, errlen, "%s: sample %" PRId64 " of task %d is out of range", f->path, i, t);
        return -1;
    }
    sample_path(f, t, i, path, sizeof path);
    hid_t g = open_group(f->file, path, why);
    if (g < 0) {
        snprintf(err, errlen, "%s: cannot open sample group %s: %s", f->path, path, why);
        return -1;
    }
    int rc = h5_attr_read_str(g, attr, buf, len, why, sizeof why);
    H5Gclose(g);
    if (rc < 0) {
        snprintf(err, errlen, "%s: sample %s: %s", f->path, path, why);
        return -1;
    }
    return 0;
}

int64_t h5ds_count_groups(H5ds *f, int t) {
    quiet_hdf5();
    char path[256], reason[256];
    snprintf(path, sizeof path, "/tasks/%s", f->tasks[t].name);
    hid_t g = open_group(f->file, path, reason);
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
    int rc = 0, saved = 0;
    while (rc == 0 && (n = read(in, buf, BUF)) > 0)
        for (ssize_t done = 0; done < n;) {   // a short write is not an error yet; the next one says why
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w <= 0) {
                saved = w < 0 ? errno : ENOSPC;
                rc = -1;
                break;
            }
            done += w;
        }
    if (rc == 0 && n < 0) saved = errno, rc = -1;
    if (close(out) != 0 && rc == 0) saved = errno, rc = -1;   // delayed write errors surface here
    if (rc) snprintf(err, errlen, "%s: copying to %s for appending failed: %s", src, dst, strerror(saved));
    free(buf);
    close(in);
    return rc;
}

H5ds *h5ds_begin_write(const char *final_path, int append, char *err, size_t errlen) {
    quiet_hdf5();
    char tmp[4200], reason[256];
    if (fs_temp_path(final_path, tmp, sizeof tmp)) {
        snprintf(err, errlen, "%.3000s: path too long", final_path);
        return NULL;
    }
    // the temp files of this output that a killed dod-data left (fs_remove_stale_tmp)
    const char *slash = strrchr(final_path, '/'), *name = slash ? slash + 1 : final_path;
    char out_dir[4200];
    snprintf(out_dir, sizeof out_dir, "%.*s", slash ? (int)(slash - final_path) + (slash == final_path) : 1,
             slash ? final_path : ".");
    fs_remove_stale_tmp(out_dir, &name, 1, "dod-data");
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
