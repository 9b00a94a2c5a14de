// The HTML report of `dod-eval run --html` (see eval/report_html.h).
#include "eval/report_html.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/base.h"

// The marker that identifies a folder as an earlier report (the only non-empty folder replaced).
#define GENERATOR_META "<meta name=\"generator\" content=\"dod-eval run --html\"/>"

// ---- the folder ---------------------------------------------------------------------------------
static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void report_html_discard(const char *tmp) { nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

// dir holds an index.html this module wrote.
static bool is_earlier_report(const char *dir) {
    char path[4200], head[2048];
    snprintf(path, sizeof path, "%s/index.html", dir);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = 0;
    return strstr(head, GENERATOR_META) != NULL;
}

static bool is_empty_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d))) empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

int report_html_begin(const char *dir, char *tmp, size_t len, char *err, size_t errlen) {
    struct stat sb;
    tmp[0] = 0;
    if (stat(dir, &sb) == 0 && !(S_ISDIR(sb.st_mode) && (is_empty_dir(dir) || is_earlier_report(dir)))) {
        snprintf(err, errlen, "--html %s: exists and is not an earlier dod-eval report (nor an empty folder); "
                              "choose another folder", dir);
        return -1;
    }
    if ((size_t)snprintf(tmp, len, "%s.tmp.%d", dir, (int)getpid()) >= len) {
        snprintf(err, errlen, "--html %s: path too long", dir);
        tmp[0] = 0;
        return -1;
    }
    report_html_discard(tmp);   // a leftover of an earlier process with this pid
    return fs_mkdirs(tmp, err, errlen);
}

int report_html_publish(const char *tmp, const char *dir, char *err, size_t errlen) {
    char old[4300] = "";
    struct stat sb;
    if (stat(dir, &sb) == 0) {   // checked by report_html_begin: empty, or an earlier report
        snprintf(old, sizeof old, "%s.old.%d", dir, (int)getpid());
        if (rename(dir, old) != 0) {
            snprintf(err, errlen, "--html %s: cannot move the earlier report aside: %s", dir, strerror(errno));
            return -1;
        }
    }
    if (rename(tmp, dir) != 0) {
        snprintf(err, errlen, "--html %s: cannot move %s into place: %s", dir, tmp, strerror(errno));
        if (old[0]) rename(old, dir);
        return -1;
    }
    if (old[0]) report_html_discard(old);
    return 0;
}

// ---- the page -----------------------------------------------------------------------------------
// Text or an attribute value, escaped (XML's five, so the page is also well-formed XML).
static void esc(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

// One path segment of a relative URL: bytes other than RFC 3986's unreserved ones percent-encoded.
static void url_segment(FILE *f, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-._~", *p))
            fputc(*p, f);
        else
            fprintf(f, "%%%02X", *p);
    }
}

// A metric cell: the sort key in data-v (JavaScript's parseFloat reads "Infinity"), the text as shown.
static void num_cell(FILE *f, double v, int decimals) {
    if (isfinite(v)) fprintf(f, "<td class=\"num\" data-v=\"%.9g\">%.*f</td>", v, decimals, v);
    else fprintf(f, "<td class=\"num\" data-v=\"%s\">%s</td>", v > 0 ? "Infinity" : "-Infinity", v > 0 ? "inf" : "-inf");
}

static const char *STYLE =
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}"
    "ul.info{padding-left:1.2em;font-size:.9em}code{font-size:.95em}"
    "table{border-collapse:collapse;margin:.6em 0;background:#fff}"
    "th,td{border:1px solid #ccc;padding:.25em .55em;vertical-align:middle}"
    "th{background:#eee;cursor:pointer;user-select:none;white-space:nowrap}"
    "th[aria-sort=ascending]::after{content:\" \\25B2\"}th[aria-sort=descending]::after{content:\" \\25BC\"}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "tfoot td{font-weight:bold;background:#f3f3f3}"
    ".cmp{position:relative;width:320px;line-height:0;--pos:50%}"
    ".cmp img{display:block;width:100%;height:auto;image-rendering:pixelated}"
    ".cmp img.left{position:absolute;top:0;left:0;clip-path:inset(0 calc(100% - var(--pos)) 0 0)}"
    ".cmp .bar{position:absolute;top:0;bottom:0;left:var(--pos);width:2px;margin-left:-1px;background:#fff;"
    "box-shadow:0 0 2px #000;pointer-events:none}"
    ".cmp input{position:absolute;left:0;top:0;width:100%;height:100%;margin:0;opacity:0;cursor:ew-resize}"
    ".cmp .lab{position:absolute;top:4px;font:11px sans-serif;line-height:1.2;background:rgba(0,0,0,.6);color:#fff;"
    "padding:1px 4px;pointer-events:none}.cmp .lab-left{left:4px}.cmp .lab-right{right:4px}"
    ".links{font-size:.8em}";

// Sorting by any column (data-v numbers, else text; a second click reverses) and the sliders.
static const char *SCRIPT =
    "(function () {\n"
    "  function key(cell) { var v = cell.getAttribute('data-v'); return v === null ? cell.textContent : parseFloat(v); }\n"
    "  function compare(x, y) {\n"
    "    if (typeof x === 'number' && typeof y === 'number') return x === y ? 0 : (x > y ? 1 : -1);\n"
    "    return String(x).localeCompare(String(y), undefined, {numeric: true});\n"
    "  }\n"
    "  document.querySelectorAll('table.sortable').forEach(function (table) {\n"
    "    var heads = table.tHead.rows[0].cells;\n"
    "    Array.prototype.forEach.call(heads, function (th, col) {\n"
    "      th.addEventListener('click', function () {\n"
    "        var asc = th.getAttribute('aria-sort') !== 'ascending';\n"
    "        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });\n"
    "        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');\n"
    "        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);\n"
    "        rows.sort(function (a, b) { var c = compare(key(a.cells[col]), key(b.cells[col])); return asc ? c : -c; });\n"
    "        rows.forEach(function (r) { body.appendChild(r); });\n"
    "      });\n"
    "    });\n"
    "  });\n"
    "  var names = {input: 'degraded', restored: 'restored', gt: 'ground truth'};\n"
    "  function showPair(pair) {\n"
    "    var sides = pair.split('-');\n"
    "    document.querySelectorAll('.cmp').forEach(function (c) {\n"
    "      c.querySelector('img.left').src = c.getAttribute('data-' + sides[0]);\n"
    "      c.querySelector('img.right').src = c.getAttribute('data-' + sides[1]);\n"
    "      c.querySelector('.lab-left').textContent = names[sides[0]];\n"
    "      c.querySelector('.lab-right').textContent = names[sides[1]];\n"
    "    });\n"
    "  }\n"
    "  var select = document.getElementById('pair');\n"
    "  select.addEventListener('change', function () { showPair(select.value); });\n"
    "  document.querySelectorAll('.cmp input').forEach(function (r) {\n"
    "    r.addEventListener('input', function () { r.parentNode.style.setProperty('--pos', r.value + '%'); });\n"
    "  });\n"
    "})();\n";

static void write_header(FILE *f, const EvalReportInfo *info, const EvalSetResult *res, int n_sets) {
    char desc[160], tiles[400];
    fprintf(f, "<h1>dod-eval run</h1>\n<ul class=\"info\">\n<li>model: ");
    esc(f, info->model_kind);
    if (info->config_path) {
        fprintf(f, " stage %d, config <code>", info->stage);
        esc(f, info->config_path);
        fputs("</code>, checkpoint <code>", f);
    } else {   // an adapter (eval_report.h)
        fprintf(f, " stage %d, adapter <code>", info->stage);
    }
    esc(f, info->checkpoint_path);
    fprintf(f, "</code> (step %lld)</li>\n<li>data: ", info->step);
    esc(f, info->source);
    fputs("</li>\n", f);
    for (int s = 0; s < n_sets; s++) {
        metrics_opts_describe(&res[s].set.metrics, desc, sizeof desc);
        fputs("<li>protocol of ", f);
        esc(f, res[s].set.label);
        fputs(": ", f);
        esc(f, desc);
        fputs("</li>\n", f);
    }
    eval_describe_restore(&info->restore, tiles, sizeof tiles);
    fputs("<li>restore: ", f);
    esc(f, tiles);
    fputs("</li>\n", f);
    if (info->max_images) fprintf(f, "<li>images: at most the first %d of each set (--max-images)</li>\n", info->max_images);
    fputs("</ul>\n", f);
}

static void write_summary(FILE *f, const EvalSetResult *res, int n_sets) {
    const bool lp = n_sets && res[0].has_lpips;   // scored with LPIPS: a column after SSIM
    fprintf(f, "<h2>Summary</h2>\n<table id=\"summary\" class=\"sortable\">\n<thead><tr><th>set</th><th>images</th>"
               "<th>PSNR</th><th>SSIM</th>%s<th>s/image</th><th>peak RSS MiB</th><th>arena peak MiB</th></tr></thead>\n"
               "<tbody>\n", lp ? "<th>LPIPS</th>" : "");
    for (int s = 0; s < n_sets; s++) {
        const EvalSetResult *r = &res[s];
        fputs("<tr data-set=\"", f);
        esc(f, r->set.label);
        fputs("\"><td><a href=\"#set-", f);
        url_segment(f, r->set.label);
        fputs("\">", f);
        esc(f, r->set.label);
        fprintf(f, "</a></td><td class=\"num\" data-v=\"%d\">%d</td>", r->scores.images, r->scores.images);
        num_cell(f, r->scores.psnr, 4);
        num_cell(f, r->scores.ssim, 6);
        if (lp) num_cell(f, r->scores.lpips, 6);
        num_cell(f, r->scores.seconds, 3);
        num_cell(f, r->peak_rss_mib, 1);
        num_cell(f, r->arena_peak_mib, 1);
        fputs("</tr>\n", f);
    }
    EvalAverage avg;
    eval_average(res, n_sets, &avg);
    fprintf(f, "</tbody>\n<tfoot><tr class=\"average\"><td>average</td><td class=\"num\">%d</td>", avg.images);
    num_cell(f, avg.psnr, 4);
    num_cell(f, avg.ssim, 6);
    if (lp) num_cell(f, avg.lpips, 6);
    num_cell(f, avg.seconds_per_image, 3);
    num_cell(f, avg.peak_rss_mib, 1);
    num_cell(f, avg.arena_peak_mib, 1);
    fputs("</tr></tfoot>\n</table>\n", f);
}

// "<set dir>/<kind>/<name>.png" as a URL relative to the page.
static void image_url(FILE *f, const char *set_dir, const char *kind, const char *name) {
    url_segment(f, set_dir);
    fprintf(f, "/%s/", kind);
    url_segment(f, name);
    fputs(".png", f);
}

static void write_set(FILE *f, const EvalSetResult *r) {
    char set_dir[sizeof r->set.label];
    eval_set_dir_name(r->set.label, set_dir, sizeof set_dir);
    fputs("<section id=\"set-", f);
    url_segment(f, r->set.label);
    fputs("\">\n<h2>", f);
    esc(f, r->set.label);
    fprintf(f, " <span class=\"links\">(%d images; <a href=\"", r->scores.images);
    url_segment(f, set_dir);
    fputs("/grid.png\">grid</a>)</span></h2>\n<table class=\"sortable images\" data-set=\"", f);
    esc(f, r->set.label);
    fprintf(f, "\">\n<thead><tr><th>#</th><th>image</th><th>size</th><th>tiles</th><th>PSNR</th><th>SSIM</th>%s"
               "<th>seconds</th><th>comparison</th></tr></thead>\n<tbody>\n", r->has_lpips ? "<th>LPIPS</th>" : "");
    static const char *const kinds[3] = {"input", "restored", "gt"};
    for (int i = 0; i < r->n_images; i++) {
        const EvalImage *im = &r->images[i];
        fputs("<tr data-image=\"", f);
        esc(f, im->name);
        fprintf(f, "\"><td class=\"num\" data-v=\"%lld\">%lld</td><td>", (long long)im->index, (long long)im->index);
        esc(f, im->name);
        fprintf(f, "</td><td class=\"num\" data-v=\"%lld\">%dx%d</td><td class=\"num\" data-v=\"%d\">%d</td>",
                (long long)im->w * im->h, im->w, im->h, im->tiles, im->tiles);
        num_cell(f, im->psnr, 4);
        num_cell(f, im->ssim, 6);
        if (r->has_lpips) num_cell(f, im->lpips, 6);
        num_cell(f, im->seconds, 3);
        fputs("<td><div class=\"cmp\"", f);
        for (int k = 0; k < 3; k++) {
            fprintf(f, " data-%s=\"", kinds[k]);
            image_url(f, set_dir, kinds[k], im->name);
            fputs("\"", f);
        }
        fputs("><img class=\"right\" loading=\"lazy\" alt=\"restored\" src=\"", f);
        image_url(f, set_dir, "restored", im->name);
        fputs("\"/><img class=\"left\" loading=\"lazy\" alt=\"degraded\" src=\"", f);
        image_url(f, set_dir, "input", im->name);
        fputs("\"/><div class=\"bar\"></div><span class=\"lab lab-left\">degraded</span>"
              "<span class=\"lab lab-right\">restored</span>"
              "<input type=\"range\" min=\"0\" max=\"100\" value=\"50\" aria-label=\"slider\"/></div>"
              "<div class=\"links\">", f);
        for (int k = 0; k < 3; k++) {
            fputs(k ? " &#183; <a href=\"" : "<a href=\"", f);
            image_url(f, set_dir, kinds[k], im->name);
            fprintf(f, "\">%s</a>", k == 0 ? "degraded" : k == 1 ? "restored" : "ground truth");
        }
        fputs("</div></td></tr>\n", f);
    }
    fputs("</tbody>\n</table>\n</section>\n", f);
}

int report_html_write(const char *tmp, const EvalReportInfo *info, const EvalSetResult *res, int n_sets, char *err,
                      size_t errlen) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        snprintf(err, errlen, "%s/index.html: out of memory", tmp);
        return -1;
    }
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
               "<meta charset=\"utf-8\"/>\n%s\n<title>dod-eval report: ", GENERATOR_META);
    esc(f, info->model_kind);
    fprintf(f, " step %lld</title>\n<style>%s</style>\n</head>\n<body>\n", info->step, STYLE);
    write_header(f, info, res, n_sets);
    write_summary(f, res, n_sets);
    fputs("<p>Compare: <select id=\"pair\"><option value=\"input-restored\">degraded | restored</option>"
          "<option value=\"restored-gt\">restored | ground truth</option><option value=\"input-gt\">degraded | ground "
          "truth</option></select> (drag across an image; click a column header to sort)</p>\n", f);
    for (int s = 0; s < n_sets; s++) write_set(f, &res[s]);
    fprintf(f, "<script>//<![CDATA[\n%s//]]></script>\n</body>\n</html>\n", SCRIPT);
    int rc = fclose(f);
    char path[4200];
    snprintf(path, sizeof path, "%s/index.html", tmp);
    if (rc != 0 || !text) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    } else {
        rc = fs_write_text_atomic(path, text, err, errlen);
    }
    free(text);
    return rc;
}
