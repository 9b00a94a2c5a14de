// The CLIP tokenizer (layers/clip_tokenizer.h) against transformers 4.33's CLIPTokenizer: the 77 input
// ids of every string of tests/fixtures/clip/tokens.json (260 strings: punctuation, numbers, accents,
// emoji, CJK, whitespace and control characters, HTML entities, apostrophes, special-token text, long
// and empty ones) with the real CLIP vocabulary, for SD 1.x's pad (<|endoftext|>) and SD 2.x's ("!"),
// and the untruncated token count. Made by scripts/make_clip_fixtures.py. Also: loading errors name the
// file and what is wrong, invalid UTF-8 is refused, truncation reports the dropped count; random text and
// truncated config files (fuzz) are handled.
#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "layers/clip_tokenizer.h"

#define FIX DOD_SOURCE_DIR "/tests/fixtures/clip/"

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    buf[fread(buf, 1, (size_t)n, f)] = 0;
    fclose(f);
    return buf;
}

// Every row of tokens.json through t; key "sd1" or "sd2" holds the expected ids less trailing pads.
static void check_rows(const ClipTokenizer *t, const cJSON *rows, const char *key) {
    int n_rows = 0, n_bad = 0;
    int64_t ids[77];
    for (const cJSON *row = rows->child; row; row = row->next, n_rows++) {
        const char *text = cJSON_GetObjectItem(row, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(row, key);
        char n_key[8];
        snprintf(n_key, sizeof n_key, "n_%s", key);
        int want_n = cJSON_GetObjectItem(row, n_key)->valueint;
        char err[256];
        int dropped = -1;
        int n = clip_tokenize(t, text, ids, &dropped, "test", err, sizeof err);
        bool ok = n == want_n && dropped == (n > 75 ? n - 75 : 0);
        int i = 0;
        for (const cJSON *v = want->child; v; v = v->next, i++) ok = ok && i < 77 && ids[i] == (int64_t)v->valuedouble;
        for (; i < 77; i++) ok = ok && ids[i] == clip_tokenizer_pad_id(t);
        if (!ok && n_bad++ < 10) {
            fprintf(stderr, "%s: \"%s\": %d tokens (want %d), dropped %d; got", key, text, n, want_n, dropped);
            for (int k = 0; k < 20; k++) fprintf(stderr, " %ld", (long)ids[k]);
            fprintf(stderr, "\n  want");
            for (const cJSON *v = want->child; v; v = v->next) fprintf(stderr, " %ld", (long)v->valuedouble);
            fprintf(stderr, "\n");
        }
    }
    CHECK(n_rows >= 200 && n_bad == 0, "%s: %d of %d strings tokenized differently from transformers", key, n_bad,
          n_rows);
}

static void test_reference_ids(void) {
    char *json = read_all(FIX "tokens.json");
    CHECK(json != NULL, "cannot read %s", FIX "tokens.json");
    if (!json) return;
    cJSON *rows = cJSON_Parse(json);
    char err[512];
    ClipTokenizer *sd1 = clip_tokenizer_load(FIX "tokenizer", err, sizeof err);
    CHECK(sd1 != NULL, "load: %s", err);
    ClipTokenizer *sd2 = clip_tokenizer_load_files(FIX "tokenizer/vocab.json", FIX "tokenizer/merges.txt",
                                                   FIX "tokenizer_sd2/special_tokens_map.json",
                                                   FIX "tokenizer_sd2/tokenizer_config.json", err, sizeof err);
    CHECK(sd2 != NULL, "load sd2: %s", err);
    if (!sd1 || !sd2) return;
    CHECK(clip_tokenizer_vocab_size(sd1) == 49408 && clip_tokenizer_max_length(sd1) == 77, "vocab %d, max length %d",
          clip_tokenizer_vocab_size(sd1), clip_tokenizer_max_length(sd1));
    CHECK(clip_tokenizer_bos_id(sd1) == 49406 && clip_tokenizer_eos_id(sd1) == 49407 &&
              clip_tokenizer_pad_id(sd1) == 49407 && clip_tokenizer_pad_id(sd2) == 0,
          "bos %ld eos %ld pad %ld / sd2 pad %ld (special_tokens_map's '!' wins over tokenizer_config's)",
          (long)clip_tokenizer_bos_id(sd1), (long)clip_tokenizer_eos_id(sd1), (long)clip_tokenizer_pad_id(sd1),
          (long)clip_tokenizer_pad_id(sd2));
    check_rows(sd1, rows, "sd1");
    check_rows(sd2, rows, "sd2");

    // Invalid UTF-8 is refused with the caller's name for the text.
    int64_t ids[77];
    CHECK(clip_tokenize(sd1, "ab\xff", ids, NULL, "[model] prompt", err, sizeof err) == -1 &&
              strstr(err, "[model] prompt: not valid UTF-8 (byte 2"),
          "invalid UTF-8: %s", err);
    CHECK(clip_tokenize(sd1, "\xe6\x9d", ids, NULL, "x", err, sizeof err) == -1, "truncated UTF-8 sequence accepted");
    clip_tokenizer_free(sd1);
    clip_tokenizer_free(sd2);
    cJSON_Delete(rows);
    free(json);
}

// UTF-8 of cp into out; returns its length.
static int u8_len_encode(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return out[0] = (char)(0xE0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 63)), out[2] = (char)(0x80 | (cp & 63)), 3;
    out[0] = (char)(0xF0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 63));
    out[2] = (char)(0x80 | ((cp >> 6) & 63)), out[3] = (char)(0x80 | (cp & 63));
    return 4;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void expect_load_error(const char *what, const char *dir, const char *needle) {
    char err[512] = "";
    ClipTokenizer *t = clip_tokenizer_load(dir, err, sizeof err);
    CHECK(!t && strstr(err, needle), "%s: want an error containing '%s', got %s", what, needle, t ? "a tokenizer" : err);
    clip_tokenizer_free(t);
}

static void test_load_errors(void) {
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "/tmp/dod_test_clip_tok_%d", (int)getpid());
    expect_load_error("missing folder", dir, "vocab.json: cannot open");
    CHECK(mkdir(dir, 0755) == 0 || 1, "mkdir");
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    write_file(path, "{\"a\": 0, \"b\": 1, \"ab</w>\": 2, \"a</w>\": 3, \"b</w>\": 4, \"<|startoftext|>\": 5, "
                     "\"<|endoftext|>\": 6}");
    expect_load_error("missing merges", dir, "merges.txt: cannot open (nor");
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    write_file(path, "#version: 0.2\na b</w>\n");
    expect_load_error("missing config", dir, "tokenizer_config.json: cannot open");
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_file(path, "{\"pad_token\": \"<|endoftext|>\"}");
    expect_load_error("no model_max_length", dir, "model_max_length: missing");
    write_file(path, "{\"model_max_length\": 8, \"pad_token\": \"!\"}");
    expect_load_error("pad not in vocab", dir, "pad_token \"!\" is not in the vocabulary");
    write_file(path, "{\"model_max_length\": 8, \"pad_token\": 5}");
    expect_load_error("pad of the wrong type", dir, "pad_token: expected a string");
    write_file(path, "{\"model_max_length\": 8,");
    expect_load_error("bad JSON", dir, "not a JSON object");
    write_file(path, "{\"model_max_length\": 6}");
    char err[512];
    ClipTokenizer *t = clip_tokenizer_load(dir, err, sizeof err);
    CHECK(t != NULL, "small tokenizer: %s", err);
    if (t) {
        // "ab ab ab ab ab": the merge gives "ab</w>" (id 2) per word; 5 tokens, 4 fit (6 - 2); "zz" is unknown.
        int64_t ids[6];
        int dropped;
        int n = clip_tokenize(t, "AB ab ab ab ab", ids, &dropped, "t", err, sizeof err);
        CHECK(n == 5 && dropped == 1 && ids[0] == 5 && ids[1] == 2 && ids[4] == 2 && ids[5] == 6,
              "truncated: n %d dropped %d ids %ld %ld .. %ld %ld", n, dropped, (long)ids[0], (long)ids[1], (long)ids[4],
              (long)ids[5]);
        n = clip_tokenize(t, "zz", ids, &dropped, "t", err, sizeof err);
        CHECK(n == 2 && ids[1] == 6 && ids[2] == 6 && ids[3] == 6 && dropped == 0,
              "unknown symbols become unk (<|endoftext|>): n %d, %ld %ld", n, (long)ids[1], (long)ids[2]);
        clip_tokenizer_free(t);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

// Fuzz: random bytes (mostly invalid UTF-8) and random code points (valid UTF-8, every plane, controls,
// unassigned, surrogates excluded) never crash the tokenizer; valid text gives ids inside the vocabulary
// and invalid text is refused. Config files cut at random points load or fail with a message, never crash.
static uint64_t fuzz_state = 0x9E3779B97F4A7C15ull;
static uint32_t fuzz_next(void) {
    fuzz_state ^= fuzz_state << 13, fuzz_state ^= fuzz_state >> 7, fuzz_state ^= fuzz_state << 17;
    return (uint32_t)fuzz_state;
}

static void test_fuzz(void) {
    char err[512];
    ClipTokenizer *t = clip_tokenizer_load(FIX "tokenizer", err, sizeof err);
    if (!t) return;
    int64_t ids[77];
    int bad_ids = 0, refused = 0, valid_refused = 0;
    for (int it = 0; it < 2000; it++) {
        char text[200];
        int n = (int)(fuzz_next() % 60);
        if (it % 2) {
            for (int i = 0; i < n; i++) text[i] = (char)(1 + fuzz_next() % 255);
            text[n] = 0;
        } else {
            int len = 0;
            for (int i = 0; i < n / 3; i++) {
                uint32_t cp = fuzz_next() % 4 ? 1 + fuzz_next() % 0x3000 : 1 + fuzz_next() % 0x10FFFF;
                if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
                len += u8_len_encode(cp, text + len);
            }
            text[len] = 0;
        }
        int r = clip_tokenize(t, text, ids, NULL, "fuzz", err, sizeof err);
        refused += r < 0;
        for (int i = 0; r >= 0 && i < 77; i++) bad_ids += ids[i] < 0 || ids[i] >= clip_tokenizer_vocab_size(t);
        valid_refused += it % 2 == 0 && r < 0;
    }
    CHECK(bad_ids == 0 && refused > 0 && valid_refused == 0,
          "fuzz: %d ids outside the vocabulary, %d of 2000 refused, %d of them valid UTF-8", bad_ids, refused,
          valid_refused);
    clip_tokenizer_free(t);

    // Truncated copies of a small tokenizer's files.
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "/tmp/dod_test_clip_fuzz_%d", (int)getpid());
    mkdir(dir, 0755);
    const char *vocab = "{\"a\": 0, \"b\": 1, \"ab</w>\": 2, \"<|startoftext|>\": 3, \"<|endoftext|>\": 4}";
    const char *merges = "#version: 0.2\na b</w>\nb a\n";
    const char *cfg = "{\"model_max_length\": 9, \"pad_token\": {\"content\": \"<|endoftext|>\"}}";
    const char *texts[3] = {vocab, merges, cfg}, *names[3] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    int loaded = 0, failed_with_message = 0;
    for (int f = 0; f < 3; f++)
        for (size_t cut = 0; cut <= strlen(texts[f]); cut++) {
            for (int g = 0; g < 3; g++) {
                snprintf(path, sizeof path, "%s/%s", dir, names[g]);
                FILE *out = fopen(path, "wb");
                fwrite(texts[g], 1, g == f ? cut : strlen(texts[g]), out);
                fclose(out);
            }
            err[0] = 0;
            ClipTokenizer *u = clip_tokenizer_load(dir, err, sizeof err);
            loaded += u != NULL;
            failed_with_message += !u && strstr(err, dir) != NULL;
            if (u) CHECK(clip_tokenize(u, "ab ba", ids, NULL, "fuzz", err, sizeof err) >= 0, "small tokenizer: %s", err);
            clip_tokenizer_free(u);
        }
    size_t total = strlen(vocab) + strlen(merges) + strlen(cfg) + 3;
    CHECK(loaded >= 3 && (size_t)(loaded + failed_with_message) == total,
          "truncated files: %d loaded, %d failed naming the file, of %zu", loaded, failed_with_message, total);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
    test_reference_ids();
    test_load_errors();
    test_fuzz();
    return check_summary();
}
