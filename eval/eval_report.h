// Reports of `dod-eval run` (docs/evaluation.md): a Markdown report for stdout, and CSV / JSON
// texts the tool writes atomically, only when every image was scored.
//
// The average over sets is the paper convention: the mean of the per-set means (each set counts
// once, whatever its size); seconds per image is total restore time / images; memory is the
// largest high-water mark.
#pragma once
#include <cjson/cJSON.h>
#include <stdio.h>

#include "eval/eval_run.h"

typedef struct {
    const char *config_path, *checkpoint_path;   // with an adapter: NULL and the adapter file
    const char *model_kind;
    int stage;
    long long step;            // the checkpoint's step count
    const char *source;        // "--data FILE" or "benchmark NAME (FILE): TITLE"
    RestoreOptions restore;
    int max_images;            // 0: all
    const char *save_dir;      // NULL: none
} EvalReportInfo;

typedef struct {
    int images;                // scored, over all sets
    double psnr, ssim;         // mean of the set means
    double lpips;              // likewise (NAN unless the sets were scored with LPIPS)
    double seconds_per_image;
    double peak_rss_mib, arena_peak_mib;
} EvalAverage;

void eval_average(const EvalSetResult *res, int n_sets, EvalAverage *avg);
// How images are restored under o (UNet and VAE tiling), one phrase (=), as the reports print it.
void eval_describe_restore(const RestoreOptions *o, char *buf, size_t len);
// The Markdown report: header, per-set table with the average row, then the paper-style one-row
// table (PSNR/SSIM per set). When some image was not scored the header says INCOMPLETE and the
// image column reads scored/total. Sets scored with LPIPS get an LPIPS column in every report (per set
// and average; per image in the JSON).
void eval_report_markdown(FILE *f, const EvalReportInfo *info, const EvalSetResult *res, int n_sets);
// Heap strings (=), caller frees.
char *eval_report_csv(const EvalSetResult *res, int n_sets);
char *eval_report_json(const EvalReportInfo *info, const EvalSetResult *res, int n_sets);
// The pretty-printed JSON text of doc plus a final newline (= heap string, caller frees); deletes doc.
char *eval_json_text(cJSON *doc);
