// Runs a fuzz target's LLVMFuzzerTestOneInput over files, without libFuzzer: how every build
// replays the committed corpus (seeds and former crashes) as a regression test.
//   fuzz_replay_NAME DIR_OR_FILE...   each file (each file of each directory) once; exit 0 when all ran
//   fuzz_replay_NAME --write-seeds DIR   the target writes its seed inputs into DIR
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)(n > 0 ? n : 1));
    size_t got = fread(buf, 1, (size_t)(n > 0 ? n : 0), f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, got);
    free(buf);
    return 0;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return fuzz_write_seeds(argv[2]);
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR_OR_FILE... | --write-seeds DIR\n", argv[0]);
        return 2;
    }
    int n_run = 0, bad = 0;
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            fprintf(stderr, "%s: missing\n", argv[a]);
            bad = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            bad |= run_file(argv[a]);
            n_run++;
            continue;
        }
        DIR *d = opendir(argv[a]);
        char **names = NULL;
        int n = 0;
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            names = realloc(names, sizeof(char *) * (size_t)(n + 1));
            names[n++] = strdup(e->d_name);
        }
        if (d) closedir(d);
        qsort(names, (size_t)n, sizeof(char *), cmp_names);
        for (int i = 0; i < n; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], names[i]);
            fprintf(stderr, "replay %s\n", path);
            bad |= run_file(path);
            n_run++;
            free(names[i]);
        }
        free(names);
    }
    printf("%d inputs replayed%s\n", n_run, bad ? ", some could not be read" : "");
    return bad || n_run == 0;
}
