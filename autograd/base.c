// Errors, allocation, clocks, environment switches, filesystem helpers and the build's identity
// (see base.h).
#include "autograd/base.h"

#include <errno.h>
#include <fcntl.h>
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

// ---- the build's identity ---------------------------------------------------------------------
bool dod_version_requested(int argc, char **argv, const char *tool) {
    if (argc < 2 || strcmp(argv[1], "--version")) return false;
    printf("%s %s (git %s), %s build, %s\ndependencies:\n%s", tool, DOD_VERSION, DOD_GIT_REVISION, DOD_BUILD_TYPE,
           DOD_C_COMPILER, DOD_DEPENDENCIES);
    return true;
}
