// Removing temporary files of dead processes (see data/stale_tmp.h).
#include "data/stale_tmp.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
