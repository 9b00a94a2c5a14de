// Pure-C parts of the data pipeline (no HDF5): keyed RNG and permutation, the AirNet/PromptIR noise
// formula, the synthetic degradations, and LQ/HQ file pairing by the public sets' conventions.
#include "tests/check.h"
#include "tests/data_test_util.h"

#include "data/degrade.h"
#include "data/keyed_rng.h"
#include "data/pairing.h"

static void test_keyed_permute(void) {
    int ns[] = {1, 2, 3, 5, 16, 17, 100, 257, 1000};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int n = ns[k];
        char *seen = calloc(n, 1);
        int ok = 1, identity = 1;
        for (int i = 0; i < n; i++) {
            uint64_t j = keyed_permute(42 + k, n, i);
            if (j >= (uint64_t)n || seen[j]) ok = 0;
            else seen[j] = 1;
            identity &= j == (uint64_t)i;
        }
        CHECK(ok, "keyed_permute is not a bijection of [0, %d)", n);
        if (n >= 16) CHECK(!identity, "keyed_permute of %d items is the identity", n);
        free(seen);
    }
    // different keys give different permutations
    int same = 1;
    for (int i = 0; i < 100; i++) same &= keyed_permute(1, 100, i) == keyed_permute(2, 100, i);
    CHECK(!same, "keys 1 and 2 give the same permutation");
}

static void test_normals(void) {
    KeyedRng r = keyed_rng(7);
    double s = 0, s2 = 0;
    int n = 200000;
    for (int i = 0; i < n; i++) {
        double v = rng_normal(&r);
        s += v;
        s2 += v * v;
    }
    CHECK_NEAR(s / n, 0.0, 0.01, "normal mean");
    CHECK_NEAR(s2 / n, 1.0, 0.015, "normal variance");
}

// The noise formula, written out independently: floor(clip(x + sigma * n, 0, 255)).
static void test_gaussian_noise_formula(void) {
    char path[1024], err[1024];
    data_fixture_path("astronaut.png", path, sizeof path);
    Image img;
    CHECK(image_load(path, &img, err, sizeof err) == 0, "%s", err);
    if (!img.pix) return;
    size_t n = (size_t)img.w * img.h * 3;
    uint8_t *noisy = malloc(n), *again = malloc(n);
    double sigma = 25;
    degrade_gaussian_noise(img.pix, noisy, n, sigma, 1234);
    degrade_gaussian_noise(img.pix, again, n, sigma, 1234);
    CHECK(memcmp(noisy, again, n) == 0, "same key gives different noise");
    KeyedRng r = keyed_rng(1234);
    size_t mismatches = 0, clipped = 0;
    double s = 0, s2 = 0;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        double v = img.pix[i] + sigma * rng_normal(&r);
        double c = v < 0 ? 0 : v > 255 ? 255 : v;
        mismatches += noisy[i] != (uint8_t)floor(c);
        clipped += v < 0 || v > 255;
        if (img.pix[i] > 80 && img.pix[i] < 175) {   // away from the clip: mean -0.5 (truncation), std sigma
            double d = (double)noisy[i] - img.pix[i];
            s += d;
            s2 += d * d;
            m++;
        }
    }
    CHECK(mismatches == 0, "%zu values differ from floor(clip(x + sigma n))", mismatches);
    double mean = s / m, sd = sqrt(s2 / m - mean * mean);
    CHECK_NEAR(mean, -0.5, 0.3, "noise mean (truncating cast)");
    CHECK_NEAR(sd, sqrt(sigma * sigma + 1.0 / 12), 0.6, "noise std");
    // in place works too
    memcpy(again, img.pix, n);
    degrade_gaussian_noise(again, again, n, sigma, 1234);
    CHECK(memcmp(noisy, again, n) == 0, "in-place noise differs");
    (void)clipped;
    free(noisy);
    free(again);
    image_free(&img);
}

static double mean_abs_diff(const Image *a, const Image *b) {
    double s = 0;
    size_t n = (size_t)a->w * a->h * 3;
    for (size_t i = 0; i < n; i++) s += fabs((double)a->pix[i] - b->pix[i]);
    return s / n;
}

static double mean_value(const Image *a) {
    double s = 0;
    size_t n = (size_t)a->w * a->h * 3;
    for (size_t i = 0; i < n; i++) s += a->pix[i];
    return s / n;
}

static void test_degradations(void) {
    char path[1024], err[1024], params[512], params2[512];
    data_fixture_path("coffee.png", path, sizeof path);
    Image img;
    CHECK(image_load(path, &img, err, sizeof err) == 0, "%s", err);
    if (!img.pix) return;
    for (int k = DEG_RAIN; k < DEG_COUNT; k++) {
        Image a = degrade_apply(k, &img, 99, params, sizeof params);
        Image b = degrade_apply(k, &img, 99, params2, sizeof params2);
        Image c = degrade_apply(k, &img, 100, params2, sizeof params2);
        const char *name = degrade_kind_name(k);
        CHECK(a.w == img.w && a.h == img.h, "%s changed the size", name);
        CHECK(memcmp(a.pix, b.pix, (size_t)a.w * a.h * 3) == 0, "%s is not deterministic in its key", name);
        CHECK(memcmp(a.pix, c.pix, (size_t)a.w * a.h * 3) != 0, "%s ignores its key", name);
        double d = mean_abs_diff(&a, &img);
        CHECK(d > 2.0 && d < 120.0, "%s: mean |LQ - HQ| = %.2f is not a visible, bounded degradation", name, d);
        CHECK(strncmp(params, name, strlen(name)) == 0, "%s params '%s'", name, params);
        if (k == DEG_RAIN) CHECK(mean_value(&a) > mean_value(&img), "rain streaks should brighten");
        if (k == DEG_HAZE) CHECK(mean_value(&a) > mean_value(&img), "haze should brighten toward the airlight");
        if (k == DEG_LOWLIGHT) CHECK(mean_value(&a) < 0.5 * mean_value(&img), "low light should darken a lot");
        if (k == DEG_BLUR) {   // blur keeps the mean (normalised kernel) and lowers the gradient energy
            CHECK_NEAR(mean_value(&a), mean_value(&img), 1.5, "blur mean");
            double ga = 0, gi = 0;
            for (int y = 0; y < img.h; y++)
                for (int x = 1; x < img.w; x++) {
                    size_t i = ((size_t)y * img.w + x) * 3;
                    ga += fabs((double)a.pix[i] - a.pix[i - 3]);
                    gi += fabs((double)img.pix[i] - img.pix[i - 3]);
                }
            CHECK(ga < 0.8 * gi, "blur: gradient energy %.0f vs clean %.0f", ga, gi);
        }
        image_free(&a);
        image_free(&b);
        image_free(&c);
    }
    CHECK(degrade_kind_from_name("haze") == DEG_HAZE && degrade_kind_from_name("dehaze") == DEG_HAZE &&
              degrade_kind_from_name("snow") == -1,
          "kind names");
    image_free(&img);
}

static void test_pair_rules(void) {
    const char *hq[] = {"norain-001", "0001", "0002", "123", "GOPR0384_11_00-000001"};
    char got[256];
    CHECK(pair_match_stem("rain-001", hq, 5, got, sizeof got) == 2 && !strcmp(got, "norain-001"), "Rain100L: %s", got);
    CHECK(pair_match_stem("0001_0.8_0.2", hq, 5, got, sizeof got) == 3 && !strcmp(got, "0001"), "SOTS: %s", got);
    CHECK(pair_match_stem("0002_1_0.16", hq, 5, got, sizeof got) == 3 && !strcmp(got, "0002"), "OTS: %s", got);
    CHECK(pair_match_stem("123", hq, 5, got, sizeof got) == 1 && !strcmp(got, "123"), "LOL: %s", got);
    CHECK(pair_match_stem("GOPR0384_11_00-000001", hq, 5, got, sizeof got) == 1, "GoPro same name");
    CHECK(pair_match_stem("rain-002", hq, 5, got, sizeof got) == 0, "rain-002 must not match");
    CHECK(pair_match_stem("0003_0.8_0.2", hq, 5, got, sizeof got) == 0, "0003 must not match");
}

static void touch(const char *dir, const char *name) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
}

static void test_pair_dirs(void) {
    char root[256], lq[512], hq[512], err[1024];
    data_scratch_dir("pairing", root, sizeof root);
    data_mkdir(root, "hazy", lq, sizeof lq);
    data_mkdir(root, "clear", hq, sizeof hq);
    touch(lq, "0001_0.8_0.2.jpg");
    touch(lq, "0001_0.9_0.1.jpg");
    touch(lq, "0002_0.8_0.2.jpg");
    touch(lq, "0009_0.8_0.2.jpg");   // no partner
    touch(lq, "notes.txt");          // not an image: ignored
    touch(hq, "0001.png");
    touch(hq, "0002.png");
    touch(hq, "0005.png");           // chosen by nobody
    PairList pl;
    CHECK(pair_by_name(lq, hq, &pl, err, sizeof err) == 0, "%s", err);
    CHECK(pl.n_pairs == 3, "pairs: %d", pl.n_pairs);
    CHECK(pl.n_pairs == 3 && strstr(pl.pairs[1].lq, "0001_0.9_0.1.jpg") && strstr(pl.pairs[1].hq, "clear/0001.png"),
          "pair 1: %s -> %s", pl.n_pairs > 1 ? pl.pairs[1].lq : "", pl.n_pairs > 1 ? pl.pairs[1].hq : "");
    CHECK(pl.n_unmatched_lq == 1 && strstr(pl.unmatched_lq[0], "0009_0.8_0.2.jpg"), "unmatched LQ");
    CHECK(pl.n_unmatched_hq == 1 && strstr(pl.unmatched_hq[0], "0005.png"), "unmatched HQ");
    pairlist_free(&pl);
    // two HQ files with one stem: ambiguous, named in the error
    touch(hq, "0002.jpg");
    CHECK(pair_by_name(lq, hq, &pl, err, sizeof err) == -1 && strstr(err, "0002.jpg") && strstr(err, "0002.png"),
          "ambiguous stems: %s", err);
    // explicit list: comments, blank lines, tab-separated names with spaces; a bad line is named
    char list[512];
    snprintf(list, sizeof list, "%s/pairs.txt", root);
    FILE *f = fopen(list, "w");
    fprintf(f, "# lq hq\n\na.png b.png\nmy photo.png\tclean photo.png\n");
    fclose(f);
    CHECK(pair_from_list(list, "/data/lq", "/data/hq", &pl, err, sizeof err) == 0, "%s", err);
    CHECK(pl.n_pairs == 2 && !strcmp(pl.pairs[0].lq, "/data/lq/a.png") && !strcmp(pl.pairs[1].hq, "/data/hq/clean photo.png"),
          "list pairs");
    pairlist_free(&pl);
    f = fopen(list, "a");
    fprintf(f, "only-one.png\n");
    fclose(f);
    CHECK(pair_from_list(list, NULL, NULL, &pl, err, sizeof err) == -1 && strstr(err, "pairs.txt:5"), "bad line: %s", err);
    data_rm_rf(root);
}

int main(void) {
    test_keyed_permute();
    test_normals();
    test_gaussian_noise_formula();
    test_degradations();
    test_pair_rules();
    test_pair_dirs();
    return check_summary();
}
