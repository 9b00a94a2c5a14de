// The base of the code base: errors, allocation, clocks, memory high-water mark, environment switches,
// the filesystem helpers every tool needs (mkdir -p, atomic text writes, stale temp files), the caps
// on sizes a file may declare, and the build's identity
// (every tool's --version). Nothing here knows about tensors; autograd/tensor.h includes it, and code
// that needs only these (data/, the metrics, the configuration) includes this header alone.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---- errors ------------------------------------------------------------------------------------
// Print "dod: <where>: <message>" to stderr and exit(1). Never returns.
void dod_fatal(const char *where, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
// Abort unless cond holds; `op` names the operation (or file/key) at fault.
#define DOD_CHECK(cond, op, ...) do { if (!(cond)) dod_fatal((op), __VA_ARGS__); } while (0)
// dod_fatal("out of memory", "asked for N bytes (G GiB) for <what>"): an allocation that failed.
void dod_out_of_memory(size_t bytes, const char *what) __attribute__((noreturn));

// ---- allocation ----------------------------------------------------------------------------------
// malloc/calloc that exit with "out of memory: asked for N bytes for <what>" (0 bytes: 1 byte).
void *dod_malloc(size_t bytes, const char *what);
void *dod_calloc(size_t bytes, const char *what);

// ---- clocks, memory, environment ---------------------------------------------------------------
// Seconds on the monotonic clock (for durations: rates, ETAs, timings).
double dod_now_seconds(void);
// Peak resident memory of this process so far, MiB.
double dod_peak_rss_mib(void);
// An on/off switch from the environment: unset or empty -> dflt, "0" -> false, anything else -> true.
bool dod_env_flag(const char *name, bool dflt);

// ---- filesystem ---------------------------------------------------------------------------------
// Creates dir and its missing parents. 0, or -1 with "<dir>: cannot create directory: <reason>".
int fs_mkdirs(const char *dir, char *err, size_t errlen);
// Every file the tools write is written atomically: to a temp file beside it ("path.tmp.<pid>"),
// flushed to disk, then renamed into place, so a failed run never leaves a half-written file.
// Writes (=) text to path that way. 0, or -1 with "<path>: cannot write: <reason>" (temp file removed).
int fs_write_text_atomic(const char *path, const char *text, char *err, size_t errlen);
// For writers that make the file themselves (PNG, safetensors, HDF5): the temp path of path (=).
// 0, or -1 when it does not fit in len.
int fs_temp_path(const char *path, char *tmp, size_t len);
// Flushes the finished temp file tmp to disk and renames it to path; on failure removes tmp.
// 0, or -1 with "<path>: cannot rename <tmp> into place: <reason>".
int fs_commit_temp(const char *tmp, const char *path, char *err, size_t errlen);

// Temporary files left behind by a killed process: every atomic write goes through fs_temp_path's
// "<final name>.tmp.<pid>" renamed into place, so a kill -9 or power loss in between leaves that file
// forever. The run or tool that owns a directory removes, at start-up, those whose process is gone:
// the files of dir named "<base>.tmp.<pid>" where <base> matches one of the n_patterns fnmatch
// patterns and no process <pid> exists (a live one, ours included, keeps its file: it may be writing
// it). Each removal is reported on stderr as "<who>: removed stale temporary file PATH (left by
// process PID)". Returns how many were removed; a missing dir removes none.
int fs_remove_stale_tmp(const char *dir, const char *const *patterns, int n_patterns, const char *who);

// ---- limits on what a file declares ------------------------------------------------------------
// Caps on what a file may declare before anything is allocated for it. Every size a user's file
// states (image dimensions, chunk sizes, model-config widths and counts) is checked against these
// before use, so a small malformed file cannot ask for gigabytes or hours. Each cap has a default
// chosen well above real data and can be raised (or lowered) through its environment variable;
// docs/data-format.md ("Limits") lists them.
typedef enum {
    DOD_LIMIT_IMAGE_SIDE,     // DOD_MAX_IMAGE_SIDE: largest image height or width, pixels (16384)
    DOD_LIMIT_IMAGE_PIXELS,   // DOD_MAX_IMAGE_PIXELS: largest height x width, pixels (67108864 = 8192^2)
    DOD_LIMIT_ALLOC_MIB,      // DOD_MAX_ALLOC_MIB: largest single buffer sized by a file's declaration (4096)
    DOD_LIMIT_COUNT
} DodLimit;

// The cap's current value: its environment variable when set (a positive integer; anything else
// is fatal, naming the variable), else the default.
int64_t dod_limit(DodLimit which);
// The environment variable that sets the cap ("DOD_MAX_IMAGE_SIDE", ...).
const char *dod_limit_env(DodLimit which);

// 0 when an h x w image is within the side and pixel caps; otherwise -1 with why = "HxW ... exceeds
// DOD_MAX_IMAGE_SIDE = N (raise it to ...)" (the caller adds the file or sample).
int dod_limit_check_image(int64_t h, int64_t w, char *why, size_t len);
// 0 when a buffer of `bytes` sized from a file's declaration is within DOD_MAX_ALLOC_MIB; otherwise
// -1 with why naming `what`, the size and the variable.
int dod_limit_check_alloc(uint64_t bytes, const char *what, char *why, size_t len);

// ---- the build's identity ---------------------------------------------------------------------
// When argv[1] is "--version": prints to stdout the tool's name, the project version (CMakeLists.txt
// project(dod VERSION ...)), the git revision the build was made from (`git describe --always
// --dirty` at build time; "unknown" outside a git checkout), the build type and compiler, and the
// dependency lines configure printed, and returns true (the tool then exits 0):
//   dod-train 0.1.0 (git b23b01f-dirty), Release build, GNU 12.2.0
//   dependencies:
//     OpenMP ... found
//     ...
// Every tool's main starts with it.
bool dod_version_requested(int argc, char **argv, const char *tool);
