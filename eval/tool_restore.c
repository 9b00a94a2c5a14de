// dod-restore: restore photos of any size with an adapter (dod-export) on its base model, one UNet
// step per image (eval/restore.h, docs/restore.md).
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/cuda/cuda_backend.h"
#include "data/pairing.h"
#include "data/photo.h"
#include "eval/restore.h"
#include "layers/adapter.h"
#include "layers/sd_weights.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dod-restore --base SD_DIR --adapter ADAPTER --in IMAGE|DIR --out DIR [options]\n"
            "       dod-restore --base SD_DIR [--adapter ADAPTER] --estimate-only [--size WxH] [--device D] [--max-memory G]\n"
            "\n"
            "Restores every image (--in a file, or the .png .jpg .jpeg .bmp files of a folder) with the DOD adapter\n"
            "on its base model, in one UNet step, at any size: the image is reflect-padded to the model's multiple\n"
            "and cropped back, the UNet runs in latent tiles, the extractor and the VAE on the whole image while\n"
            "they fit in --max-memory and in tiles otherwise (docs/restore.md). Outputs go to DIR/<name>.<format>.\n"
            "\n"
            "  --base SD_DIR        the diffusers base model the adapter was trained on (another one is refused)\n"
            "  --adapter FILE       the adapter (dod-export)\n"
            "  --adm-weights FILE   the guided-diffusion weights an adapter with the adm extractor was trained with\n"
            "                       (required for those; other weights are refused)\n"
            "  --device cpu|cuda    where to run (default cpu; cuda: bf16 weights, mixed precision)\n"
            "  --tile N             UNet latent tile side, used when the latent exceeds N x N (default 96; 0: never)\n"
            "  --overlap N          UNet latent tile overlap (default 32)\n"
            "  --max-memory GIB     memory budget for weights and activations (default 8; 0: no limit)\n"
            "  --vae-tile N         force VAE tiles of N pixels on larger images (default 0: from --max-memory)\n"
            "  --vae-overlap N      VAE tile overlap in pixels (default 64)\n"
            "  --merge auto|on|off  merge the UNet's LoRA into its weights per image (CPU; default auto: when the\n"
            "                       UNet's work is at least 64x64 latent pixels and the merged copy fits)\n"
            "  --format png|jpg     output format (default png)\n"
            "  --quality Q          JPEG quality 1..100 (default 95)\n"
            "  --estimate-only      print the memory plan of one image (--size WxH, default 4096x3072) and exit;\n"
            "                       needs only the base's config files\n"
            "  --quiet              no per-image progress\n"
            "\n"
            "Inputs: 8- or 16-bit, grey, RGB, with alpha (kept in PNG output, composited over white in JPEG);\n"
            "a JPEG's EXIF orientation is applied. Output: 8 bits per channel. Each image is written to a\n"
            "temporary name and renamed, so no partial file is left. Exit status: 0 every image restored,\n"
            "1 some image or the setup failed (each named), 2 usage.\n");
}

// A non-negative int (whole string), or -1.
static int parse_count(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || end == s || *end || v < 0 || v > INT_MAX ? -1 : (int)v;
}

static void stem_of(const char *path, char *buf, size_t len) {
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    size_t n = strlen(name) < len - 1 ? strlen(name) : len - 1;
    memcpy(buf, name, n);
    buf[n] = 0;
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

// Fails (-1, naming dir) when no file can be created in dir.
static int check_writable(const char *dir, char *err, size_t errlen) {
    if (fs_mkdirs(dir, err, errlen)) return -1;
    char probe[4200], tmp[4300];
    snprintf(probe, sizeof probe, "%s/.dod-restore-probe", dir);
    if (fs_temp_path(probe, tmp, sizeof tmp)) {
        snprintf(err, errlen, "%s: output folder path too long", dir);
        return -1;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: the output folder cannot be written: %s", dir, strerror(errno));
        return -1;
    }
    fclose(f);
    unlink(tmp);
    return 0;
}

// The memory plan of a W x H image from the base's configs alone (weights from their tensor tables).
static int estimate_only(const char *base, const char *adapter, Device device, const RestoreOptions *ro, int W, int H) {
    char path[4200], err[ADAPTER_ERR_LEN];
    SdUNetConfig ucfg;
    SdVaeConfig vcfg;
    snprintf(path, sizeof path, "%s/unet/config.json", base);
    if (sd_unet_config_load(path, &ucfg, err)) return fprintf(stderr, "dod-restore: %s\n", err), 1;
    snprintf(path, sizeof path, "%s/vae/config.json", base);
    if (sd_vae_config_load(path, &vcfg, err)) return fprintf(stderr, "dod-restore: %s\n", err), 1;
    AdapterInfo ai = {.stage = 1, .rank = 8, .extractor = DOD_EXTRACTOR_CNN};
    if (adapter && adapter_read_info(adapter, &ai, err, sizeof err)) return fprintf(stderr, "dod-restore: %s\n", err), 1;
    SdTensorTable tu = {0}, tv = {0};
    sd_unet_tensor_table(&ucfg, &tu);
    sd_vae_tensor_table(&vcfg, &tv);
    double params = 0, merged = 0;
    for (int i = 0; i < tu.n; i++) {   // the UNet's adapted layers, as a merged f32 copy
        char layer[SD_NAME_LEN];
        snprintf(layer, sizeof layer, "%s", tu.items[i].name);
        size_t len = strlen(layer);
        if (len < 7 || strcmp(layer + len - 7, ".weight")) continue;
        layer[len - 7] = 0;
        if (!lora_is_target(LORA_TARGETS_UNET, layer)) continue;
        double e = 1;
        for (int d = 0; d < tu.items[i].ndim; d++) e *= (double)tu.items[i].shape[d];
        merged += 4.0 * (e + (double)tu.items[i].shape[0]);
    }
    for (int k = 0; k < 2; k++) {
        const SdTensorTable *t = k ? &tv : &tu;
        for (int i = 0; i < t->n; i++) {
            double n = 1;
            for (int d = 0; d < t->items[i].ndim; d++) n *= (double)t->items[i].shape[d];
            params += n;
        }
    }
    sd_table_free(&tu);
    sd_table_free(&tv);
    struct stat sb;
    double adapter_bytes = adapter && stat(adapter, &sb) == 0 ? (double)sb.st_size * 2 : 0;   // as f32
    RestoreShapes s = {.unet = &ucfg, .vae = &vcfg, .stage = ai.stage, .vae_extractor = ai.extractor == DOD_EXTRACTOR_VAE,
                       .cnn_channels0 = 32, .weight_bytes = params * (device == DEV_CUDA ? 2 : 4) + adapter_bytes,
                       .act_bytes = device == DEV_CUDA ? 2 : 4, .count_host_buffers = device == DEV_CPU,
                       .merged_bytes = merged, .cuda = device == DEV_CUDA};
    const int f = 1 << (vcfg.n_levels - 1), mult = f > 8 ? f : 8;
    const int Hp = (H + mult - 1) / mult * mult, Wp = (W + mult - 1) / mult * mult;
    RestorePlan plan;
    if (restore_plan(&s, Hp, Wp, ro, &plan, err, sizeof err)) return fprintf(stderr, "dod-restore: %s\n", err), 1;
    printf("dod-restore: memory plan for a %dx%d image (padded %dx%d) on %s, base %s, stage %d, %s extractor, "
           "%s activations, --max-memory %g GiB\n\n", W, H, Wp, Hp, device == DEV_CUDA ? "cuda" : "cpu", base, ai.stage,
           adapter_extractor_name(ai.extractor), s.act_bytes == 2 ? "bf16" : "f32", ro->max_memory_gib);
    restore_plan_print(stdout, &plan, Hp, Wp);
    return 0;
}

int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-restore")) return 0;
    const char *base = NULL, *adapter = NULL, *in = NULL, *out_dir = NULL, *adm_weights = NULL;
    Device device = DEV_CPU;
    RestoreOptions ro = restore_options_default();
    PhotoFormat format = PHOTO_PNG;
    int quality = 95, estimate = 0, quiet = 0, size_w = 4096, size_h = 3072;
    enum { O_BASE = 256, O_ADAPTER, O_IN, O_OUT, O_DEVICE, O_TILE, O_OVERLAP, O_MAXMEM, O_VAE_TILE, O_VAE_OVERLAP,
           O_FORMAT, O_QUALITY, O_ESTIMATE, O_SIZE, O_QUIET, O_MERGE, O_ADM_WEIGHTS };
    static const struct option longopts[] = {
        {"base", required_argument, 0, O_BASE},        {"adapter", required_argument, 0, O_ADAPTER},
        {"in", required_argument, 0, O_IN},            {"out", required_argument, 0, O_OUT},
        {"device", required_argument, 0, O_DEVICE},    {"tile", required_argument, 0, O_TILE},
        {"overlap", required_argument, 0, O_OVERLAP},  {"max-memory", required_argument, 0, O_MAXMEM},
        {"vae-tile", required_argument, 0, O_VAE_TILE}, {"vae-overlap", required_argument, 0, O_VAE_OVERLAP},
        {"format", required_argument, 0, O_FORMAT},    {"quality", required_argument, 0, O_QUALITY},
        {"estimate-only", no_argument, 0, O_ESTIMATE}, {"size", required_argument, 0, O_SIZE},
        {"quiet", no_argument, 0, O_QUIET},            {"help", no_argument, 0, 'h'},
        {"merge", required_argument, 0, O_MERGE},     {"adm-weights", required_argument, 0, O_ADM_WEIGHTS},
        {0, 0, 0, 0}};
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int v;
        switch (ch) {
        case O_BASE: base = optarg; break;
        case O_ADAPTER: adapter = optarg; break;
        case O_ADM_WEIGHTS: adm_weights = optarg; break;
        case O_IN: in = optarg; break;
        case O_OUT: out_dir = optarg; break;
        case O_ESTIMATE: estimate = 1; break;
        case O_QUIET: quiet = 1; break;
        case O_DEVICE:
            if (!strcmp(optarg, "cpu")) device = DEV_CPU;
            else if (!strcmp(optarg, "cuda")) device = DEV_CUDA;
            else return fprintf(stderr, "dod-restore: --device %s: expected cpu or cuda\n", optarg), 2;
            break;
        case O_MAXMEM: {
            char *end;
            ro.max_memory_gib = strtod(optarg, &end);
            if (end == optarg || *end || !(ro.max_memory_gib >= 0))
                return fprintf(stderr, "dod-restore: --max-memory needs a number of GiB >= 0, got '%s'\n", optarg), 2;
            break;
        }
        case O_MERGE:
            if ((v = restore_merge_parse(optarg)) < 0)
                return fprintf(stderr, "dod-restore: --merge %s: expected auto, on or off\n", optarg), 2;
            ro.merge = (RestoreMerge)v;
            break;
        case O_FORMAT:
            if ((v = photo_format_parse(optarg)) < 0)
                return fprintf(stderr, "dod-restore: --format %s: expected png or jpg\n", optarg), 2;
            format = (PhotoFormat)v;
            break;
        case O_SIZE:
            if (sscanf(optarg, "%dx%d", &size_w, &size_h) != 2 || size_w <= 0 || size_h <= 0)
                return fprintf(stderr, "dod-restore: --size %s: expected WxH, e.g. 4096x3072\n", optarg), 2;
            break;
        case O_TILE: case O_OVERLAP: case O_VAE_TILE: case O_VAE_OVERLAP: case O_QUALITY:
            if ((v = parse_count(optarg)) < 0)
                return fprintf(stderr, "dod-restore: %s needs a non-negative integer, got '%s'\n", argv[optind - 1], optarg), 2;
            if (ch == O_TILE) ro.tile = v;
            else if (ch == O_OVERLAP) ro.overlap = v;
            else if (ch == O_VAE_TILE) ro.vae_tile = v;
            else if (ch == O_VAE_OVERLAP) ro.vae_overlap = v;
            else quality = v;
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "dod-restore: %s '%s' (--help lists the options)\n", optopt ? "option needs a value:" : "unknown option",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "dod-restore: unexpected argument '%s'\n", argv[optind]), 2;
    static char err[ADAPTER_ERR_LEN];
    if (restore_check_options(&ro, err, sizeof err)) return fprintf(stderr, "dod-restore: %s\n", err), 2;
    if (quality < 1 || quality > 100) return fprintf(stderr, "dod-restore: --quality %d: expected 1..100\n", quality), 2;
    if (!base) return fprintf(stderr, "dod-restore: --base is required (--help)\n"), 2;
    if (estimate) return estimate_only(base, adapter, device, &ro, size_w, size_h);
    if (!adapter || !in || !out_dir) return fprintf(stderr, "dod-restore: --adapter, --in and --out are required (--help)\n"), 2;

    // the inputs and the output folder, checked before the model is loaded
    struct stat sb;
    if (stat(in, &sb)) return fprintf(stderr, "dod-restore: %s: cannot read: %s\n", in, strerror(errno)), 1;
    char **names = NULL;
    int n = 0;
    if (S_ISDIR(sb.st_mode)) {
        if (list_images(in, &names, &n, err, sizeof err)) return fprintf(stderr, "dod-restore: %s\n", err), 1;
        if (!n) return fprintf(stderr, "dod-restore: %s: no images (.png .jpg .jpeg .bmp)\n", in), 1;
    } else {
        n = 1;
        names = malloc(sizeof(char *));
        names[0] = strdup(in);
    }
    if (check_writable(out_dir, err, sizeof err)) {
        fprintf(stderr, "dod-restore: %s\n", err);
        free_names(names, n);
        return 1;
    }
    double t_load = dod_now_seconds();
    AdapterInfo ai;
    Model *model = adapter_model_load(base, adapter, adm_weights, device, &ai, err, sizeof err);
    if (!model) {
        fprintf(stderr, "dod-restore: %s\n", err);
        free_names(names, n);
        return 1;
    }
    t_load = dod_now_seconds() - t_load;
    if (!quiet)
        fprintf(stderr, "dod-restore: stage-%d adapter %s (step %lld) on %s, %s, loaded in %.1f s; %d image%s\n", ai.stage,
                adapter, ai.step, base, device == DEV_CUDA ? "cuda" : "cpu", t_load, n, n == 1 ? "" : "s");

    int failed = 0, done = 0;
    double seconds = 0, megapixels = 0;
    char **outs = calloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        char path[4300], stem[512], out_path[4400];
        if (S_ISDIR(sb.st_mode)) snprintf(path, sizeof path, "%s/%s", in, names[i]);
        else snprintf(path, sizeof path, "%s", names[i]);
        stem_of(path, stem, sizeof stem);
        snprintf(out_path, sizeof out_path, "%s/%s.%s", out_dir, stem, photo_format_ext(format));
        outs[i] = strdup(out_path);
        int clash = -1;
        for (int k = 0; k < i && clash < 0; k++)
            if (outs[k] && !strcmp(outs[k], out_path)) clash = k;
        if (clash >= 0) {
            fprintf(stderr, "dod-restore: %s: its output %s is %s's as well (same name): skipped\n", path, out_path,
                    names[clash]);
            failed++;
            continue;
        }
        Photo p;
        if (photo_load(path, &p, err, sizeof err)) {
            fprintf(stderr, "dod-restore: %s\n", err);
            failed++;
            continue;
        }
        const size_t plane = (size_t)p.w * p.h;
        float *x = malloc(sizeof(float) * 3 * plane), *y = malloc(sizeof(float) * 3 * plane);
        if (!x || !y) dod_out_of_memory(sizeof(float) * 6 * plane, "image buffers");
        memcpy(x, p.rgb, sizeof(float) * 3 * plane);
        RestoreStats rs;
        double t0 = dod_now_seconds();
        int rc = restore_chw(model, x, p.h, p.w, &ro, y, &rs, err, sizeof err);
        double dt = dod_now_seconds() - t0;
        if (rc) {
            fprintf(stderr, "dod-restore: %s (%dx%d): %s\n", path, p.w, p.h, err);
            failed++;
        } else {
            if (photo_save(out_path, y, p.alpha, p.w, p.h, p.channels <= 2, format, quality, err, sizeof err)) {
                fprintf(stderr, "dod-restore: %s\n", err);
                failed++;
            } else {
                done++;
                seconds += dt;
                megapixels += (double)plane / 1e6;
                if (!quiet) {
                    char vae[128];
                    if (rs.vae_tiles > 1)
                        snprintf(vae, sizeof vae, "%d VAE tiles of %d px (statistics at 1/%d)", rs.vae_tiles, rs.vae_tile,
                                 rs.stats_scale);
                    else snprintf(vae, sizeof vae, "whole VAE");
                    if (rs.extractor_scale > 1)
                        snprintf(vae + strlen(vae), sizeof vae - strlen(vae), ", extractor on the image / %d",
                                 rs.extractor_scale);
                    fprintf(stderr, "dod-restore: [%d/%d] %s %dx%d%s%s: %.2f s (%.2f s/MP), %d UNet tile%s%s, %s, "
                            "estimated peak %.2f GiB -> %s\n", i + 1, n, path, p.w, p.h, p.bits == 16 ? " 16-bit" : "",
                            p.orientation != 1 ? " (EXIF-rotated)" : "", dt, dt / ((double)plane / 1e6), rs.unet_tiles,
                            rs.unet_tiles == 1 ? "" : "s", rs.merged ? " (LoRA merged)" : "", vae, rs.estimate_gib, out_path);
                }
            }
        }
        free(x);
        free(y);
        photo_free(&p);
    }
    double arena = (double)arena_peak() / (1024.0 * 1024.0);
    if (device == DEV_CUDA) arena += (double)dod_cuda_mem_stats().arena_peak_bytes / (1024.0 * 1024.0);
    printf("dod-restore: %d of %d image%s restored, %.2f s, %.3f s per megapixel; peak RSS %.0f MiB, activation "
           "arena peak %.0f MiB\n", done, n, n == 1 ? "" : "s", seconds, megapixels > 0 ? seconds / megapixels : 0.0,
           dod_peak_rss_mib(), arena);
    for (int i = 0; i < n; i++) free(outs[i]);
    free(outs);
    free_names(names, n);
    model_free(model);
    return failed ? 1 : 0;
}
