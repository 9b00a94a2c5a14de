// Per-op time profile (see autograd/profile.h).
#include "autograd/profile.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"

#define PROFILE_MAX_ROWS 128

typedef struct {
    const char *op;  // static op name (string literal)
    bool backward;
    long calls;
    double seconds;
    double kept_bytes;  // arena growth (host + device) over the op's intervals: what it holds till the step ends
} ProfileRow;

static int enabled = -1;  // -1: DOD_PROFILE not read yet
static ProfileRow rows[PROFILE_MAX_ROWS];
static int n_rows;
static ProfileRow *open_row;  // the interval being timed, or NULL
static double open_since;
static size_t open_mark;  // host + device arena in use when the open interval began
static bool any_cuda;

static void report_at_exit(void) { op_profile_report(stderr, "dod: op profile (DOD_PROFILE)"); }

bool op_profile_enabled(void) {
    if (enabled < 0) {
        enabled = dod_env_flag("DOD_PROFILE", false);
        if (enabled) atexit(report_at_exit);
    }
    return enabled;
}

static ProfileRow *row_of(const char *op, bool backward) {
    for (int i = 0; i < n_rows; i++)
        if (rows[i].backward == backward && !strcmp(rows[i].op, op)) return &rows[i];
    if (n_rows == PROFILE_MAX_ROWS) return NULL;  // more distinct ops than rows: the rest go untimed
    rows[n_rows] = (ProfileRow){.op = op, .backward = backward};
    return &rows[n_rows++];
}

static size_t arenas_in_use(void) { return arena_mark() + (any_cuda ? cuda_arena_mark() : 0); }

// Closes the open interval at the current time (after the device has finished its work).
static void close_open(Device dev) {
    if (dev == DEV_CUDA || any_cuda) dod_cuda_synchronize("op profile");
    double t = dod_now_seconds();
    size_t mark = arenas_in_use();
    if (open_row) {
        open_row->seconds += t - open_since;
        // An arena reset inside the interval (the step ended without a backward, e.g. an eval
        // forward) rewinds the mark: that op kept nothing beyond the step.
        if (mark > open_mark) open_row->kept_bytes += (double)mark - (double)open_mark;
        open_row->calls++;
    }
    open_row = NULL;
    open_since = t;
    open_mark = mark;
}

static void open_interval(const char *op, bool backward, Device dev) {
    if (!op_profile_enabled()) return;
    if (dev == DEV_CUDA && !any_cuda) {
        any_cuda = true;
        open_mark += cuda_arena_mark();  // the open interval's start, counted as arenas_in_use now counts
    }
    close_open(dev);
    open_row = row_of(op, backward);
}

void op_profile_forward(const char *op, Device dev) { open_interval(op, false, dev); }
void op_profile_backward_begin(const char *op, Device dev) { open_interval(op, true, dev); }

void op_profile_backward_end(Device dev) {
    if (op_profile_enabled()) close_open(dev);
}

static int by_time_desc(const void *a, const void *b) {
    double x = ((const ProfileRow *)a)->seconds, y = ((const ProfileRow *)b)->seconds;
    return (x < y) - (x > y);
}

void op_profile_report(FILE *f, const char *title) {
    if (!op_profile_enabled()) return;
    close_open(DEV_CPU);
    ProfileRow sorted[PROFILE_MAX_ROWS];
    memcpy(sorted, rows, sizeof(ProfileRow) * (size_t)n_rows);
    qsort(sorted, (size_t)n_rows, sizeof(ProfileRow), by_time_desc);
    double total = 0;
    for (int i = 0; i < n_rows; i++) total += sorted[i].seconds;
    fprintf(f, "%s: %.1f ms in ops%s\n", title, total * 1e3, any_cuda ? " (CUDA, synchronised per op)" : "");
    fprintf(f, "  %-28s %-4s %8s %11s %6s %10s\n", "op", "pass", "calls", "total ms", "share", "kept MiB");
    for (int i = 0; i < n_rows; i++)
        if (sorted[i].calls)
            fprintf(f, "  %-28s %-4s %8ld %11.2f %5.1f%% %10.1f\n", sorted[i].op, sorted[i].backward ? "bwd" : "fwd",
                    sorted[i].calls, sorted[i].seconds * 1e3, total > 0 ? 100 * sorted[i].seconds / total : 0.0,
                    sorted[i].kept_bytes / 1048576.0);
    fflush(f);
}

void op_profile_reset(void) {
    n_rows = 0;
    open_row = NULL;
    open_since = dod_now_seconds();
    open_mark = arenas_in_use();
}
