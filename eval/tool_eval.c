// dod-eval: evaluation front end. Each subcommand is one function with its own options:
//   dod-eval metrics --pred DIR --gt DIR [...]   score restored images against ground truth
//   dod-eval run (--config C --checkpoint CKPT | --adapter A --base DIR) (--data FILE | --bench INI
//                --data-dir DIR) [...]          restore test sets with a model and score them
// (docs/metrics.md: profiles and `metrics` reports; docs/evaluation.md: `run` and benchmarks).
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/base.h"
#include "autograd/tensor.h"
#include "data/pairing.h"
#include "eval/bench.h"
#include "eval/eval_report.h"
#include "eval/eval_run.h"
#include "eval/lpips_metric.h"
#include "eval/metrics.h"
#include "eval/report_html.h"
#include "layers/adapter.h"
#include "layers/config_model.h"
#include "layers/model.h"
#include "layers/model_weights.h"

// ---- shared helpers -------------------------------------------------------------------------------
// Non-negative decimal int, the whole string; -1 otherwise.
static int parse_count(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT_MAX) return -1;
    return (int)v;
}

// dir/name into buf; 0, or -1 when it does not fit.
static int join_path(char *buf, size_t len, const char *dir, const char *name) {
    return (size_t)snprintf(buf, len, "%s/%s", dir, name) < len ? 0 : -1;
}

static void stem_of(const char *name, char *buf, size_t len) {
    snprintf(buf, len, "%s", name);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

// ---- dod-eval metrics -----------------------------------------------------------------------------
typedef struct {
    char stem[512];
    char pred[1024], gt[1024];   // full paths; empty when that side is missing
    int status;                  // 0 scored, else a Problem
    double psnr, ssim, lpips;    // lpips: NAN unless --lpips-vgg / --lpips-lin
    char err[2600];
} PairResult;

typedef enum { P_OK = 0, P_NO_PRED, P_NO_GT, P_DUPLICATE, P_UNREADABLE, P_SIZE, P_OTHER, P_COUNT } Problem;
static const char *problem_names[P_COUNT] = {"scored", "missing prediction", "prediction without ground truth",
                                             "duplicate name", "unreadable", "size mismatch", "other error"};

static void metrics_usage(FILE *f) {
    fprintf(f,
            "usage: dod-eval metrics --pred DIR --gt DIR [--profile promptir|basicsr] [--y-channel]\n"
            "                        [--crop-border N] [--crop-multiple N] [--json FILE] [--csv FILE]\n"
            "\n"
            "Scores every image in --pred against the image of the same stem (name without extension;\n"
            ".png .jpg .jpeg .bmp) in --gt and prints one row per pair (PSNR dB, 4 decimals; SSIM, 6)\n"
            "and their average. Every gt image needs a prediction and every prediction a gt image.\n"
            "\n"
            "  --profile promptir   (default) AirNet/PromptIR/AdaIR protocol: scikit-image 0.19 on RGB\n"
            "                       float32 in [0, 1], SSIM 7x7 uniform window, sample covariance\n"
            "  --profile basicsr    BasicSR calculate_psnr/calculate_ssim: float64 of the 8-bit values,\n"
            "                       SSIM 11x11 Gaussian (sigma 1.5), valid region\n"
            "  --y-channel          basicsr only: score BasicSR's Y (BT.601, unrounded)\n"
            "  --crop-border N      remove N pixels on every side before scoring (default 0)\n"
            "  --crop-multiple N    first centre-crop each image to a multiple of N, as PromptIR's\n"
            "                       crop_img(base=16) does (481x321 -> 480x320); 0 = off (default)\n"
            "  --json FILE          write the per-image numbers and the means as JSON\n"
            "  --csv FILE           write name,psnr,ssim rows as CSV\n"
            "  --lpips-vgg FILE     with --lpips-lin: add an LPIPS column (VGG16, lpips v0.1; lower is\n"
            "  --lpips-lin FILE     closer): torchvision's vgg16-397923af.pth and the lpips package's\n"
            "                       weights/v0.1/vgg.pth (PyTorch or safetensors files); whole RGB image\n"
            "                       after --crop-multiple, x / 127.5 - 1 as lpips.im2tensor\n"
            "\n"
            "Reports are written (temp file + rename) only when every pair was scored. PSNR of identical\n"
            "images is inf (\"inf\" in JSON). Exit status: 0 all scored, 1 some pair failed, 2 usage.\n");
}

// Pairs by exact stem; a stem twice in one folder (a.png and a.jpg) is a duplicate problem.
static PairResult *match_dirs(const char *pred_dir, const char *gt_dir, int *n_out, char *err, size_t errlen) {
    char **pn, **gn;
    int np, ng;
    if (list_images(pred_dir, &pn, &np, err, errlen)) return NULL;
    if (list_images(gt_dir, &gn, &ng, err, errlen)) {
        free_names(pn, np);
        return NULL;
    }
    PairResult *res = dod_calloc(sizeof(PairResult) * (size_t)(np + ng + 1), "pair list");
    int n = 0;
    char stem[512], other[512];
    // every gt image, with its prediction if there is exactly one
    for (int i = 0; i < ng; i++) {
        PairResult *r = &res[n++];
        stem_of(gn[i], r->stem, sizeof r->stem);
        if (join_path(r->gt, sizeof r->gt, gt_dir, gn[i])) {
            r->status = P_OTHER;
            snprintf(r->err, sizeof r->err, "%s/%s: path longer than %zu bytes", gt_dir, gn[i], sizeof r->gt - 1);
            continue;
        }
        int found = 0;
        for (int j = 0; j < np; j++) {
            stem_of(pn[j], stem, sizeof stem);
            if (strcmp(stem, r->stem)) continue;
            if (found++) {
                r->status = P_DUPLICATE;
                snprintf(r->err, sizeof r->err, "%s: two predictions named %s.* (%s and %s)", pred_dir, r->stem,
                         strrchr(r->pred, '/') + 1, pn[j]);
            } else if (join_path(r->pred, sizeof r->pred, pred_dir, pn[j])) {
                r->status = P_OTHER;
                snprintf(r->err, sizeof r->err, "%s/%s: path longer than %zu bytes", pred_dir, pn[j],
                         sizeof r->pred - 1);
            }
        }
        for (int j = 0; j < i && !r->status; j++) {
            stem_of(gn[j], other, sizeof other);
            if (!strcmp(other, r->stem)) {
                r->status = P_DUPLICATE;
                snprintf(r->err, sizeof r->err, "%s: two ground truths named %s.* (%s and %s)", gt_dir, r->stem,
                         gn[j], gn[i]);
            }
        }
        if (!found && !r->status) {
            r->status = P_NO_PRED;
            snprintf(r->err, sizeof r->err, "%s: no prediction for %s (looked for %s/%s.*)", r->gt, r->stem,
                     pred_dir, r->stem);
        }
    }
    // predictions nobody asked for
    for (int j = 0; j < np; j++) {
        stem_of(pn[j], stem, sizeof stem);
        int matched = 0;
        for (int i = 0; i < ng && !matched; i++) {
            stem_of(gn[i], other, sizeof other);
            matched = !strcmp(stem, other);
        }
        if (matched) continue;
        PairResult *r = &res[n++];
        snprintf(r->stem, sizeof r->stem, "%s", stem);
        join_path(r->pred, sizeof r->pred, pred_dir, pn[j]);  // only named in the message below
        r->status = P_NO_GT;
        snprintf(r->err, sizeof r->err, "%s: no ground truth %s/%s.*", r->pred, gt_dir, stem);
    }
    free_names(pn, np);
    free_names(gn, ng);
    *n_out = n;
    return res;
}

static void score_one(PairResult *r, const MetricOpts *o) {
    Image pred, gt;
    if (image_load(r->pred, &pred, r->err, sizeof r->err)) {
        r->status = P_UNREADABLE;
        return;
    }
    if (image_load(r->gt, &gt, r->err, sizeof r->err)) {
        r->status = P_UNREADABLE;
        image_free(&pred);
        return;
    }
    char why[512];
    int rc = metrics_pair(&pred, &gt, o, &r->psnr, &r->ssim, why, sizeof why);
    if (rc) {
        r->status = rc == METRICS_ERR_SIZE ? P_SIZE : P_OTHER;
        snprintf(r->err, sizeof r->err, "%s vs %s: %s", r->pred, r->gt, why);
    }
    image_free(&pred);
    image_free(&gt);
}

static cJSON *json_number_or_inf(double v) {
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateString(v > 0 ? "inf" : "nan");
}

static char *report_json(const PairResult *res, int n, const MetricOpts *o, const char *pred_dir,
                         const char *gt_dir, double mean_psnr, double mean_ssim, double mean_lpips, int scored) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "tool", "dod-eval metrics");
    cJSON_AddStringToObject(doc, "profile", metrics_profile_name(o->profile));
    cJSON_AddBoolToObject(doc, "y_channel", o->y_channel);
    cJSON_AddNumberToObject(doc, "crop_border", o->crop_border);
    cJSON_AddNumberToObject(doc, "crop_multiple", o->crop_multiple);
    cJSON_AddStringToObject(doc, "pred_dir", pred_dir);
    cJSON_AddStringToObject(doc, "gt_dir", gt_dir);
    cJSON_AddNumberToObject(doc, "count", scored);
    cJSON_AddItemToObject(doc, "mean_psnr", json_number_or_inf(mean_psnr));
    cJSON_AddItemToObject(doc, "mean_ssim", json_number_or_inf(mean_ssim));
    if (!isnan(mean_lpips)) cJSON_AddNumberToObject(doc, "mean_lpips", mean_lpips);
    cJSON *images = cJSON_AddArrayToObject(doc, "images");
    for (int i = 0; i < n; i++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "name", res[i].stem);
        cJSON_AddStringToObject(it, "pred", res[i].pred);
        cJSON_AddStringToObject(it, "gt", res[i].gt);
        cJSON_AddItemToObject(it, "psnr", json_number_or_inf(res[i].psnr));
        cJSON_AddItemToObject(it, "ssim", json_number_or_inf(res[i].ssim));
        if (!isnan(mean_lpips)) cJSON_AddNumberToObject(it, "lpips", res[i].lpips);
        cJSON_AddItemToArray(images, it);
    }
    return eval_json_text(doc);
}

static char *report_csv(const PairResult *res, int n, bool with_lpips) {
    size_t cap = 64 + (size_t)n * 640, len = 0;
    char *out = dod_malloc(cap, "csv report");
    len += snprintf(out + len, cap - len, "name,psnr,ssim%s\n", with_lpips ? ",lpips" : "");
    for (int i = 0; i < n; i++) {
        len += snprintf(out + len, cap - len, "%s,%.10g,%.10g", res[i].stem, res[i].psnr, res[i].ssim);
        len += with_lpips ? snprintf(out + len, cap - len, ",%.10g\n", res[i].lpips) : snprintf(out + len, cap - len, "\n");
    }
    return out;
}

// Both LPIPS files or neither (usage error otherwise); with both, the network (f32 weights) on device
// (=, NULL with the loader's message printed: exit 1). *status: 2 usage, 1 load failure, 0 fine.
static Lpips *lpips_from_flags(const char *tool, const char *vgg, const char *lin, Device device, int *status) {
    *status = 0;
    if (!vgg && !lin) return NULL;
    if (!vgg || !lin) {
        fprintf(stderr, "%s: --lpips-vgg and --lpips-lin go together (torchvision's vgg16-397923af.pth and the lpips "
                        "package's weights/v0.1/vgg.pth)\n", tool);
        *status = 2;
        return NULL;
    }
    char err[1024];
    Lpips *m = lpips_load(vgg, lin, DT_F32, err, sizeof err);
    if (!m) {
        fprintf(stderr, "%s: %s\n", tool, err);
        *status = 1;
        return NULL;
    }
    lpips_to_device(m, device);
    return m;
}

static int cmd_metrics(int argc, char **argv) {
    const char *pred_dir = NULL, *gt_dir = NULL, *json_path = NULL, *csv_path = NULL, *lpips_vgg = NULL, *lpips_lin = NULL;
    MetricOpts o = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    static const struct option longopts[] = {
        {"pred", required_argument, 0, 'p'},          {"gt", required_argument, 0, 'g'},
        {"profile", required_argument, 0, 'P'},       {"y-channel", no_argument, 0, 'y'},
        {"crop-border", required_argument, 0, 'b'},   {"crop-multiple", required_argument, 0, 'm'},
        {"json", required_argument, 0, 'j'},          {"csv", required_argument, 0, 'c'},
        {"lpips-vgg", required_argument, 0, 'V'},     {"lpips-lin", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': pred_dir = optarg; break;
        case 'g': gt_dir = optarg; break;
        case 'j': json_path = optarg; break;
        case 'c': csv_path = optarg; break;
        case 'V': lpips_vgg = optarg; break;
        case 'L': lpips_lin = optarg; break;
        case 'y': o.y_channel = true; break;
        case 'P':
            if (metrics_profile_parse(optarg, &o.profile)) {
                fprintf(stderr, "dod-eval metrics: unknown --profile '%s' (promptir or basicsr)\n", optarg);
                return 2;
            }
            break;
        case 'b':
        case 'm': {
            int v = parse_count(optarg);
            if (v < 0) {
                fprintf(stderr, "dod-eval metrics: --%s needs a non-negative integer, got '%s'\n",
                        ch == 'b' ? "crop-border" : "crop-multiple", optarg);
                return 2;
            }
            if (ch == 'b') o.crop_border = v;
            else o.crop_multiple = v;
            break;
        }
        case 'h': metrics_usage(stdout); return 0;
        default: {
            const char *needs = NULL;
            for (int k = 0; longopts[k].name && optopt; k++)
                if (longopts[k].val == optopt) needs = longopts[k].name;
            if (needs) fprintf(stderr, "dod-eval metrics: --%s needs a value\n", needs);
            else fprintf(stderr, "dod-eval metrics: unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "(dod-eval metrics --help lists the options)\n");
            return 2;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dod-eval metrics: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!pred_dir || !gt_dir) {
        fprintf(stderr, "dod-eval metrics: --pred DIR and --gt DIR are required (--help lists the options)\n");
        return 2;
    }
    if (o.y_channel && o.profile != METRIC_PROFILE_BASICSR) {
        fprintf(stderr, "dod-eval metrics: --y-channel needs --profile basicsr (the promptir protocol scores RGB)\n");
        return 2;
    }

    int lpips_status;
    Lpips *lpips = lpips_from_flags("dod-eval metrics", lpips_vgg, lpips_lin, DEV_CPU, &lpips_status);
    if (lpips_status) return lpips_status;
    char err[8192];
    int n = 0;
    PairResult *res = match_dirs(pred_dir, gt_dir, &n, err, sizeof err);
    if (!res || n == 0) {
        if (!res) fprintf(stderr, "dod-eval metrics: %s\n", err);
        else fprintf(stderr, "dod-eval metrics: no images (.png .jpg .jpeg .bmp) in %s or %s\n", pred_dir, gt_dir);
        free(res);
        lpips_free(lpips);
        return 1;
    }

    // Pairs in parallel; each metrics_pair then runs single-threaded (OpenMP nesting is off).
    const int progress = isatty(STDERR_FILENO) && n > 1;
    int done = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++) {
        if (res[i].status == P_OK) score_one(&res[i], &o);
        if (progress) {
#pragma omp critical(progress)
            {
                done++;
                fprintf(stderr, "\rdod-eval metrics: %d/%d", done, n);
                fflush(stderr);
            }
        }
    }
    if (progress) fprintf(stderr, "\r%40s\r", "");
    for (int i = 0; i < n; i++) res[i].lpips = NAN;
    for (int i = 0; lpips && i < n; i++) {   // the network runs its own threads: one pair at a time
        if (res[i].status != P_OK) continue;
        Image pred, gt;
        char why[512];
        if (image_load(res[i].pred, &pred, res[i].err, sizeof res[i].err)) {
            res[i].status = P_UNREADABLE;
            continue;
        }
        if (image_load(res[i].gt, &gt, res[i].err, sizeof res[i].err)) {
            res[i].status = P_UNREADABLE;
            image_free(&pred);
            continue;
        }
        if (lpips_metric_images(lpips, &pred, &gt, o.crop_multiple, &res[i].lpips, why, sizeof why)) {
            res[i].status = P_OTHER;
            snprintf(res[i].err, sizeof res[i].err, "%s vs %s: %s", res[i].pred, res[i].gt, why);
        }
        image_free(&pred);
        image_free(&gt);
        if (progress) fprintf(stderr, "\rdod-eval metrics: LPIPS %d/%d", i + 1, n);
    }
    if (progress && lpips) fprintf(stderr, "\r%40s\r", "");
    lpips_free(lpips);

    int counts[P_COUNT] = {0};
    int name_w = 9;
    for (int i = 0; i < n; i++) {
        counts[res[i].status]++;
        if (res[i].status == P_OK && (int)strlen(res[i].stem) > name_w) name_w = (int)strlen(res[i].stem);
    }
    char desc[160];
    metrics_opts_describe(&o, desc, sizeof desc);
    const bool with_lpips = lpips_vgg != NULL;
    printf("%-*s %9s %9s%s\n", name_w, "name", "PSNR", "SSIM", with_lpips ? "     LPIPS" : "");
    double sum_psnr = 0, sum_ssim = 0, sum_lpips = 0;
    for (int i = 0; i < n; i++) {
        if (res[i].status != P_OK) continue;
        printf("%-*s %9.4f %9.6f", name_w, res[i].stem, res[i].psnr, res[i].ssim);
        if (with_lpips) printf(" %9.6f", res[i].lpips);
        printf("\n");
        sum_psnr += res[i].psnr;
        sum_ssim += res[i].ssim;
        sum_lpips += res[i].lpips;
    }
    const int scored = counts[P_OK];
    const double mean_psnr = scored ? sum_psnr / scored : NAN, mean_ssim = scored ? sum_ssim / scored : NAN;
    const double mean_lpips = scored && with_lpips ? sum_lpips / scored : NAN;
    if (scored) {
        printf("%-*s %9.4f %9.6f", name_w, "average", mean_psnr, mean_ssim);
        if (with_lpips) printf(" %9.6f", mean_lpips);
        printf("   (%d image%s; %s%s)\n", scored, scored == 1 ? "" : "s", desc, with_lpips ? "; LPIPS VGG v0.1" : "");
    }

    int rc = 0;
    if (scored != n) {
        for (int i = 0; i < n; i++)
            if (res[i].status != P_OK) fprintf(stderr, "dod-eval metrics: %s\n", res[i].err);
        fprintf(stderr, "dod-eval metrics: %d of %d pairs not scored (", n - scored, n);
        for (int p = 1, first = 1; p < P_COUNT; p++)
            if (counts[p]) {
                fprintf(stderr, "%s%d %s", first ? "" : ", ", counts[p], problem_names[p]);
                first = 0;
            }
        if (scored) fprintf(stderr, "); the average above covers only the %d scored", scored);
        else fprintf(stderr, "); nothing was scored");
        fprintf(stderr, "%s\n", json_path || csv_path ? ", and no report file was written" : "");
        rc = 1;
    } else {
        if (json_path) {
            char *text = report_json(res, n, &o, pred_dir, gt_dir, mean_psnr, mean_ssim, mean_lpips, scored);
            if (fs_write_text_atomic(json_path, text, err, sizeof err)) {
                fprintf(stderr, "dod-eval metrics: %s\n", err);
                rc = 1;
            }
            free(text);
        }
        if (csv_path) {
            char *text = report_csv(res, n, with_lpips);
            if (fs_write_text_atomic(csv_path, text, err, sizeof err)) {
                fprintf(stderr, "dod-eval metrics: %s\n", err);
                rc = 1;
            }
            free(text);
        }
    }
    free(res);
    return rc;
}

// ---- dod-eval run ---------------------------------------------------------------------------------
static void run_usage(FILE *f) {
    fprintf(f,
            "usage: dod-eval run --config FILE --checkpoint CKPT --data FILE.h5 [--tasks a,b] [options]\n"
            "       dod-eval run --config FILE --checkpoint CKPT --bench configs/bench_aio3.ini --data-dir DIR [options]\n"
            "       dod-eval run --adapter ADAPTER --base SD_DIR (--data FILE.h5 | --bench INI --data-dir DIR) [options]\n"
            "\n"
            "Restores every test image with the model of --config and the trained tensors of --checkpoint (a\n"
            "checkpoint file or a run dir), or with an adapter made by dod-export on its base model, scores it\n"
            "against its ground truth and prints a Markdown report (per set: images, PSNR, SSIM, seconds per\n"
            "image, peak memory; their average; a paper-style row). Images are restored as dod-restore restores\n"
            "them (docs/restore.md).\n"
            "\n"
            "  --config FILE         the training configuration (the run dir's config.ini will do); only the\n"
            "                        model's keys are read ([model] [lora] [modulation] [stage], [checkpoint] dir)\n"
            "  --set S.K=V           override one of them (repeatable), e.g. --set model.base=DIR\n"
            "  --checkpoint CKPT     checkpoint file, or a run dir (its latest checkpoint; the prompts are\n"
            "                        read from its " MODEL_PROMPT_CACHE " when they and the base are unchanged)\n"
            "  --adapter FILE        an adapter (dod-export) instead of --config/--checkpoint ...\n"
            "  --base SD_DIR         ... on this base model (refused when it is not the one it was made for)\n"
            "  --device cpu|cuda     with --adapter: where to run (default cpu; cuda: bf16 weights, mixed precision)\n"
            "  --adm-weights FILE    with --adapter: the guided-diffusion weights of an adapter with the adm\n"
            "                        extractor (required for those; other weights are refused)\n"
            "  --data FILE.h5        evaluate every task of a dod-data file (or those of --tasks a,b)\n"
            "  --bench INI           a benchmark definition (configs/bench_aio3.ini, bench_aio5.ini) ...\n"
            "  --data-dir DIR        ... whose files are taken relative to DIR (default: .)\n"
            "  --profile P           promptir (default) | basicsr; with --bench, overrides the benchmark's\n"
            "  --crop-multiple N     centre crop to a multiple of N before scoring (default 16, the AiO protocol;\n"
            "                        0 = off); with --bench, overrides the benchmark's\n"
            "  --crop-border N       pixels removed on every side before scoring (default 0)\n"
            "  --y-channel           basicsr only: score the Y channel\n"
            "  --max-images N        only the first N images of each set (quick runs; the report says so)\n"
            "  --tile N              UNet latent tiles of N latent pixels when the latent is larger than N x N\n"
            "                        (default 96, the public code's; 0 = never tile)\n"
            "  --tile-overlap N      their overlap in latent pixels, Gaussian-blended (default 32)\n"
            "  --max-memory GIB      memory budget: the VAE and the extractor run whole while they fit (default 8;\n"
            "                        0 = no limit)\n"
            "  --vae-tile N          force VAE tiles of N pixels on larger images (default 0: from --max-memory)\n"
            "  --vae-overlap N       VAE tile overlap in pixels (default 64)\n"
            "  --merge auto|on|off   per-image merge of the UNet's LoRA on the CPU (default auto; docs/restore.md)\n"
            "  --save-images DIR     DIR/<set>/restored/<name>.png and DIR/<set>/grid.png (input | output | gt)\n"
            "  --save-inputs         with --save-images: also DIR/<set>/input/ and DIR/<set>/gt/\n"
            "  --grid-rows N         images in each grid (default 4)\n"
            "  --csv FILE            per-set rows and the average as CSV\n"
            "  --json FILE           everything, per image too, as JSON\n"
            "  --html DIR            a report page DIR/index.html with the images it shows (degraded, restored,\n"
            "                        ground truth; sortable tables, a comparison slider); not with --save-images\n"
            "  --lpips-vgg FILE      with --lpips-lin: score LPIPS too (VGG16, lpips v0.1; an LPIPS column in\n"
            "  --lpips-lin FILE      every report): torchvision's vgg16-397923af.pth and the lpips package's\n"
            "                        weights/v0.1/vgg.pth (PyTorch or safetensors files)\n"
            "  --progress            progress bar with ETA on stderr even when it is not a terminal\n"
            "  --no-progress         no progress bar\n"
            "\n"
            "Reports (--csv, --json, --html) are written (temp file or folder + rename) only when every image was\n"
            "scored.\n"
            "Exit status: 0 all scored, 1 an error or some image not scored (each named on stderr), 2 usage.\n");
}

#ifdef DOD_HAVE_INIPARSER
static int cmd_run(int argc, char **argv) {
    const char *config_path = NULL, *ckpt = NULL, *data = NULL, *bench_path = NULL, *data_dir = ".";
    const char *adapter = NULL, *base = NULL, *adm_weights = NULL;
    Device device = DEV_CPU;
    const char *only_tasks = NULL, *save_dir = NULL, *csv_path = NULL, *json_path = NULL, *html_dir = NULL,
               *lpips_vgg = NULL, *lpips_lin = NULL;
    char html_tmp[4300] = "";   // --html: the staging folder the run saves into
    const char **sets_kv = dod_calloc(sizeof(char *) * (size_t)argc, "--set list");
    int n_kv = 0, max_images = 0, grid_rows = 4, progress = isatty(STDERR_FILENO) ? 1 : 0, save_inputs = 0;
    MetricOpts cli = metrics_opts_default(METRIC_PROFILE_PROMPTIR);
    cli.crop_multiple = 16;
    bool set_profile = false, set_crop_multiple = false, set_crop_border = false, set_y = false;
    RestoreOptions ro = restore_options_default();
    enum { O_SET = 256, O_TASKS, O_DATA_DIR, O_SAVE_INPUTS, O_GRID_ROWS, O_PROGRESS, O_NO_PROGRESS, O_TILE,
           O_TILE_OVERLAP, O_MAX_IMAGES, O_ADAPTER, O_BASE, O_DEVICE, O_MAX_MEMORY, O_VAE_TILE, O_VAE_OVERLAP, O_MERGE,
           O_HTML, O_LPIPS_VGG, O_LPIPS_LIN, O_ADM_WEIGHTS };
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'C'},        {"checkpoint", required_argument, 0, 'k'},
        {"data", required_argument, 0, 'd'},          {"bench", required_argument, 0, 'B'},
        {"data-dir", required_argument, 0, O_DATA_DIR}, {"tasks", required_argument, 0, O_TASKS},
        {"set", required_argument, 0, O_SET},         {"profile", required_argument, 0, 'P'},
        {"crop-multiple", required_argument, 0, 'm'}, {"crop-border", required_argument, 0, 'b'},
        {"y-channel", no_argument, 0, 'y'},           {"max-images", required_argument, 0, O_MAX_IMAGES},
        {"tile", required_argument, 0, O_TILE},       {"tile-overlap", required_argument, 0, O_TILE_OVERLAP},
        {"save-images", required_argument, 0, 's'},   {"save-inputs", no_argument, 0, O_SAVE_INPUTS},
        {"grid-rows", required_argument, 0, O_GRID_ROWS}, {"csv", required_argument, 0, 'c'},
        {"json", required_argument, 0, 'j'},          {"html", required_argument, 0, O_HTML},
        {"progress", no_argument, 0, O_PROGRESS},
        {"no-progress", no_argument, 0, O_NO_PROGRESS}, {"help", no_argument, 0, 'h'},
        {"adapter", required_argument, 0, O_ADAPTER}, {"base", required_argument, 0, O_BASE},
        {"device", required_argument, 0, O_DEVICE},   {"max-memory", required_argument, 0, O_MAX_MEMORY},
        {"vae-tile", required_argument, 0, O_VAE_TILE}, {"vae-overlap", required_argument, 0, O_VAE_OVERLAP},
        {"merge", required_argument, 0, O_MERGE},     {"adm-weights", required_argument, 0, O_ADM_WEIGHTS},
        {"lpips-vgg", required_argument, 0, O_LPIPS_VGG}, {"lpips-lin", required_argument, 0, O_LPIPS_LIN},
        {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int ch, rc = 2;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int v = 0;
        const char *count_opt = NULL;
        switch (ch) {
        case 'C': config_path = optarg; break;
        case 'k': ckpt = optarg; break;
        case 'd': data = optarg; break;
        case 'B': bench_path = optarg; break;
        case O_DATA_DIR: data_dir = optarg; break;
        case O_TASKS: only_tasks = optarg; break;
        case O_SET: sets_kv[n_kv++] = optarg; break;
        case 's': save_dir = optarg; break;
        case O_SAVE_INPUTS: save_inputs = 1; break;
        case 'c': csv_path = optarg; break;
        case 'j': json_path = optarg; break;
        case O_HTML: html_dir = optarg; break;
        case O_PROGRESS: progress = isatty(STDERR_FILENO) ? 1 : 2; break;
        case O_NO_PROGRESS: progress = 0; break;
        case O_ADAPTER: adapter = optarg; break;
        case O_BASE: base = optarg; break;
        case O_ADM_WEIGHTS: adm_weights = optarg; break;
        case O_DEVICE:
            if (!strcmp(optarg, "cpu")) device = DEV_CPU;
            else if (!strcmp(optarg, "cuda")) device = DEV_CUDA;
            else {
                fprintf(stderr, "dod-eval run: --device %s: expected cpu or cuda\n", optarg);
                goto done;
            }
            break;
        case O_MERGE: {
            int mv = restore_merge_parse(optarg);
            if (mv < 0) {
                fprintf(stderr, "dod-eval run: --merge %s: expected auto, on or off\n", optarg);
                goto done;
            }
            ro.merge = (RestoreMerge)mv;
            break;
        }
        case O_MAX_MEMORY: {
            char *end;
            ro.max_memory_gib = strtod(optarg, &end);
            if (end == optarg || *end || !(ro.max_memory_gib >= 0)) {
                fprintf(stderr, "dod-eval run: --max-memory needs a number of GiB >= 0, got '%s'\n", optarg);
                goto done;
            }
            break;
        }
        case O_LPIPS_VGG: lpips_vgg = optarg; break;
        case O_LPIPS_LIN: lpips_lin = optarg; break;
        case 'y': cli.y_channel = set_y = true; break;
        case 'P':
            if (metrics_profile_parse(optarg, &cli.profile)) {
                fprintf(stderr, "dod-eval run: unknown --profile '%s' (promptir or basicsr)\n", optarg);
                goto done;
            }
            set_profile = true;
            break;
        case 'm': case 'b': case O_MAX_IMAGES: case O_TILE: case O_TILE_OVERLAP: case O_GRID_ROWS: case O_VAE_TILE:
        case O_VAE_OVERLAP:
            for (int k = 0; longopts[k].name; k++)
                if (longopts[k].val == ch) count_opt = longopts[k].name;
            if ((v = parse_count(optarg)) < 0) {
                fprintf(stderr, "dod-eval run: --%s needs a non-negative integer, got '%s'\n", count_opt, optarg);
                goto done;
            }
            if (ch == 'm') cli.crop_multiple = v, set_crop_multiple = true;
            else if (ch == 'b') cli.crop_border = v, set_crop_border = true;
            else if (ch == O_MAX_IMAGES) max_images = v;
            else if (ch == O_TILE) ro.tile = v;
            else if (ch == O_TILE_OVERLAP) ro.overlap = v;
            else if (ch == O_VAE_TILE) ro.vae_tile = v;
            else if (ch == O_VAE_OVERLAP) ro.vae_overlap = v;
            else grid_rows = v;
            break;
        case 'h': run_usage(stdout); rc = 0; goto done;
        default: {
            const char *needs = NULL;
            for (int k = 0; longopts[k].name && optopt; k++)
                if (longopts[k].val == optopt) needs = longopts[k].name;
            if (needs) fprintf(stderr, "dod-eval run: --%s needs a value\n", needs);
            else fprintf(stderr, "dod-eval run: unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "(dod-eval run --help lists the options)\n");
            goto done;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dod-eval run: unexpected argument '%s'\n", argv[optind]);
        goto done;
    }
    if (adapter && (config_path || ckpt || n_kv)) {
        fprintf(stderr, "dod-eval run: --adapter replaces --config / --checkpoint / --set (--help)\n");
        goto done;
    }
    if (adapter ? !base : (!config_path || !ckpt || base)) {
        fprintf(stderr, "dod-eval run: give --config and --checkpoint, or --adapter and --base (--help)\n");
        goto done;
    }
    if (!adapter && device != DEV_CPU) {
        fprintf(stderr, "dod-eval run: --device goes with --adapter ([model] device sets it in a configuration)\n");
        goto done;
    }
    if (!adapter && adm_weights) {
        fprintf(stderr, "dod-eval run: --adm-weights goes with --adapter ([modulation] adm_weights sets it in a "
                        "configuration)\n");
        goto done;
    }
    if (!data == !bench_path) {
        fprintf(stderr, "dod-eval run: one of --data / --bench is required (--help)\n");
        goto done;
    }
    if (html_dir && save_dir) {
        fprintf(stderr, "dod-eval run: --html DIR saves the images it shows under DIR; give --html or --save-images\n");
        goto done;
    }
    if (only_tasks && bench_path) {
        fprintf(stderr, "dod-eval run: --tasks selects tasks of --data; a benchmark lists its own\n");
        goto done;
    }
    char err[16384];
    if (restore_check_options(&ro, err, sizeof err)) {
        fprintf(stderr, "dod-eval run: %s\n", err);
        goto done;
    }
    if (cli.y_channel && cli.profile != METRIC_PROFILE_BASICSR && (set_profile || !bench_path)) {
        fprintf(stderr, "dod-eval run: --y-channel needs --profile basicsr (the promptir protocol scores RGB)\n");
        goto done;
    }
    if (!lpips_vgg != !lpips_lin) {
        int st;
        lpips_from_flags("dod-eval run", lpips_vgg, lpips_lin, DEV_CPU, &st);   // says what is missing
        goto done;
    }
    rc = 1;

    // the model's keys of the configuration (cheap: checked before anything is opened)
    static ModelOptions mo;
    static CfgSource src;
    model_config_defaults(&mo, &src);
    if (!adapter && model_config_load(&mo, &src, config_path, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        goto done;
    }
    for (int i = 0; i < n_kv; i++)
        if (model_config_set(&mo, &src, sets_kv[i], err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            goto done;
        }
    err[0] = 0;
    if (!adapter && model_config_check(&mo, &src, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        goto done;
    }
    cfg_where(&src, "modulation", "adm_weights", mo.adm_weights_origin, sizeof mo.adm_weights_origin);

    // the test sets, checked before the model is loaded
    EvalSet *sets = NULL;
    int n_sets = 0;
    char source[2 * BENCH_STR + 512];
    if (bench_path) {
        static Bench bench;
        if (bench_load(bench_path, &bench, err, sizeof err)) {
            fprintf(stderr, "%s", err);
            goto done;
        }
        sets = dod_calloc(sizeof(EvalSet) * (size_t)bench.n_tasks, "evaluation sets");
        n_sets = bench.n_tasks;
        for (int i = 0; i < n_sets; i++) {
            const BenchTask *bt = &bench.tasks[i];
            EvalSet *es = &sets[i];
            snprintf(es->label, sizeof es->label, "%s", bt->label);
            snprintf(es->task, sizeof es->task, "%s", bt->task);
            if (bt->file[0] == '/') snprintf(es->path, sizeof es->path, "%s", bt->file);
            else snprintf(es->path, sizeof es->path, "%s/%s", data_dir, bt->file);
            es->sigma = bt->sigma;
            es->metrics = bt->metrics;
            if (set_profile) es->metrics.profile = cli.profile;
            if (set_crop_multiple) es->metrics.crop_multiple = cli.crop_multiple;
            if (set_crop_border) es->metrics.crop_border = cli.crop_border;
            if (set_y) es->metrics.y_channel = cli.y_channel;
            if (es->metrics.y_channel && es->metrics.profile != METRIC_PROFILE_BASICSR) {
                fprintf(stderr, "dod-eval run: %s: --y-channel needs the basicsr profile\n", es->label);
                free(sets);
                goto done;
            }
        }
        snprintf(source, sizeof source, "benchmark %s (%s, files in %s)%s%s", bench.name, bench_path, data_dir,
                 bench.title[0] ? ": " : "", bench.title);
    } else {
        if (eval_sets_from_file(data, only_tasks, &cli, &sets, &n_sets, err, sizeof err)) {
            fprintf(stderr, "dod-eval run: %s\n", err);
            goto done;
        }
        snprintf(source, sizeof source, "%s", data);
    }
    EvalSetResult *res = dod_calloc(sizeof(EvalSetResult) * (size_t)n_sets, "evaluation results");
    if (eval_prepare(sets, n_sets, max_images, res, err, sizeof err)) {
        fprintf(stderr, "dod-eval run: the test data has problems:\n%s\n", err);
        goto free_sets;
    }

    if (html_dir && report_html_begin(html_dir, html_tmp, sizeof html_tmp, err, sizeof err)) {
        fprintf(stderr, "dod-eval run: %s\n", err);
        goto free_sets;
    }

    // the model: a configuration and a checkpoint (a run dir's cache of the encoded prompts serves when it
    // matches: layers/sd_prompt.h), or an adapter on its base (the adapter carries the prompts)
    Model *model;
    char ckpt_file[4200];
    CheckpointInfo info = {0};
    AdapterInfo ai = {0};
    if (adapter) {
        model = adapter_model_load(base, adapter, adm_weights, device, &ai, err, sizeof err);
        snprintf(ckpt_file, sizeof ckpt_file, "%s", adapter);
        info.step = ai.step;
        mo.stage = ai.stage;
    } else {
        struct stat ckpt_st;
        if (stat(ckpt, &ckpt_st) == 0 && S_ISDIR(ckpt_st.st_mode))
            snprintf(mo.prompt_cache, sizeof mo.prompt_cache, "%s/" MODEL_PROMPT_CACHE, ckpt);
        model = model_load(&mo, NULL, err, sizeof err);
        if (model && model_load_checkpoint(model, &mo, src.file, ckpt, ckpt_file, sizeof ckpt_file, &info, err, sizeof err)) {
            model_free(model);
            model = NULL;
        }
    }
    if (!model) {
        fprintf(stderr, "dod-eval run: %s\n", err);
        goto free_sets;
    }
    int lpips_status;
    Lpips *lpips = lpips_from_flags("dod-eval run", lpips_vgg, lpips_lin, model->device, &lpips_status);
    if (lpips_status) {
        checkpoint_info_free(&info);
        model_free(model);
        goto free_sets;
    }
    EvalRunOptions ero = {.model = model, .restore = ro, .save_dir = html_dir ? html_tmp : save_dir,
                          .save_inputs = html_dir || save_inputs, .grid_rows = grid_rows, .progress = progress,
                          .lpips = lpips};
    int not_scored = eval_run(&ero, res, n_sets, err, sizeof err);
    EvalReportInfo ri = {.config_path = adapter ? NULL : config_path, .checkpoint_path = ckpt_file,
                         .model_kind = model->kind, .stage = (int)mo.stage, .step = (long long)info.step,
                         .source = source, .restore = ro, .max_images = max_images, .save_dir = save_dir};
    if (not_scored < 0) {
        fprintf(stderr, "dod-eval run: %s\n", err);
    } else {
        eval_report_markdown(stdout, &ri, res, n_sets);
        fflush(stdout);
        if (not_scored) {
            int counts[EVAL_N_PROBLEMS] = {0}, total = 0;
            for (int s = 0; s < n_sets; s++) {
                total += res[s].n_images;
                for (int i = 0; i < res[s].n_images; i++) {
                    counts[res[s].images[i].status]++;
                    if (res[s].images[i].status) fprintf(stderr, "dod-eval run: %s\n", res[s].images[i].err);
                }
            }
            fprintf(stderr, "dod-eval run: %d of %d images not scored (", not_scored, total);
            for (int p = 1, first = 1; p < EVAL_N_PROBLEMS; p++)
                if (counts[p]) {
                    fprintf(stderr, "%s%d %s", first ? "" : ", ", counts[p], eval_problem_names[p]);
                    first = 0;
                }
            fprintf(stderr, ")%s\n", json_path || csv_path || html_dir ? "; no CSV/JSON/HTML report was written" : "");
        } else {
            rc = 0;
            if (csv_path) {
                char *text = eval_report_csv(res, n_sets);
                if (fs_write_text_atomic(csv_path, text, err, sizeof err)) fprintf(stderr, "dod-eval run: %s\n", err), rc = 1;
                free(text);
            }
            if (json_path) {
                char *text = eval_report_json(&ri, res, n_sets);
                if (fs_write_text_atomic(json_path, text, err, sizeof err)) fprintf(stderr, "dod-eval run: %s\n", err), rc = 1;
                free(text);
            }
            if (html_dir) {
                if (report_html_write(html_tmp, &ri, res, n_sets, err, sizeof err) ||
                    report_html_publish(html_tmp, html_dir, err, sizeof err))
                    fprintf(stderr, "dod-eval run: %s\n", err), rc = 1;
                else
                    fprintf(stderr, "dod-eval run: HTML report %s/index.html\n", html_dir), html_tmp[0] = 0;
            }
        }
    }
    checkpoint_info_free(&info);
    model_free(model);
    lpips_free(lpips);
free_sets:
    if (html_tmp[0]) report_html_discard(html_tmp);   // not published: an incomplete run or an error
    eval_results_free(res, n_sets);
    free(res);
    free(sets);
done:
    free(sets_kv);
    return rc;
}
#else
static int cmd_run(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return run_usage(stdout), 0;
    fprintf(stderr, "dod-eval run: this build has no iniparser (configurations and benchmarks are INI files; "
                    "Debian: apt-get install libiniparser-dev, then re-run cmake)\n");
    return 1;
}
#endif

// ---- dispatch ---------------------------------------------------------------------------------------
typedef struct {
    const char *name, *what;
    int (*fn)(int argc, char **argv);
} Subcommand;

static const Subcommand subcommands[] = {
    {"metrics", "PSNR/SSIM of a folder of predictions against ground truth (promptir / basicsr)", cmd_metrics},
    {"run", "restore test sets (a dataset file or a benchmark) with a checkpoint and score them", cmd_run},
};
#define N_SUBCOMMANDS ((int)(sizeof subcommands / sizeof subcommands[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: dod-eval <subcommand> [options]   (dod-eval <subcommand> --help for its options)\n\n"
               "subcommands:\n");
    for (int i = 0; i < N_SUBCOMMANDS; i++) fprintf(f, "  %-9s %s\n", subcommands[i].name, subcommands[i].what);
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-eval")) return 0;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_SUBCOMMANDS; i++)
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dod-eval: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
