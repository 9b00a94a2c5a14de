// The HTML report of `dod-eval run --html DIR` (docs/evaluation.md): one self-contained folder,
//   DIR/index.html                       the page (inline CSS and JavaScript, no external URL)
//   DIR/<set>/{input,restored,gt}/<name>.png, DIR/<set>/grid.png   the images it shows (eval_run's
//                                        saved images; files, not data URIs, so a page of a large
//                                        benchmark stays quick to open and the PNGs stay usable)
// The page: the run's header (model, checkpoint, data, protocol, restore mode), a summary table (one
// row per set, then the average: mean of the set means), and per set a table of its images (name,
// size, tiles, PSNR, SSIM, LPIPS when scored, seconds) whose last column compares two of degraded / restored / ground
// truth with a slider (the left image shows left of the handle); a selector switches the pair for
// every image. Clicking a column header sorts that table by it (again: reversed). Without
// JavaScript the tables and images still show, unsorted and without the slider.
//
// The markup is well-formed XML as well as HTML (closed elements, quoted attributes, the script in
// a CDATA section), so `xmllint --noout` checks it (tests/cli_eval_run.sh).
//
// Writing is atomic for the whole folder: the run saves into a staging folder "<DIR>.tmp.<pid>", the
// page is written there, and only a complete report is renamed to DIR (an earlier report at DIR is
// renamed aside, then deleted). DIR may be absent, an empty folder, or an earlier dod-eval report;
// anything else is refused before the run starts, so no user file is ever replaced.
#pragma once
#include <stddef.h>

#include "eval/eval_report.h"

// Checks that dir may receive a report and creates the staging folder (= tmp, "<dir>.tmp.<pid>").
// 0, or -1 with a message naming dir.
int report_html_begin(const char *dir, char *tmp, size_t len, char *err, size_t errlen);
// Writes tmp/index.html for res (every image scored, its PNGs saved under tmp by eval_run with
// save_inputs). 0, or -1 with a message naming the file.
int report_html_write(const char *tmp, const EvalReportInfo *info, const EvalSetResult *res, int n_sets, char *err,
                      size_t errlen);
// Moves tmp into place as dir, replacing an earlier report. 0, or -1 with a message (tmp is kept).
int report_html_publish(const char *tmp, const char *dir, char *err, size_t errlen);
// Deletes the staging folder tmp (after a failed run).
void report_html_discard(const char *tmp);
