// CLIP BPE tokenizer (see clip_tokenizer.h for the steps and the reference they follow).
// Unicode: PCRE2 (UTF + UCP) runs the pre-tokenisation pattern, libunistring gives general categories,
// NFC and full lower-casing (Python's str.lower: SpecialCasing, final sigma).
#include "layers/clip_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicase.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>
#include <zlib.h>

#include "autograd/tensor.h"

// transformers' CLIPTokenizer reads merges.txt lines [1, 49152 - 256 - 2 + 1): at most this many merges.
#define CLIP_MAX_MERGES (49152 - 256 - 2)
#define CLIP_MAX_SPECIALS 16
#define CLIP_PATTERN "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"

// ---- string -> int map (open addressing, FNV-1a) ------------------------------------------------------
typedef struct {
    char **keys;   // NUL-terminated copies; NULL = empty slot
    int32_t *values;
    size_t cap, n;
} StrMap;

static uint64_t fnv1a(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void strmap_init(StrMap *m, size_t expected) {
    m->cap = 64;
    while (m->cap < 2 * expected) m->cap *= 2;
    m->keys = dod_calloc(m->cap * sizeof(char *), "tokenizer map");
    m->values = dod_malloc(m->cap * sizeof(int32_t), "tokenizer map");
    m->n = 0;
}

static void strmap_free(StrMap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->values);
}

// The slot of key (len bytes): where it is, or the empty slot where it would go.
static size_t strmap_slot(const StrMap *m, const char *key, size_t len) {
    size_t i = fnv1a(key, len) & (m->cap - 1);
    while (m->keys[i] && (strlen(m->keys[i]) != len || memcmp(m->keys[i], key, len)))
        i = (i + 1) & (m->cap - 1);
    return i;
}

// Value of key, or -1.
static int32_t strmap_get(const StrMap *m, const char *key, size_t len) {
    size_t i = strmap_slot(m, key, len);
    return m->keys[i] ? m->values[i] : -1;
}

// m[key] = value unless key is already present (the first value wins). The map never fills: its
// capacity is twice the entries it was sized for, and callers insert at most that many.
static void strmap_put_first(StrMap *m, const char *key, size_t len, int32_t value) {
    size_t i = strmap_slot(m, key, len);
    if (m->keys[i]) return;
    DOD_CHECK(2 * (m->n + 1) <= m->cap, "clip tokenizer", "map over capacity (%zu entries)", m->n);
    m->keys[i] = dod_malloc(len + 1, "tokenizer map key");
    memcpy(m->keys[i], key, len);
    m->keys[i][len] = 0;
    m->values[i] = value;
    m->n++;
}

// ---- the tokenizer ----------------------------------------------------------------------------------
struct ClipTokenizer {
    StrMap vocab;            // token -> id
    StrMap ranks;            // "first second" -> merge rank
    int vocab_size, max_length;
    int64_t bos, eos, unk, pad;
    char *specials[CLIP_MAX_SPECIALS];  // texts split off before cleaning (bos, eos, unk, pad, additional)
    int n_specials;
    char byte_sym[256][3];   // GPT-2's byte -> symbol map (bytes_to_unicode), each symbol as UTF-8
    pcre2_code *pattern;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// The whole file at path, or at path.gz when path does not exist (gzread passes plain files through).
// malloc'd and NUL-terminated (=); *len its size; *used (PATH_MAX-ish buffer) the path read. NULL with a
// message in err.
static char *read_text_maybe_gz(const char *path, size_t *len, char *used, size_t used_len, char *err, size_t errlen) {
    snprintf(used, used_len, "%s", path);
    FILE *probe = fopen(used, "rb");
    if (!probe) {
        snprintf(used, used_len, "%s.gz", path);
        probe = fopen(used, "rb");
        if (!probe) {
            set_err(err, errlen, "%s: cannot open (nor %s.gz)", path, path);
            return NULL;
        }
    }
    fclose(probe);
    gzFile f = gzopen(used, "rb");
    if (!f) {
        set_err(err, errlen, "%s: cannot open", used);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = dod_malloc(cap, "tokenizer file");
    for (;;) {
        if (cap - n < (1 << 15)) buf = realloc(buf, cap *= 2);
        DOD_CHECK(buf && cap <= ((size_t)256 << 20), used, "larger than 256 MiB");
        int got = gzread(f, buf + n, (unsigned)(cap - n - 1));
        if (got < 0) {
            int code;
            set_err(err, errlen, "%s: read error: %s", used, gzerror(f, &code));
            gzclose(f);
            free(buf);
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static cJSON *read_json_object(const char *path, char *used, size_t used_len, char *err, size_t errlen) {
    size_t len;
    char *text = read_text_maybe_gz(path, &len, used, used_len, err, errlen);
    if (!text) return NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        set_err(err, errlen, "%s: not a JSON object (parse error near byte %ld)", used,
                (root || !at) ? 0L : (long)(at - text));
        cJSON_Delete(root);
        root = NULL;
    }
    free(text);
    return root;
}

// GPT-2 / CLIP bytes_to_unicode: printable Latin-1 bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand for
// themselves, the other 68 bytes for U+0100 + n in byte order.
static void build_byte_symbols(ClipTokenizer *t) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        ucs4_t cp = printable ? (ucs4_t)b : (ucs4_t)(256 + n++);
        int k = u8_uctomb((uint8_t *)t->byte_sym[b], cp, 2);
        t->byte_sym[b][k] = 0;
    }
}

static int load_vocab(ClipTokenizer *t, const char *path, char *err, size_t errlen) {
    char used[1024];
    cJSON *root = read_json_object(path, used, sizeof used, err, errlen);
    if (!root) return -1;
    int n = cJSON_GetArraySize(root);
    strmap_init(&t->vocab, (size_t)n);
    for (const cJSON *v = root->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e8 ||
            v->valuedouble != (double)(int32_t)v->valuedouble) {
            set_err(err, errlen, "%s: entry \"%s\": expected a non-negative integer id", used, v->string);
            cJSON_Delete(root);
            return -1;
        }
        strmap_put_first(&t->vocab, v->string, strlen(v->string), (int32_t)v->valuedouble);
    }
    t->vocab_size = n;
    cJSON_Delete(root);
    if (n == 0) {
        set_err(err, errlen, "%s: empty vocabulary", used);
        return -1;
    }
    return 0;
}

// merges.txt as transformers reads it: the file stripped of surrounding whitespace, split at '\n',
// lines 1 .. CLIP_MAX_MERGES (line 0 is the "#version" header); line i + 1 has rank i. A line that is
// not two whitespace-separated symbols keeps its rank but can never match (as its tuple in Python).
static int load_merges(ClipTokenizer *t, const char *path, char *err, size_t errlen) {
    char used[1024];
    size_t len;
    char *text = read_text_maybe_gz(path, &len, used, sizeof used, err, errlen);
    if (!text) return -1;
    strmap_init(&t->ranks, CLIP_MAX_MERGES);
    char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\v' || *p == '\f') p++;
    char *line_end = strchr(p, '\n');
    int rank = 0;
    char key[1024];
    for (char *line = line_end ? line_end + 1 : NULL; line && *line && rank < CLIP_MAX_MERGES; rank++) {
        char *next = strchr(line, '\n');
        size_t n = next ? (size_t)(next - line) : strlen(line);
        char *parts[3];
        size_t plen[3];
        int np = 0;
        for (size_t i = 0; i < n && np < 3;) {
            while (i < n && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) i++;
            if (i >= n) break;
            size_t s = i;
            while (i < n && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') i++;
            parts[np] = line + s;
            plen[np++] = i - s;
        }
        if (np == 2 && plen[0] + plen[1] + 2 <= sizeof key) {
            memcpy(key, parts[0], plen[0]);
            key[plen[0]] = ' ';
            memcpy(key + plen[0] + 1, parts[1], plen[1]);
            strmap_put_first(&t->ranks, key, plen[0] + 1 + plen[1], rank);
        }
        line = next ? next + 1 : NULL;
    }
    free(text);
    if (t->ranks.n == 0) {
        set_err(err, errlen, "%s: no merges after the version line", used);
        return -1;
    }
    return 0;
}

// A special token's text from a config value: a string, or an AddedToken object {"content": ...}.
static const char *token_content(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static int add_special(ClipTokenizer *t, const char *text, const char *file, const char *key, char *err,
                       size_t errlen) {
    for (int i = 0; i < t->n_specials; i++)
        if (!strcmp(t->specials[i], text)) return 0;
    if (!*text || t->n_specials == CLIP_MAX_SPECIALS) {
        set_err(err, errlen, "%s: %s: %s", file, key, *text ? "too many special tokens" : "empty special token");
        return -1;
    }
    t->specials[t->n_specials++] = strdup(text);
    return 0;
}

// The id of special token `key` (bos_token, ...): special_tokens_map's value, else tokenizer_config's,
// else dflt; it must be in the vocabulary (transformers would append it as a new id, which the text
// encoder's embedding table does not have).
static int special_id(ClipTokenizer *t, const cJSON *map, const char *map_path, const cJSON *cfg, const char *cfg_path,
                      const char *key, const char *dflt, int64_t *id, char *err, size_t errlen) {
    const cJSON *v = map ? cJSON_GetObjectItemCaseSensitive(map, key) : NULL;
    const char *file = map_path;
    if (!v || cJSON_IsNull(v)) {
        v = cJSON_GetObjectItemCaseSensitive(cfg, key);
        file = cfg_path;
    }
    const char *text = dflt;
    if (v && !cJSON_IsNull(v)) {
        text = token_content(v);
        if (!text) {
            set_err(err, errlen, "%s: %s: expected a string or an object with \"content\"", file, key);
            return -1;
        }
    }
    int32_t got = strmap_get(&t->vocab, text, strlen(text));
    if (got < 0) {
        set_err(err, errlen, "%s: %s \"%s\" is not in the vocabulary", v ? file : "CLIPTokenizer default", key, text);
        return -1;
    }
    *id = got;
    return add_special(t, text, file, key, err, errlen);
}

static int load_specials(ClipTokenizer *t, const char *map_path, const char *cfg_path, char *err, size_t errlen) {
    char map_used[1024] = "", cfg_used[1024];
    cJSON *cfg = read_json_object(cfg_path, cfg_used, sizeof cfg_used, err, errlen);
    if (!cfg) return -1;
    cJSON *map = NULL;
    if (map_path && !(map = read_json_object(map_path, map_used, sizeof map_used, err, errlen))) {
        cJSON_Delete(cfg);
        return -1;
    }
    int rc = -1;
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length");
    if (!cJSON_IsNumber(ml) || ml->valuedouble < 3 || ml->valuedouble > 1e6 || ml->valuedouble != (int)ml->valuedouble) {
        set_err(err, errlen, "%s: model_max_length: %s", cfg_used,
                ml ? "expected an integer from 3 to 1000000" : "missing (the padded length, 77 in SD)");
        goto done;
    }
    t->max_length = (int)ml->valuedouble;
    if (special_id(t, map, map_used, cfg, cfg_used, "bos_token", "<|startoftext|>", &t->bos, err, errlen) ||
        special_id(t, map, map_used, cfg, cfg_used, "eos_token", "<|endoftext|>", &t->eos, err, errlen) ||
        special_id(t, map, map_used, cfg, cfg_used, "unk_token", "<|endoftext|>", &t->unk, err, errlen) ||
        special_id(t, map, map_used, cfg, cfg_used, "pad_token", "<|endoftext|>", &t->pad, err, errlen))
        goto done;
    const cJSON *extra = map ? cJSON_GetObjectItemCaseSensitive(map, "additional_special_tokens") : NULL;
    const char *extra_file = map_used;
    if (!extra) {
        extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens");
        extra_file = cfg_used;
    }
    for (const cJSON *v = cJSON_IsArray(extra) ? extra->child : NULL; v; v = v->next) {
        const char *text = token_content(v);
        if (!text || strmap_get(&t->vocab, text, strlen(text)) < 0) {
            set_err(err, errlen, "%s: additional_special_tokens: \"%s\" is not in the vocabulary", extra_file,
                    text ? text : "(not a string)");
            goto done;
        }
        if (add_special(t, text, extra_file, "additional_special_tokens", err, errlen)) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return rc;
}

ClipTokenizer *clip_tokenizer_load_files(const char *vocab_json, const char *merges_txt,
                                         const char *special_tokens_map, const char *tokenizer_config, char *err,
                                         size_t errlen) {
    ClipTokenizer *t = dod_calloc(sizeof *t, "clip tokenizer");
    build_byte_symbols(t);
    if (load_vocab(t, vocab_json, err, errlen) || load_merges(t, merges_txt, err, errlen) ||
        load_specials(t, special_tokens_map, tokenizer_config, err, errlen)) {
        clip_tokenizer_free(t);
        return NULL;
    }
    int code;
    PCRE2_SIZE at;
    t->pattern = pcre2_compile((PCRE2_SPTR)CLIP_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS,
                               &code, &at, NULL);
    if (!t->pattern) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        dod_fatal("clip tokenizer", "PCRE2 cannot compile the CLIP pattern at offset %zu: %s", (size_t)at, msg);
    }
    return t;
}

ClipTokenizer *clip_tokenizer_load(const char *dir, char *err, size_t errlen) {
    char v[1024], m[1024], s[1024], c[1024];
    snprintf(v, sizeof v, "%s/vocab.json", dir);
    snprintf(m, sizeof m, "%s/merges.txt", dir);
    snprintf(s, sizeof s, "%s/special_tokens_map.json", dir);
    snprintf(c, sizeof c, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(s, "rb");
    if (f) fclose(f);
    return clip_tokenizer_load_files(v, m, f ? s : NULL, c, err, errlen);
}

void clip_tokenizer_free(ClipTokenizer *t) {
    if (!t) return;
    if (t->vocab.keys) strmap_free(&t->vocab);
    if (t->ranks.keys) strmap_free(&t->ranks);
    for (int i = 0; i < t->n_specials; i++) free(t->specials[i]);
    pcre2_code_free(t->pattern);
    free(t);
}

int clip_tokenizer_max_length(const ClipTokenizer *t) { return t->max_length; }
int clip_tokenizer_vocab_size(const ClipTokenizer *t) { return t->vocab_size; }
int64_t clip_tokenizer_bos_id(const ClipTokenizer *t) { return t->bos; }
int64_t clip_tokenizer_eos_id(const ClipTokenizer *t) { return t->eos; }
int64_t clip_tokenizer_pad_id(const ClipTokenizer *t) { return t->pad; }

// ---- text clean-up (BasicTokenizer) -------------------------------------------------------------------
typedef struct {
    int64_t *ids;
    int n, cap;
} IdList;

static void ids_push(IdList *l, int64_t id) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->ids = realloc(l->ids, sizeof(int64_t) * (size_t)l->cap);
        DOD_CHECK(l->ids, "clip tokenizer", "out of memory for %d token ids", l->cap);
    }
    l->ids[l->n++] = id;
}

// BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks (not kana or hangul).
static bool is_cjk(ucs4_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Python's str.isspace (what str.split() splits at).
static bool is_py_space(ucs4_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Appends (+=) len bytes to a growing buffer.
typedef struct {
    uint8_t *p;
    size_t n, cap;
} Buf;

static void buf_add(Buf *b, const void *s, size_t len) {
    if (b->n + len + 1 > b->cap) {
        while (b->n + len + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 256;
        b->p = realloc(b->p, b->cap);
        DOD_CHECK(b->p, "clip tokenizer", "out of memory for %zu bytes of text", b->cap);
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void buf_add_uc(Buf *b, ucs4_t c) {
    uint8_t u[6];
    int k = u8_uctomb(u, c, sizeof u);
    buf_add(b, u, (size_t)k);
}

// Python's str.lower() of one word w[0..n), appended (+=) to out: each character's full lower-case
// mapping (SpecialCasing's unconditional entries: U+0130 -> "i\u0307"), and capital sigma by Python's
// Final_Sigma rule, \p{cased} \p{case-ignorable}* U+03A3 !(\p{case-ignorable}* \p{cased}) -> U+03C2.
// (libunistring's u8_tolower does not skip case-ignorable characters before the sigma: "a'Σ".)
static void lower_word(const uint8_t *w, size_t n, Buf *out) {
    ucs4_t *cs = dod_malloc(sizeof(ucs4_t) * (n + 1), "lower-case word");
    size_t nc = 0;
    for (size_t i = 0; i < n;) i += (size_t)u8_mbtouc(&cs[nc++], w + i, n - i);
    for (size_t i = 0; i < nc; i++) {
        if (cs[i] == 0x3A3) {
            ptrdiff_t j = (ptrdiff_t)i - 1;
            while (j >= 0 && uc_is_property_case_ignorable(cs[j])) j--;
            bool final = j >= 0 && uc_is_property_cased(cs[j]);
            size_t k = i + 1;
            while (final && k < nc && uc_is_property_case_ignorable(cs[k])) k++;
            final = final && (k == nc || !uc_is_property_cased(cs[k]));
            buf_add_uc(out, final ? 0x3C2 : 0x3C3);
            continue;
        }
        uint8_t one[6], low[32];
        int len = u8_uctomb(one, cs[i], sizeof one);
        size_t low_len = sizeof low;
        uint8_t *r = u8_tolower(one, (size_t)len, NULL, NULL, low, &low_len);
        DOD_CHECK(r, "clip tokenizer", "lower-casing U+%04X failed", (unsigned)cs[i]);
        buf_add(out, r, low_len);
        if (r != low) free(r);
    }
    free(cs);
}

// " ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(piece)) into out (=).
static void basic_clean(const uint8_t *s, size_t n, Buf *out) {
    Buf cleaned = {0};
    const uint8_t *end = s + n;
    while (s < end) {  // _clean_text and _tokenize_chinese_chars
        ucs4_t c;
        s += u8_mbtouc(&c, s, (size_t)(end - s));
        bool tab_nl = c == '\t' || c == '\n' || c == '\r';
        if (c == 0 || c == 0xFFFD || (!tab_nl && uc_is_general_category(c, UC_CATEGORY_C))) continue;
        if (c == ' ' || tab_nl || uc_is_general_category(c, UC_CATEGORY_Zs)) c = ' ';
        if (is_cjk(c)) {
            buf_add(&cleaned, " ", 1);
            buf_add_uc(&cleaned, c);
            buf_add(&cleaned, " ", 1);
        } else {
            buf_add_uc(&cleaned, c);
        }
    }
    out->n = 0;
    buf_add(out, "", 0);
    if (!cleaned.n) return;
    size_t nfc_len;
    uint8_t *nfc = u8_normalize(UNINORM_NFC, cleaned.p, cleaned.n, NULL, &nfc_len);
    DOD_CHECK(nfc, "clip tokenizer", "NFC normalisation failed");
    free(cleaned.p);
    const uint8_t *p = nfc, *e = nfc + nfc_len;
    while (p < e) {  // whitespace_tokenize, lower() per word, " ".join
        ucs4_t c;
        int k = u8_mbtouc(&c, p, (size_t)(e - p));
        if (is_py_space(c)) {
            p += k;
            continue;
        }
        const uint8_t *w = p;
        while (p < e) {
            k = u8_mbtouc(&c, p, (size_t)(e - p));
            if (is_py_space(c)) break;
            p += k;
        }
        if (out->n) buf_add(out, " ", 1);
        lower_word(w, (size_t)(p - w), out);
    }
    free(nfc);
}

// ---- byte-level BPE ----------------------------------------------------------------------------------
// Symbols of a word are contiguous byte ranges of sym_buf (merging joins neighbours), so a symbol is
// its start offset; symbol i spans [start[i], start[i + 1]).
static int64_t symbol_id(const ClipTokenizer *t, const char *s, size_t len) {
    int32_t id = strmap_get(&t->vocab, s, len);
    return id >= 0 ? id : t->unk;
}

// The rank of merging "a b" (a, b byte ranges), or INT32_MAX.
static int32_t pair_rank(const ClipTokenizer *t, const char *a, size_t la, const char *b, size_t lb, Buf *key) {
    key->n = 0;
    buf_add(key, a, la);
    buf_add(key, " ", 1);
    buf_add(key, b, lb);
    int32_t r = strmap_get(&t->ranks, (const char *)key->p, key->n);
    return r >= 0 ? r : INT32_MAX;
}

// Appends (+=) the ids of one pre-tokenised word (UTF-8 bytes w[0..n)).
static void bpe_word(const ClipTokenizer *t, const uint8_t *w, size_t n, IdList *out) {
    if ((n == 15 && !memcmp(w, "<|startoftext|>", 15)) || (n == 13 && !memcmp(w, "<|endoftext|>", 13))) {
        ids_push(out, symbol_id(t, (const char *)w, n));  // CLIPTokenizer's bpe cache: kept whole, no </w>
        return;
    }
    Buf sym = {0}, key = {0};
    size_t *start = dod_malloc(sizeof(size_t) * (n + 2), "bpe symbols");
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        start[ns++] = sym.n;
        buf_add(&sym, t->byte_sym[w[i]], strlen(t->byte_sym[w[i]]));
    }
    buf_add(&sym, "</w>", 4);  // part of the last symbol
    start[ns] = sym.n;
    const char *s = (const char *)sym.p;
    while (ns > 1) {
        int32_t best = INT32_MAX;
        for (size_t i = 0; i + 1 < ns; i++) {
            int32_t r = pair_rank(t, s + start[i], start[i + 1] - start[i], s + start[i + 1], start[i + 2] - start[i + 1],
                                  &key);
            if (r < best) best = r;
        }
        if (best == INT32_MAX) break;
        // Merge every occurrence of the best pair, left to right without overlap (as CLIPTokenizer.bpe).
        size_t m = 0;
        for (size_t i = 0; i < ns;) {
            start[m++] = start[i];
            if (i + 1 < ns && pair_rank(t, s + start[i], start[i + 1] - start[i], s + start[i + 1],
                                        start[i + 2] - start[i + 1], &key) == best)
                i += 2;
            else
                i += 1;
        }
        start[m] = sym.n;
        ns = m;
    }
    for (size_t i = 0; i < ns; i++) ids_push(out, symbol_id(t, s + start[i], start[i + 1] - start[i]));
    free(start);
    free(sym.p);
    free(key.p);
}

// Appends (+=) the ids of a piece of text holding no special token (CLIPTokenizer._tokenize).
static void tokenize_piece(const ClipTokenizer *t, const uint8_t *s, size_t n, IdList *out, pcre2_match_data *md) {
    Buf text = {0};
    basic_clean(s, n, &text);
    PCRE2_SIZE off = 0;
    while (off < text.n) {
        int rc = pcre2_match(t->pattern, text.p, text.n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        DOD_CHECK(rc > 0, "clip tokenizer", "PCRE2 match error %d", rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        bpe_word(t, text.p + ov[0], ov[1] - ov[0], out);
        off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;  // the pattern has no empty match; guard anyway
    }
    free(text.p);
}

int clip_tokenize_all(const ClipTokenizer *t, const char *text, int64_t **ids, int *n, const char *who, char *err,
                      size_t errlen) {
    size_t len = strlen(text);
    const uint8_t *bad = u8_check((const uint8_t *)text, len);
    if (bad) {
        set_err(err, errlen, "%s: not valid UTF-8 (byte %zu of the text)", who, (size_t)(bad - (const uint8_t *)text));
        return -1;
    }
    IdList out = {0};
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->pattern, NULL);
    // Split at the special tokens' text (transformers' added-token trie: leftmost, then longest match).
    size_t piece = 0;
    for (size_t i = 0; i <= len;) {
        int hit = -1;
        size_t hit_len = 0;
        for (int k = 0; k < t->n_specials && i < len; k++) {
            size_t l = strlen(t->specials[k]);
            if (l > hit_len && l <= len - i && !memcmp(text + i, t->specials[k], l)) {
                hit = k;
                hit_len = l;
            }
        }
        if (hit < 0 && i < len) {
            i++;
            continue;
        }
        if (i > piece) tokenize_piece(t, (const uint8_t *)text + piece, i - piece, &out, md);
        if (hit < 0) break;
        ids_push(&out, strmap_get(&t->vocab, t->specials[hit], hit_len));
        i += hit_len;
        piece = i;
    }
    pcre2_match_data_free(md);
    *ids = out.ids;
    *n = out.n;
    return 0;
}

int clip_tokenize(const ClipTokenizer *t, const char *text, int64_t *ids, int *n_dropped, const char *who, char *err,
                  size_t errlen) {
    int64_t *all;
    int n;
    if (clip_tokenize_all(t, text, &all, &n, who, err, errlen)) return -1;
    int keep = n < t->max_length - 2 ? n : t->max_length - 2;
    ids[0] = t->bos;
    memcpy(ids + 1, all, sizeof(int64_t) * (size_t)keep);
    ids[keep + 1] = t->eos;
    for (int i = keep + 2; i < t->max_length; i++) ids[i] = t->pad;
    if (n_dropped) *n_dropped = n - keep;
    free(all);
    return n;
}
