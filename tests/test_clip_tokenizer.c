// The CLIP tokenizer (layers/clip_tokenizer.h) against transformers 4.33's CLIPTokenizer: the 77 input
// ids of every string of tests/fixtures/clip/tokens.json (260 strings: punctuation, numbers, accents,
// emoji, CJK, whitespace and control characters, HTML entities, apostrophes, special-token text, long
// and empty ones) with the real CLIP vocabulary, for SD 1.x's pad (<|endoftext|>) and SD 2.x's ("!"),
// and the untruncated token count. Made by scripts/make_clip_fixtures.py. Also: loading errors name the
// file and what is wrong, invalid UTF-8 is refused, truncation reports the dropped count.
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

int main(void) {
    test_reference_ids();
    test_load_errors();
    return check_summary();
}
