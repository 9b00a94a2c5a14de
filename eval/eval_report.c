// Reports of `dod-eval run` (see eval/eval_report.h).
#include "eval/eval_report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void eval_average(const EvalSetResult *res, int n_sets, EvalAverage *avg) {
    memset(avg, 0, sizeof *avg);
    double seconds = 0;
    int sets = 0;
    for (int s = 0; s < n_sets; s++) {
        const EvalSetResult *r = &res[s];
        if (r->peak_rss_mib > avg->peak_rss_mib) avg->peak_rss_mib = r->peak_rss_mib;
        if (r->arena_peak_mib > avg->arena_peak_mib) avg->arena_peak_mib = r->arena_peak_mib;
        if (!r->scores.images) continue;
        avg->images += r->scores.images;
        avg->psnr += r->scores.psnr;
        avg->ssim += r->scores.ssim;
        avg->lpips += r->scores.lpips;
        seconds += r->scores.seconds * r->scores.images;
        sets++;
    }
    avg->psnr = sets ? avg->psnr / sets : NAN;
    avg->ssim = sets ? avg->ssim / sets : NAN;
    avg->lpips = sets && res[0].has_lpips ? avg->lpips / sets : NAN;
    avg->seconds_per_image = avg->images ? seconds / avg->images : NAN;
}

void eval_describe_restore(const RestoreOptions *o, char *buf, size_t len) {
    char unet[120], mem[64], vae[120];
    if (o->tile) snprintf(unet, sizeof unet, "UNet whole up to %dx%d latent pixels, else in %d-pixel latent tiles overlapping "
                          "by %d (Gaussian blend)", o->tile, o->tile, o->tile, o->overlap);
    else snprintf(unet, sizeof unet, "UNet on the whole latent");
    if (o->max_memory_gib > 0) snprintf(mem, sizeof mem, "--max-memory %g GiB", o->max_memory_gib);
    else snprintf(mem, sizeof mem, "no memory limit");
    if (o->vae_tile) snprintf(vae, sizeof vae, "VAE in %d-pixel tiles (overlap %d) on larger images", o->vae_tile, o->vae_overlap);
    else snprintf(vae, sizeof vae, "VAE whole while it fits (%s), else tiled (overlap %d)", mem, o->vae_overlap);
    snprintf(buf, len, "%s; %s", unet, vae);
}

// "0.933" -> ".933" as the papers print SSIM.
static void paper_ssim(double v, char *buf, size_t len) {
    snprintf(buf, len, "%.3f", v);
    if (buf[0] == '0') memmove(buf, buf + 1, strlen(buf));
}

void eval_report_markdown(FILE *f, const EvalReportInfo *info, const EvalSetResult *res, int n_sets) {
    int total = 0, scored = 0;
    for (int s = 0; s < n_sets; s++) total += res[s].n_images, scored += res[s].scores.images;
    char desc[160], tiles[400];
    eval_describe_restore(&info->restore, tiles, sizeof tiles);
    fprintf(f, "# dod-eval run\n\n");
    if (scored != total)
        fprintf(f, "**INCOMPLETE: %d of %d images were not scored; the numbers below cover only the scored ones.**\n\n",
                total - scored, total);
    if (info->config_path)
        fprintf(f, "- model: %s stage %d, config `%s`, checkpoint `%s` (step %lld)\n", info->model_kind, info->stage,
                info->config_path, info->checkpoint_path, info->step);
    else
        fprintf(f, "- model: %s stage %d, adapter `%s` (step %lld)\n", info->model_kind, info->stage,
                info->checkpoint_path, info->step);
    fprintf(f, "- data: %s\n", info->source);
    bool same = true;
    for (int s = 1; s < n_sets; s++) same &= !memcmp(&res[s].set.metrics, &res[0].set.metrics, sizeof(MetricOpts));
    if (n_sets && same) {
        metrics_opts_describe(&res[0].set.metrics, desc, sizeof desc);
        fprintf(f, "- protocol: %s\n", desc);
    } else {
        fprintf(f, "- protocol: per set (last column)\n");
    }
    fprintf(f, "- restore: %s; reflect-padded to the model's multiple (docs/restore.md)\n", tiles);
    if (info->max_images) fprintf(f, "- images: at most the first %d of each set (--max-images)\n", info->max_images);
    for (int s = 0; s < n_sets; s++)
        if (res[s].noise_on_read)
            fprintf(f, "- note: %s adds its noise when read (not a --store-noisy set); fine for a check, not for "
                       "published numbers\n", res[s].set.label);
    const bool lp = n_sets && res[0].has_lpips;
    if (lp) fprintf(f, "- LPIPS: VGG16, lpips v0.1, whole RGB image (lower is closer)\n");
    fprintf(f, "\n| set | images | PSNR | SSIM |%s s/image | peak RSS MiB | arena peak MiB |%s\n", lp ? " LPIPS |" : "",
            same ? "" : " protocol |");
    fprintf(f, "|---|---:|---:|---:|%s---:|---:|---:|%s\n", lp ? "---:|" : "", same ? "" : "---|");
    for (int s = 0; s < n_sets; s++) {
        const EvalSetResult *r = &res[s];
        char count[32];
        if (r->scores.images == r->n_images) snprintf(count, sizeof count, "%d", r->n_images);
        else snprintf(count, sizeof count, "%d/%d", r->scores.images, r->n_images);
        fprintf(f, "| %s | %s | %.4f | %.6f |", r->set.label, count, r->scores.psnr, r->scores.ssim);
        if (lp) fprintf(f, " %.6f |", r->scores.lpips);
        fprintf(f, " %.3f | %.1f | %.1f |", r->scores.seconds, r->peak_rss_mib, r->arena_peak_mib);
        if (!same) {
            metrics_opts_describe(&r->set.metrics, desc, sizeof desc);
            fprintf(f, " %s |", desc);
        }
        fprintf(f, "\n");
    }
    EvalAverage avg;
    eval_average(res, n_sets, &avg);
    fprintf(f, "| **average** | %d | %.4f | %.6f |", avg.images, avg.psnr, avg.ssim);
    if (lp) fprintf(f, " %.6f |", avg.lpips);
    fprintf(f, " %.3f | %.1f | %.1f |%s\n\n", avg.seconds_per_image, avg.peak_rss_mib, avg.arena_peak_mib, same ? "" : " |");
    // the paper-style row
    fprintf(f, "| method |");
    for (int s = 0; s < n_sets; s++) fprintf(f, " %s |", res[s].set.label);
    fprintf(f, " average |\n|---|");
    for (int s = 0; s <= n_sets; s++) fprintf(f, "---|");
    fprintf(f, "\n| %s (step %lld) |", info->model_kind, info->step);
    char ss[16];
    for (int s = 0; s < n_sets; s++) {
        paper_ssim(res[s].scores.ssim, ss, sizeof ss);
        fprintf(f, " %.2f/%s |", res[s].scores.psnr, ss);
    }
    paper_ssim(avg.ssim, ss, sizeof ss);
    fprintf(f, " %.2f/%s |\n", avg.psnr, ss);
}

char *eval_report_csv(const EvalSetResult *res, int n_sets) {
    size_t cap = 512 + (size_t)(n_sets + 1) * 1024, len = 0;
    char *out = dod_malloc(cap, "csv report");
    const bool lp = n_sets && res[0].has_lpips;
    len += snprintf(out + len, cap - len, "set,task,file,images,psnr,ssim,seconds_per_image,peak_rss_mib,arena_peak_mib,"
                                          "profile,crop_multiple,crop_border,y_channel%s\n", lp ? ",lpips" : "");
    for (int s = 0; s < n_sets; s++) {
        const EvalSetResult *r = &res[s];
        const MetricOpts *m = &r->set.metrics;
        len += snprintf(out + len, cap - len, "%s,%s,%s,%d,%.10g,%.10g,%.6g,%.1f,%.1f,%s,%d,%d,%d", r->set.label,
                        r->set.task, r->set.path, r->scores.images, r->scores.psnr, r->scores.ssim, r->scores.seconds, r->peak_rss_mib,
                        r->arena_peak_mib, metrics_profile_name(m->profile), m->crop_multiple, m->crop_border,
                        m->y_channel);
        len += lp ? snprintf(out + len, cap - len, ",%.10g\n", r->scores.lpips) : snprintf(out + len, cap - len, "\n");
    }
    EvalAverage a;
    eval_average(res, n_sets, &a);
    len += snprintf(out + len, cap - len, "average,,,%d,%.10g,%.10g,%.6g,%.1f,%.1f,,,,", a.images, a.psnr, a.ssim,
                    a.seconds_per_image, a.peak_rss_mib, a.arena_peak_mib);
    if (lp) snprintf(out + len, cap - len, ",%.10g\n", a.lpips);
    else snprintf(out + len, cap - len, "\n");
    return out;
}

static cJSON *num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateString(v > 0 ? "inf" : "nan"); }

char *eval_json_text(cJSON *doc) {
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    size_t len = strlen(text);
    char *out = dod_malloc(len + 2, "json report");
    memcpy(out, text, len);
    out[len] = '\n';
    out[len + 1] = 0;
    free(text);
    return out;
}

char *eval_report_json(const EvalReportInfo *info, const EvalSetResult *res, int n_sets) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "tool", "dod-eval run");
    if (info->config_path) {
        cJSON_AddStringToObject(doc, "config", info->config_path);
        cJSON_AddStringToObject(doc, "checkpoint", info->checkpoint_path);
    } else {
        cJSON_AddStringToObject(doc, "adapter", info->checkpoint_path);
    }
    cJSON_AddStringToObject(doc, "model_kind", info->model_kind);
    cJSON_AddNumberToObject(doc, "stage", info->stage);
    cJSON_AddNumberToObject(doc, "step", (double)info->step);
    cJSON_AddStringToObject(doc, "source", info->source);
    cJSON_AddNumberToObject(doc, "tile", info->restore.tile);
    cJSON_AddNumberToObject(doc, "tile_overlap", info->restore.overlap);
    cJSON_AddNumberToObject(doc, "max_memory_gib", info->restore.max_memory_gib);
    cJSON_AddNumberToObject(doc, "vae_tile", info->restore.vae_tile);
    cJSON_AddNumberToObject(doc, "vae_overlap", info->restore.vae_overlap);
    cJSON_AddNumberToObject(doc, "max_images", info->max_images);
    cJSON *sets = cJSON_AddArrayToObject(doc, "sets");
    for (int s = 0; s < n_sets; s++) {
        const EvalSetResult *r = &res[s];
        const MetricOpts *m = &r->set.metrics;
        cJSON *js = cJSON_CreateObject();
        cJSON_AddStringToObject(js, "label", r->set.label);
        cJSON_AddStringToObject(js, "file", r->set.path);
        cJSON_AddStringToObject(js, "task", r->set.task);
        if (r->set.sigma >= 0) cJSON_AddNumberToObject(js, "sigma", r->set.sigma);
        cJSON_AddBoolToObject(js, "noise_on_read", r->noise_on_read);
        cJSON_AddStringToObject(js, "profile", metrics_profile_name(m->profile));
        cJSON_AddNumberToObject(js, "crop_multiple", m->crop_multiple);
        cJSON_AddNumberToObject(js, "crop_border", m->crop_border);
        cJSON_AddBoolToObject(js, "y_channel", m->y_channel);
        cJSON_AddNumberToObject(js, "images", r->scores.images);
        cJSON_AddItemToObject(js, "psnr", num(r->scores.psnr));
        cJSON_AddItemToObject(js, "ssim", num(r->scores.ssim));
        if (r->has_lpips) cJSON_AddItemToObject(js, "lpips", num(r->scores.lpips));
        cJSON_AddItemToObject(js, "seconds_per_image", num(r->scores.seconds));
        cJSON_AddNumberToObject(js, "peak_rss_mib", r->peak_rss_mib);
        cJSON_AddNumberToObject(js, "arena_peak_mib", r->arena_peak_mib);
        cJSON *imgs = cJSON_AddArrayToObject(js, "per_image");
        for (int i = 0; i < r->n_images; i++) {
            const EvalImage *im = &r->images[i];
            cJSON *ji = cJSON_CreateObject();
            cJSON_AddNumberToObject(ji, "index", (double)im->index);
            cJSON_AddStringToObject(ji, "name", im->name);
            cJSON_AddNumberToObject(ji, "width", im->w);
            cJSON_AddNumberToObject(ji, "height", im->h);
            cJSON_AddNumberToObject(ji, "tiles", im->tiles);
            cJSON_AddNumberToObject(ji, "vae_tiles", im->vae_tiles);
            cJSON_AddItemToObject(ji, "psnr", num(im->psnr));
            cJSON_AddItemToObject(ji, "ssim", num(im->ssim));
            if (r->has_lpips) cJSON_AddItemToObject(ji, "lpips", num(im->lpips));
            cJSON_AddNumberToObject(ji, "seconds", im->seconds);
            cJSON_AddItemToArray(imgs, ji);
        }
        cJSON_AddItemToArray(sets, js);
    }
    EvalAverage a;
    eval_average(res, n_sets, &a);
    cJSON *ja = cJSON_AddObjectToObject(doc, "average");
    cJSON_AddNumberToObject(ja, "images", a.images);
    cJSON_AddItemToObject(ja, "psnr", num(a.psnr));
    cJSON_AddItemToObject(ja, "ssim", num(a.ssim));
    if (n_sets && res[0].has_lpips) cJSON_AddItemToObject(ja, "lpips", num(a.lpips));
    cJSON_AddItemToObject(ja, "seconds_per_image", num(a.seconds_per_image));
    cJSON_AddNumberToObject(ja, "peak_rss_mib", a.peak_rss_mib);
    cJSON_AddNumberToObject(ja, "arena_peak_mib", a.arena_peak_mib);
    return eval_json_text(doc);
}

