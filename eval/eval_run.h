// `dod-eval run`: restore every test image of one or more dataset tasks with a model, score it, and
// collect per-task numbers (docs/evaluation.md). Needs HDF5 (the dataset reader).
//
// Flow: eval_prepare opens every set's file, finds its task, checks the stored noise level against
// the set's sigma and counts the images (all before a model is loaded, so a mistyped path fails in
// a second); eval_run then, image by image, runs the per-image core eval_image (read LQ and HQ,
// size-checked; restore the LQ, eval/restore.h (stages whole or tiled); score output vs HQ with the set's
// MetricOpts, metrics_pair_f32 on the clamped float output), optionally saves PNGs, and adds each
// scored image to its set's EvalScores. A bad image is recorded with its problem and the run goes
// on; the caller decides what a partial result means. Training validation (eval/validate.h) uses
// the same core and scores.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/h5ds.h"
#include "eval/metrics.h"
#include "eval/restore.h"
#include "layers/lpips.h"
#include "layers/model.h"

#define EVAL_ERR_LEN 1024

typedef struct {
    char label[64];      // report name (a benchmark column, or the task name)
    char path[4096];     // dataset file
    char task[64];       // task inside it
    double sigma;        // < 0: no noise check
    MetricOpts metrics;
} EvalSet;

typedef enum {
    EVAL_OK = 0,
    EVAL_UNREADABLE,     // sample missing or unreadable in the file
    EVAL_SIZE,           // LQ and HQ sizes differ
    EVAL_MODEL,          // the model failed (wrong shape, non-finite output)
    EVAL_METRIC,         // scoring failed (e.g. smaller than the SSIM window after cropping)
    EVAL_SAVE,           // a PNG could not be written
    EVAL_N_PROBLEMS
} EvalProblem;
extern const char *const eval_problem_names[EVAL_N_PROBLEMS];

typedef struct {
    int64_t index;       // sample index in the task
    char name[256];      // output stem: the ground truth's source file stem (else the LQ's, else the index)
    int w, h, tiles;     // tiles: the UNet's latent tiles (1: whole)
    int vae_tiles;       // the VAE's tiles (1: whole)
    double psnr, ssim, seconds;   // seconds: the model's restore time alone
    double psnr_input, ssim_input;   // the degraded input vs the ground truth (EvalImageOptions.score_input)
    double colour_shift;             // mean colour shift of the output vs the ground truth, 0-255 (eval/metrics.h)
    double colour_shift_input;       // the same of the degraded input (EvalImageOptions.score_input)
    double lpips;                    // LPIPS(output, ground truth) with EvalImageOptions.lpips, else NaN
    int status;          // EvalProblem
    char err[EVAL_ERR_LEN];
} EvalImage;

// ---- the per-image core -------------------------------------------------------------------------
typedef struct {
    Model *model;               // on any device (restore_chw moves what it runs)
    RestoreOptions restore;
    MetricOpts metrics;
    bool score_input;           // also score the degraded input against the ground truth
    Lpips *lpips;               // non-NULL: also score LPIPS (eval/lpips_metric.h; weights on the model's device)
} EvalImageOptions;

// What eval_image keeps of a scored image (grids, PNGs): the input, the restored output quantised
// to 8 bits (restore_unit_to_image) and the ground truth.
typedef struct {
    Image lq, out, hq;
} EvalImages;
void eval_images_free(EvalImages *k);

// Restores sample i of task t of f with o->model and scores it: writes (=) im's w, h, tiles, psnr,
// ssim, colour_shift, seconds (psnr_input, ssim_input, colour_shift_input with o->score_input, lpips with
// o->lpips; NaN otherwise) and status, with the
// bare reason in im->err when it is not EVAL_OK (callers add what names the image). keep (may be
// NULL) receives (=) the images when the image was scored, else zeroed images.
void eval_image(const EvalImageOptions *o, H5ds *f, int t, int64_t i, EvalImage *im, EvalImages *keep);

// ---- per-task scores ----------------------------------------------------------------------------
typedef struct {
    int images;                     // scored
    double psnr, ssim;              // means over them (sums until eval_scores_finish)
    double psnr_input, ssim_input;  // the same of the degraded inputs (when scored)
    double colour_shift, colour_shift_input;   // the same of the mean colour shift (0-255), output and input
    double lpips;                   // the same of LPIPS (when scored)
    double seconds;                 // the model's restore time per image
} EvalScores;
// Adds (+=) a scored image's numbers.
void eval_scores_add(EvalScores *s, const EvalImage *im);
// The sums into means (=): every field but images divided by images; NaN when there are none.
void eval_scores_finish(EvalScores *s);

// ---- evaluation of test sets ---------------------------------------------------------------------
typedef struct {
    EvalSet set;
    int n_images;        // images to evaluate (count, or max_images)
    int64_t n_in_file;
    bool noise_on_read;  // gaussian_noise task: LQ made when read (not a stored, published set)
    EvalImage *images;
    int problems[EVAL_N_PROBLEMS];
    EvalScores scores;   // over the scored images
    bool has_lpips;      // scored with LPIPS too (EvalRunOptions.lpips)
    double peak_rss_mib, arena_peak_mib;   // process high-water marks read after this set (arena: the
                                           // host arena, plus the device arena for a model on CUDA)
} EvalSetResult;

typedef struct {
    Model *model;           // on any device; its device's arena is reported
    RestoreOptions restore;
    const char *save_dir;   // NULL: save nothing; else DIR/<label>/restored/<name>.png + DIR/<label>/grid.png
    bool save_inputs;       // also DIR/<label>/input/ and DIR/<label>/gt/
    int grid_rows;          // images in each set's grid (the first ones)
    int progress;           // 0 off, 1 redraw a line on a terminal, 2 one line per update (not a terminal)
    Lpips *lpips;           // non-NULL: also score LPIPS (eval/lpips_metric.h; weights on model_device)
} EvalRunOptions;

// Opens and checks every set; fills res[i] (=; set, n_images, n_in_file, noise_on_read). max_images
// (0: all) caps each set. 0, or -1 with every problem, one line each naming the file / task.
int eval_prepare(const EvalSet *sets, int n_sets, int max_images, EvalSetResult *res, char *err, size_t errlen);
// Evaluates every set prepared in res. Returns the number of images not scored (0: complete), or
// -1 with a message on a fatal error (a dataset that cannot be reopened, an output directory that
// cannot be made).
int eval_run(const EvalRunOptions *o, EvalSetResult *res, int n_sets, char *err, size_t errlen);
void eval_results_free(EvalSetResult *res, int n_sets);
// The folder of a set under EvalRunOptions.save_dir (=): its label with ' ' and '/' made '_'.
void eval_set_dir_name(const char *label, char *buf, size_t len);

// The sets of `--data FILE`: every task of the file (or those named in the comma-separated
// only_tasks, in that order), labelled by task name, scored with mo. Writes (=) *sets (heap,
// free()) and *n. 0, or -1 with a message naming the file / task.
int eval_sets_from_file(const char *path, const char *only_tasks, const MetricOpts *mo, EvalSet **sets, int *n,
                        char *err, size_t errlen);
