// Errors, allocation, clocks, environment switches, filesystem helpers, limits on file-declared
// sizes and the build's identity (see base.h).
#include "autograd/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

// Generated in the build directory: dod_build_info.h by configure (scripts/build_info.h.in),
// dod_git_revision.h at every build (scripts/git_revision.cmake).
#include "dod_build_info.h"
#include "dod_git_revision.h"

// ---- errors -------------------------------------------------------------------------------------
void dod_fatal(const char *where, const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "dod: %s: ", where);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

void dod_out_of_memory(size_t bytes, const char *what) {
    dod_fatal("out of memory", "asked for %zu bytes (%.2f GiB) for %s", bytes,
              bytes / (1024.0 * 1024.0 * 1024.0), what ? what : "?");
}

// ---- allocation ---------------------------------------------------------------------------------
void *dod_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) dod_out_of_memory(bytes, what);
    return p;
}

void *dod_calloc(size_t bytes, const char *what) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) dod_out_of_memory(bytes, what);
    return p;
}

// ---- clocks, memory, environment ----------------------------------------------------------------
double dod_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double dod_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // Linux: KiB
}

bool dod_env_flag(const char *name, bool dflt) {
    const char *v = getenv(name);
    if (!v || !v[0]) return dflt;
    return strcmp(v, "0") != 0;
}

// ---- filesystem ---------------------------------------------------------------------------------
int fs_mkdirs(const char *dir, char *err, size_t errlen) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST) {
                snprintf(err, errlen, "%s: cannot create directory: %s", buf, strerror(errno));
                return -1;
            }
            if (!c) return 0;
            *p = c;
        }
    }
}

int fs_temp_path(const char *path, char *tmp, size_t len) {
    return (size_t)snprintf(tmp, len, "%s.tmp.%d", path, (int)getpid()) < len ? 0 : -1;
}

int fs_commit_temp(const char *tmp, const char *path, char *err, size_t errlen) {
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);   // the data is on disk before the name points at it
        close(fd);
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int fs_write_text_atomic(const char *path, const char *text, char *err, size_t errlen) {
    char tmp[4300];
    if (fs_temp_path(path, tmp, sizeof tmp)) {
        snprintf(err, errlen, "%.4000s: cannot write: path too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t n = strlen(text);
    bool ok = fd >= 0 && write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    if (fd >= 0 && close(fd) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

// ---- stale temporary files --------------------------------------------------------------------
// The pid of "<base>.tmp.<digits>" (base into *base_len), or -1 for any other name.
static long tmp_pid(const char *name, size_t *base_len) {
    const char *dot = strstr(name, ".tmp.");
    for (const char *next = dot; next; next = strstr(next + 1, ".tmp.")) dot = next;   // the last one
    if (!dot || dot == name) return -1;
    const char *digits = dot + 5;
    char *end;
    errno = 0;
    long pid = strtol(digits, &end, 10);
    if (errno || end == digits || *end || pid <= 0) return -1;
    *base_len = (size_t)(dot - name);
    return pid;
}

int fs_remove_stale_tmp(const char *dir, const char *const *patterns, int n_patterns, const char *who) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t base_len;
        long pid = tmp_pid(e->d_name, &base_len);
        if (pid < 0 || base_len >= 1024) continue;
        char base[1024];
        memcpy(base, e->d_name, base_len);
        base[base_len] = 0;
        int ours = 0;
        for (int k = 0; k < n_patterns && !ours; k++) ours = fnmatch(patterns[k], base, 0) == 0;
        if (!ours || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0) {
            fprintf(stderr, "%s: removed stale temporary file %s (left by process %ld)\n", who, path, pid);
            removed++;
        }
    }
    closedir(d);
    return removed;
}

// ---- limits on what a file declares ------------------------------------------------------------
static const struct {
    const char *env;
    int64_t dflt, max;   // max: what the code handles (image sides are ints; pixel counts fit int64 products)
} LIMITS[DOD_LIMIT_COUNT] = {
    [DOD_LIMIT_IMAGE_SIDE] = {"DOD_MAX_IMAGE_SIDE", 16384, 1 << 30},
    [DOD_LIMIT_IMAGE_PIXELS] = {"DOD_MAX_IMAGE_PIXELS", 67108864, 1ll << 40},
    [DOD_LIMIT_ALLOC_MIB] = {"DOD_MAX_ALLOC_MIB", 4096, 1 << 30},
};

const char *dod_limit_env(DodLimit which) { return LIMITS[which].env; }

int64_t dod_limit(DodLimit which) {
    const char *v = getenv(LIMITS[which].env);
    if (!v || !v[0]) return LIMITS[which].dflt;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 1 || x > LIMITS[which].max)
        dod_fatal(LIMITS[which].env, "'%s' is not an integer in [1, %" PRId64 "] (default %" PRId64 ")", v,
                  LIMITS[which].max, LIMITS[which].dflt);
    return x;
}

int dod_limit_check_image(int64_t h, int64_t w, char *why, size_t len) {
    int64_t side = dod_limit(DOD_LIMIT_IMAGE_SIDE), pixels = dod_limit(DOD_LIMIT_IMAGE_PIXELS);
    if (h < 1 || w < 1) {
        snprintf(why, len, "image of %" PRId64 "x%" PRId64 " (HxW) pixels is empty", h, w);
        return -1;
    }
    if (h > side || w > side) {
        snprintf(why, len, "image of %" PRId64 "x%" PRId64 " (HxW) pixels exceeds the largest side %s = %" PRId64
                           " (set the environment variable to allow larger images)",
                 h, w, LIMITS[DOD_LIMIT_IMAGE_SIDE].env, side);
        return -1;
    }
    if (w > pixels / h) {   // h * w > pixels without forming a product that could overflow
        snprintf(why, len, "image of %" PRId64 "x%" PRId64 " (HxW) = %" PRId64 " pixels exceeds %s = %" PRId64
                           " (set the environment variable to allow larger images)",
                 h, w, h * w, LIMITS[DOD_LIMIT_IMAGE_PIXELS].env, pixels);
        return -1;
    }
    return 0;
}

int dod_limit_check_alloc(uint64_t bytes, const char *what, char *why, size_t len) {
    uint64_t mib = (uint64_t)dod_limit(DOD_LIMIT_ALLOC_MIB);
    if (bytes / 1048576u < mib) return 0;
    snprintf(why, len, "%s would need %.1f MiB, more than %s = %" PRIu64 " (set the environment variable to allow it)",
             what, bytes / 1048576.0, LIMITS[DOD_LIMIT_ALLOC_MIB].env, mib);
    return -1;
}

// ---- the build's identity ---------------------------------------------------------------------
bool dod_version_requested(int argc, char **argv, const char *tool) {
    if (argc < 2 || strcmp(argv[1], "--version")) return false;
    printf("%s %s (git %s), %s build, %s\ndependencies:\n%s", tool, DOD_VERSION, DOD_GIT_REVISION, DOD_BUILD_TYPE,
           DOD_C_COMPILER, DOD_DEPENDENCIES);
    return true;
}
