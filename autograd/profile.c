// Per-op time profile and the FLOP counter (see autograd/profile.h).
#include "autograd/profile.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/cuda/cuda_backend.h"

#define PROFILE_MAX_ROWS 160

enum { PASS_FORWARD = 0, PASS_BACKWARD = 1, PASS_RECOMPUTE = 2 };
static const char *const pass_names[] = {"fwd", "bwd", "rec"};

typedef struct {
    const char *op;  // static op name (string literal)
    int pass;        // PASS_*
    long calls;
    double seconds;
    double kept_bytes;  // arena growth (host + device) over the op's intervals: what it holds till the step ends
    double flops;       // FLOPs executed in this row's op and pass (model + recomputed)
    double flops_model; // of which model FLOPs
    int kind;           // FlopKind of the FLOPs charged, -1 for an op that counts none
} ProfileRow;

static int enabled = -1;  // -1: DOD_PROFILE not read yet
static ProfileRow rows[PROFILE_MAX_ROWS];
static int n_rows;
static ProfileRow *open_row;  // the interval being timed, or NULL
static double open_since;
static size_t open_mark;  // host + device arena in use when the open interval began
static bool any_cuda;
static int recompute_depth;  // > 0 inside ag_checkpoint's re-run of a block
static OpFlops totals[FLOPS_KINDS];

static void report_at_exit(void) { op_profile_report(stderr, "dod: op profile (DOD_PROFILE)"); }

bool op_profile_enabled(void) {
    if (enabled < 0) {
        enabled = dod_env_flag("DOD_PROFILE", false);
        if (enabled) atexit(report_at_exit);
    }
    return enabled;
}

static ProfileRow *row_of(const char *op, int pass) {
    for (int i = 0; i < n_rows; i++)
        if (rows[i].pass == pass && (rows[i].op == op || !strcmp(rows[i].op, op))) return &rows[i];
    if (n_rows == PROFILE_MAX_ROWS) return NULL;  // more distinct ops than rows: the rest go untimed
    rows[n_rows] = (ProfileRow){.op = op, .pass = pass, .kind = -1};
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

static void open_interval(const char *op, int pass, Device dev) {
    if (!op_profile_enabled()) return;
    if (dev == DEV_CUDA && !any_cuda) {
        any_cuda = true;
        open_mark += cuda_arena_mark();  // the open interval's start, counted as arenas_in_use now counts
    }
    close_open(dev);
    open_row = row_of(op, pass);
}

void op_profile_forward(const char *op, Device dev) {
    open_interval(op, recompute_depth > 0 ? PASS_RECOMPUTE : PASS_FORWARD, dev);
}
void op_profile_backward_begin(const char *op, Device dev) { open_interval(op, PASS_BACKWARD, dev); }

void op_profile_backward_end(Device dev) {
    if (op_profile_enabled()) close_open(dev);
}

void op_profile_recompute_begin(void) { recompute_depth++; }
void op_profile_recompute_end(void) {
    DOD_CHECK(recompute_depth > 0, "op_profile_recompute_end", "called without op_profile_recompute_begin");
    recompute_depth--;
}

// ---- FLOP counter ------------------------------------------------------------------------------
static void charge_row(const char *op, int pass, FlopKind kind, double model, double recomputed) {
    if (!op_profile_enabled()) return;
    ProfileRow *r = row_of(op, pass);
    if (!r) return;
    r->flops += model + recomputed;
    r->flops_model += model;
    r->kind = (int)kind;
}

void op_flops_forward(const char *op, FlopKind kind, double flops) {
    if (recompute_depth > 0) {
        totals[kind].recomputed += flops;
        charge_row(op, PASS_RECOMPUTE, kind, 0.0, flops);
    } else {
        totals[kind].forward += flops;
        charge_row(op, PASS_FORWARD, kind, flops, 0.0);
    }
}

void op_flops_backward(const char *op, FlopKind kind, double flops, double recomputed) {
    totals[kind].backward += flops;
    totals[kind].recomputed += recomputed;
    charge_row(op, PASS_BACKWARD, kind, flops, recomputed);
}

OpFlops op_flops_total(FlopKind kind) {
    if (kind != FLOPS_KINDS) return totals[kind];
    OpFlops s = {0, 0, 0};
    for (int k = 0; k < FLOPS_KINDS; k++) {
        s.forward += totals[k].forward;
        s.backward += totals[k].backward;
        s.recomputed += totals[k].recomputed;
    }
    return s;
}

OpFlops op_flops_sub(OpFlops a, OpFlops b) {
    return (OpFlops){a.forward - b.forward, a.backward - b.backward, a.recomputed - b.recomputed};
}

const char *op_flops_kind_name(FlopKind kind) {
    static const char *const names[FLOPS_KINDS] = {"GEMM (linear, matmul, projection)", "convolution", "attention"};
    return kind < FLOPS_KINDS ? names[kind] : "all";
}

// ---- peak rates ----------------------------------------------------------------------------------
typedef struct {
    const char *match;  // a substring of the device name; the first matching row wins
    double tflops;      // dense bf16 tensor-core peak, TFLOP/s; 0: known not to be in this table
    const char *label;
} PeakRow;

// NVIDIA data sheets, dense bf16 (the sparse figures halved). Rows that name a part only to keep it
// from matching a broader row below have 0: GH200 would match "H200", H100 NVL "H100".
static const PeakRow peak_table[] = {
    {"GH200", 0, NULL},
    {"H100 NVL", 0, NULL},
    {"H100 PCIe", 756.0, "H100 PCIe"},
    {"H200", 989.4, "H200"},
    {"H100", 989.4, "H100 SXM"},
};

double dod_peak_bf16_tflops(const char *device_name, const char **label) {
    if (label) *label = NULL;
    if (!device_name) return 0;
    for (size_t i = 0; i < sizeof peak_table / sizeof peak_table[0]; i++)
        if (strstr(device_name, peak_table[i].match)) {
            if (label) *label = peak_table[i].label;
            return peak_table[i].tflops;
        }
    return 0;
}

double op_peak_tflops(Device dev, char *label, size_t len) {
    if (len) label[0] = 0;
    const char *env = getenv("DOD_PEAK_TFLOPS");
    if (env && *env) {
        char *end;
        double forced = strtod(env, &end);
        DOD_CHECK(*end == 0 && forced > 0 && forced < 1e6, "DOD_PEAK_TFLOPS",
                  "'%s': expected the peak in TFLOP/s, a positive number", env);
        snprintf(label, len, "%g TFLOP/s from DOD_PEAK_TFLOPS", forced);
        return forced;
    }
    if (dev != DEV_CUDA || !dod_cuda_available()) return 0;
    const char *name = dod_cuda_device_name(), *row = NULL;
    double peak = dod_peak_bf16_tflops(name, &row);
    if (peak > 0) snprintf(label, len, "%.1f TFLOP/s dense bf16 (%s), %s", peak, row, name);
    return peak;
}

void op_flops_rate_line(OpFlops f, double seconds, Device dev, char *buf, size_t len) {
    bool cuda = dev == DEV_CUDA;
    double unit = cuda ? 1e12 : 1e9, s = seconds > 0 ? seconds : 1e-30;
    const char *u = cuda ? "TFLOP/s" : "GFLOP/s";
    char peak_label[256];
    double peak = op_peak_tflops(dev, peak_label, sizeof peak_label) * 1e12;
    double model = op_flops_model(f) / s, executed = op_flops_executed(f) / s;
    int n = snprintf(buf, len, "%.2f %s", model / unit, u);
    if (peak > 0 && n >= 0 && (size_t)n < len) n += snprintf(buf + n, len - (size_t)n, ", MFU %.1f%%", 100 * model / peak);
    if (f.recomputed > 0 && n >= 0 && (size_t)n < len) {
        n += snprintf(buf + n, len - (size_t)n, "; executed (with recomputation) %.2f %s", executed / unit, u);
        if (peak > 0 && n >= 0 && (size_t)n < len) n += snprintf(buf + n, len - (size_t)n, ", HFU %.1f%%", 100 * executed / peak);
    }
    if (n >= 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, " (%s)", peak > 0 ? peak_label : cuda ? "no peak known for this GPU: no MFU"
                                                                                : "CPU: no peak assumed, no MFU");
}

// ---- report ----------------------------------------------------------------------------------------
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
    Device dev = any_cuda ? DEV_CUDA : DEV_CPU;
    double unit = any_cuda ? 1e12 : 1e9;
    char peak_label[256];
    double peak = op_peak_tflops(dev, peak_label, sizeof peak_label) * 1e12;
    double total = 0;
    for (int i = 0; i < n_rows; i++) total += sorted[i].seconds;
    fprintf(f, "%s: %.1f ms in ops%s\n", title, total * 1e3, any_cuda ? " (CUDA, synchronised per op)" : "");
    fprintf(f, "  %-28s %-4s %8s %11s %6s %10s %10s %9s %7s\n", "op", "pass", "calls", "total ms", "share", "kept MiB",
            "GFLOP", any_cuda ? "TFLOP/s" : "GFLOP/s", "% peak");
    for (int i = 0; i < n_rows; i++) {
        const ProfileRow *r = &sorted[i];
        if (!r->calls) continue;
        fprintf(f, "  %-28s %-4s %8ld %11.2f %5.1f%% %10.1f", r->op, pass_names[r->pass], r->calls, r->seconds * 1e3,
                total > 0 ? 100 * r->seconds / total : 0.0, r->kept_bytes / 1048576.0);
        if (r->flops > 0) {
            double rate = r->seconds > 0 ? r->flops / r->seconds : 0;
            fprintf(f, " %10.3f %9.2f", r->flops / 1e9, rate / unit);
            if (peak > 0) fprintf(f, " %6.1f%%", 100 * rate / peak);
        }
        fputc('\n', f);
    }
    // The FLOP summary over the same rows: the step's rate, and where the time without FLOPs goes.
    OpFlops all = {0, 0, 0};
    double kind_flops[FLOPS_KINDS] = {0}, kind_seconds[FLOPS_KINDS] = {0}, other_seconds = 0;
    for (int i = 0; i < n_rows; i++) {
        const ProfileRow *r = &sorted[i];
        if (r->kind < 0) {
            other_seconds += r->seconds;
            continue;
        }
        kind_flops[r->kind] += r->flops;
        kind_seconds[r->kind] += r->seconds;
        if (r->pass == PASS_FORWARD) all.forward += r->flops_model;
        if (r->pass == PASS_BACKWARD) all.backward += r->flops_model;
        all.recomputed += r->flops - r->flops_model;
    }
    if (op_flops_executed(all) > 0) {
        char line[512];
        op_flops_rate_line(all, total, dev, line, sizeof line);
        fprintf(f, "  FLOPs (2 per multiply-add): model %.3f GFLOP (forward %.3f, backward %.3f), recomputed %.3f\n",
                op_flops_model(all) / 1e9, all.forward / 1e9, all.backward / 1e9, all.recomputed / 1e9);
        fprintf(f, "  over the op time: %s\n", line);
        fprintf(f, "  by kind (executed FLOPs over the kind's op time):\n");
        for (int k = 0; k < FLOPS_KINDS; k++) {
            if (kind_seconds[k] <= 0) continue;
            double rate = kind_flops[k] / kind_seconds[k];
            fprintf(f, "    %-34s %5.1f%% of op time %10.2f %s", op_flops_kind_name((FlopKind)k),
                    total > 0 ? 100 * kind_seconds[k] / total : 0.0, rate / unit, any_cuda ? "TFLOP/s" : "GFLOP/s");
            if (peak > 0) fprintf(f, " %6.1f%% of peak", 100 * rate / peak);
            fputc('\n', f);
        }
        fprintf(f, "    %-34s %5.1f%% of op time\n", "ops without FLOPs counted", total > 0 ? 100 * other_seconds / total : 0.0);
    }
    fflush(f);
}

void op_profile_reset(void) {
    n_rows = 0;
    open_row = NULL;
    open_since = dod_now_seconds();
    open_mark = arenas_in_use();
}
