// TensorBoard event files (eval/tfevents.h, eval/protowire.h) and what dod-train writes into them:
//  - CRC-32C against published vectors (RFC 3720 B.4, the "123456789" check value), the SSE4.2 path
//    against the table on random data, TFRecord's masked CRC and varints against protobuf's encoding;
//  - a file of scalars, an image and a SessionLog equal byte for byte to the one tensorboard's
//    RecordWriter wrote from protobuf-encoded events (tests/fixtures/tfevents/reference.tfevents);
//  - a reader here (record framing with both CRCs, the Event fields, TensorBoard's purge of steps at
//    and after a SessionLog START) lists the committed event files of a toy run exactly as
//    TensorBoard's EventAccumulator listed them (toy_run.listing, scripts/read_tfevents.py), and
//    lists a fresh run of the same scenario (train, roll back a checkpoint, resume) the same way;
//  - records are only appended (a flushed prefix never changes), a record cut short is not read,
//    a flipped byte fails its CRC, write errors are reported.
// `test_tfevents --write-run DIR` only runs the scenario into DIR (scripts/make_tfevents_fixtures.py).
#include "tests/check.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>

#include "eval/protowire.h"
#include "eval/tfevents.h"
#include "tests/data_test_util.h"

#define FIXTURES DOD_SOURCE_DIR "/tests/fixtures/tfevents"
#define REF_WALL_TIME 1700000000.5   // scripts/make_tfevents_fixtures.py WALL_TIME

// ---- a small reader ----------------------------------------------------------------------------------
typedef struct {
    const uint8_t *p, *end;
    bool bad;
} Cursor;

static uint64_t rd_varint(Cursor *c) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end) break;
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    c->bad = true;
    return 0;
}

static uint64_t rd_le(Cursor *c, int n) {
    uint64_t v = 0;
    if (c->end - c->p < n) {
        c->bad = true;
        return 0;
    }
    for (int i = 0; i < n; i++) v |= (uint64_t)c->p[i] << (8 * i);
    c->p += n;
    return v;
}

// The next field of a message: number and wire type (=); a length-delimited payload as *sub.
// Returns false at the end or on malformed input (c->bad).
static bool rd_field(Cursor *c, int *field, int *type, uint64_t *num, Cursor *sub) {
    if (c->p >= c->end || c->bad) return false;
    uint64_t key = rd_varint(c);
    *field = (int)(key >> 3);
    *type = (int)(key & 7);
    if (*type == PB_VARINT) *num = rd_varint(c);
    else if (*type == PB_FIXED64) *num = rd_le(c, 8);
    else if (*type == PB_FIXED32) *num = rd_le(c, 4);
    else if (*type == PB_LEN) {
        uint64_t n = rd_varint(c);
        if (n > (uint64_t)(c->end - c->p)) c->bad = true;
        else *sub = (Cursor){c->p, c->p + n, false}, c->p += n;
    } else c->bad = true;
    return !c->bad;
}

typedef struct {
    char tag[128];
    bool is_image;
    float value;
    int height, width, channels;
    size_t png_len;
} RdValue;

typedef struct {
    double wall_time;
    int64_t step;
    char file_version[32], writer[32];
    int session_status;   // 0 none
    int n_values;
    RdValue v[4];
} RdEvent;

static void rd_string(Cursor s, char *out, size_t len) {
    size_t n = (size_t)(s.end - s.p) < len - 1 ? (size_t)(s.end - s.p) : len - 1;
    memcpy(out, s.p, n);
    out[n] = 0;
}

// Decodes an Event (=). 0, or -1 when malformed.
static int decode_event(const uint8_t *data, size_t n, RdEvent *ev) {
    memset(ev, 0, sizeof *ev);
    Cursor c = {data, data + n, false}, sub, sub2, sub3;
    int f, t, f2, t2, f3, t3, f4, t4;
    uint64_t num;
    while (rd_field(&c, &f, &t, &num, &sub)) {
        if (f == 1 && t == PB_FIXED64) memcpy(&ev->wall_time, &num, 8);
        else if (f == 2 && t == PB_VARINT) ev->step = (int64_t)num;
        else if (f == 3 && t == PB_LEN) rd_string(sub, ev->file_version, sizeof ev->file_version);
        else if (f == 10 && t == PB_LEN) {
            while (rd_field(&sub, &f2, &t2, &num, &sub2))
                if (f2 == 1 && t2 == PB_LEN) rd_string(sub2, ev->writer, sizeof ev->writer);
        } else if (f == 7 && t == PB_LEN) {
            while (rd_field(&sub, &f2, &t2, &num, &sub2))
                if (f2 == 1 && t2 == PB_VARINT) ev->session_status = (int)num;
        } else if (f == 5 && t == PB_LEN) {
            while (rd_field(&sub, &f2, &t2, &num, &sub2)) {   // Summary.value
                if (f2 != 1 || t2 != PB_LEN || ev->n_values == 4) return -1;
                RdValue *v = &ev->v[ev->n_values++];
                while (rd_field(&sub2, &f3, &t3, &num, &sub3)) {
                    if (f3 == 1 && t3 == PB_LEN) rd_string(sub3, v->tag, sizeof v->tag);
                    else if (f3 == 2 && t3 == PB_FIXED32) {
                        uint32_t bits = (uint32_t)num;
                        memcpy(&v->value, &bits, 4);
                    } else if (f3 == 4 && t3 == PB_LEN) {
                        v->is_image = true;
                        Cursor im = sub3, payload;
                        while (rd_field(&im, &f4, &t4, &num, &payload)) {
                            if (f4 == 1) v->height = (int)num;
                            else if (f4 == 2) v->width = (int)num;
                            else if (f4 == 3) v->channels = (int)num;
                            else if (f4 == 4) v->png_len = (size_t)(payload.end - payload.p);
                        }
                        if (im.bad) return -1;
                    }
                }
                if (sub2.bad) return -1;
            }
            if (sub.bad) return -1;
        }
    }
    return c.bad ? -1 : 0;
}

// Reads the records of a file as TensorBoard does: a record cut short at the end ends the file; a
// CRC mismatch or an undecodable event is an error. Calls fn per event. Returns the number of
// events, or -1 (with a message) on an error.
typedef void (*EventFn)(void *ctx, const RdEvent *ev);
static int read_events(const char *path, EventFn fn, void *ctx) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    int count = 0;
    uint8_t head[12];
    while (fread(head, 1, 12, f) == 12) {
        Cursor hc = {head, head + 12, false};
        uint64_t len = rd_le(&hc, 8);
        uint32_t len_crc = (uint32_t)rd_le(&hc, 4);
        if (len_crc != tfevents_masked_crc(tfevents_crc32c(head, 8))) {
            fprintf(stderr, "%s: record %d: length CRC mismatch\n", path, count);
            count = -1;
            break;
        }
        uint8_t *data = malloc(len + 4);
        if (!data || fread(data, 1, len + 4, f) != len + 4) {   // cut short: the end
            free(data);
            break;
        }
        Cursor fc = {data + len, data + len + 4, false};
        RdEvent ev;
        if ((uint32_t)rd_le(&fc, 4) != tfevents_masked_crc(tfevents_crc32c(data, len)) || decode_event(data, len, &ev)) {
            fprintf(stderr, "%s: record %d: data CRC mismatch or not an Event\n", path, count);
            free(data);
            count = -1;
            break;
        }
        free(data);
        if (fn) fn(ctx, &ev);
        count++;
    }
    fclose(f);
    return count;
}

// ---- the listing scripts/read_tfevents.py prints --------------------------------------------------
#define MAX_POINTS 512
typedef struct {
    char tag[128];
    bool is_image;
    int64_t step;
    float value;
    int width, height;
} Point;

typedef struct {
    Point p[MAX_POINTS];
    int n;
    char file_version[32];
} Accumulator;

// EventAccumulator's view: every value in file order, a SessionLog START dropping the points of
// steps >= its step (purge_orphaned_data).
static void accumulate(void *ctx, const RdEvent *ev) {
    Accumulator *a = ctx;
    if (ev->file_version[0]) snprintf(a->file_version, sizeof a->file_version, "%s", ev->file_version);
    if (ev->session_status == 1) {
        int k = 0;
        for (int i = 0; i < a->n; i++)
            if (a->p[i].step < ev->step) a->p[k++] = a->p[i];
        a->n = k;
    }
    for (int i = 0; i < ev->n_values && a->n < MAX_POINTS; i++) {
        const RdValue *v = &ev->v[i];
        Point *p = &a->p[a->n++];
        snprintf(p->tag, sizeof p->tag, "%s", v->tag);
        p->is_image = v->is_image;
        p->step = ev->step;
        p->value = v->value;
        p->width = v->width;
        p->height = v->height;
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// The listing of every events.out.tfevents.* file of dir (name order) into out (=); values of the
// scalar tag `values_tag` only. Returns 0, or -1 when a file is unreadable.
static int list_dir(const char *dir, const char *values_tag, char *out, size_t len) {
    static Accumulator acc;
    memset(&acc, 0, sizeof acc);
    DIR *d = opendir(dir);
    if (!d) return -1;
    char *names[64];
    int nf = 0;
    struct dirent *e;
    while ((e = readdir(d)) && nf < 64)
        if (strstr(e->d_name, "tfevents")) names[nf++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)nf, sizeof names[0], cmp_str);
    int rc = nf ? 0 : -1;
    for (int i = 0; i < nf; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (read_events(path, accumulate, &acc) < 0) rc = -1;
        free(names[i]);
    }
    // tags: scalars sorted, then images sorted
    const char *tags[128];
    bool image_of[128];
    int nt = 0;
    for (int i = 0; i < acc.n; i++) {
        bool seen = false;
        for (int k = 0; k < nt && !seen; k++) seen = !strcmp(tags[k], acc.p[i].tag) && image_of[k] == acc.p[i].is_image;
        if (!seen && nt < 128) tags[nt] = acc.p[i].tag, image_of[nt++] = acc.p[i].is_image;
    }
    for (int a = 0; a < nt; a++)   // insertion sort: scalars before images, then by tag
        for (int b = a; b > 0 && (image_of[b - 1] > image_of[b] ||
                                  (image_of[b - 1] == image_of[b] && strcmp(tags[b - 1], tags[b]) > 0)); b--) {
            const char *t = tags[b];
            bool im = image_of[b];
            tags[b] = tags[b - 1], image_of[b] = image_of[b - 1];
            tags[b - 1] = t, image_of[b - 1] = im;
        }
    size_t used = 0;
#define OUT(...) used += (size_t)snprintf(out + used, used < len ? len - used : 0, __VA_ARGS__)
    out[0] = 0;
    if (acc.file_version[0]) OUT("file_version %s\n", acc.file_version);
    for (int k = 0; k < nt; k++) {
        OUT("%s %s steps=", image_of[k] ? "image" : "scalar", tags[k]);
        int first = 1;
        for (int i = 0; i < acc.n; i++)
            if (!strcmp(acc.p[i].tag, tags[k]) && acc.p[i].is_image == image_of[k]) OUT("%s%lld", first ? "" : ",", (long long)acc.p[i].step), first = 0;
        if (!image_of[k] && !strcmp(tags[k], values_tag)) {
            OUT(" values=");
            first = 1;
            for (int i = 0; i < acc.n; i++)
                if (!strcmp(acc.p[i].tag, tags[k]) && !acc.p[i].is_image) OUT("%s%.6g", first ? "" : ",", (double)acc.p[i].value), first = 0;
        }
        if (image_of[k]) {   // distinct sizes (one in these runs)
            OUT(" size=");
            for (int i = 0; i < acc.n; i++)
                if (!strcmp(acc.p[i].tag, tags[k]) && acc.p[i].is_image) {
                    OUT("%dx%d", acc.p[i].width, acc.p[i].height);
                    break;
                }
        }
        OUT("\n");
    }
#undef OUT
    return used < len ? rc : -1;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f)) dod_fatal("write_file", "%s: cannot write", path);
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    *n = fread(buf, 1, (size_t)sz, f);
    buf[*n] = 0;
    fclose(f);
    return buf;
}

// ---- unit checks -----------------------------------------------------------------------------------
static void check_crc(void) {
    uint8_t buf[64];
    CHECK(tfevents_crc32c("123456789", 9) == 0xE3069283u, "check value %08x", tfevents_crc32c("123456789", 9));
    CHECK(tfevents_crc32c_table("123456789", 9) == 0xE3069283u, "table path");
    memset(buf, 0, 32);
    CHECK(tfevents_crc32c(buf, 32) == 0x8A9136AAu, "32 zero bytes (RFC 3720 B.4)");
    memset(buf, 0xff, 32);
    CHECK(tfevents_crc32c(buf, 32) == 0x62A8AB43u, "32 0xff bytes (RFC 3720 B.4)");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    CHECK(tfevents_crc32c(buf, 32) == 0x46DD794Eu, "incrementing bytes (RFC 3720 B.4)");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
    CHECK(tfevents_crc32c(buf, 32) == 0x113FDB5Cu, "decrementing bytes (RFC 3720 B.4)");
    CHECK(tfevents_crc32c("", 0) == 0, "empty");
    // the SSE4.2 path (when compiled) agrees with the table at every length and alignment
    uint32_t s = 12345;
    for (int i = 0; i < 64; i++) buf[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
    int mismatches = 0;
    for (int off = 0; off < 8; off++)
        for (int n = 0; n + off <= 64; n++) mismatches += tfevents_crc32c(buf + off, (size_t)n) != tfevents_crc32c_table(buf + off, (size_t)n);
    CHECK(mismatches == 0, "%d hardware/table mismatches", mismatches);
    // TFRecord's mask, and tensorboard's masked_crc32c(b"123456789") (pywrap_tensorflow)
    CHECK(tfevents_masked_crc(0xE3069283u) == (((0xE3069283u >> 15) | (0xE3069283u << 17)) + 0xa282ead8u), "mask formula");
    CHECK(tfevents_masked_crc(tfevents_crc32c("123456789", 9)) == 0xc78ab0e5u, "masked %08x",
          tfevents_masked_crc(tfevents_crc32c("123456789", 9)));
}

static bool bytes_are(const PbBuf *b, const char *hex) {
    char got[256] = "";
    for (size_t i = 0; i < b->len && 2 * i + 3 < sizeof got; i++) snprintf(got + 2 * i, 3, "%02x", b->data[i]);
    if (strcmp(got, hex)) fprintf(stderr, "  bytes %s, expected %s\n", got, hex);
    return !strcmp(got, hex);
}

static void check_protowire(void) {
    // expected bytes: protobuf's own encoder (google.protobuf.internal.encoder._EncodeVarint /
    // _EncodeSignedVarint, Event(step=-5).SerializeToString(), struct.pack('<d' / '<f'))
    struct { uint64_t v; const char *hex; } varints[] = {
        {0, "00"}, {1, "01"}, {127, "7f"}, {128, "8001"}, {300, "ac02"}, {16383, "ff7f"}, {16384, "808001"},
        {1234567890123ull, "cb89ec8ff723"}, {UINT64_MAX, "ffffffffffffffffff01"}};
    for (size_t i = 0; i < sizeof varints / sizeof varints[0]; i++) {
        PbBuf b = pb_new();
        pb_varint(&b, varints[i].v);
        CHECK(bytes_are(&b, varints[i].hex), "varint %llu", (unsigned long long)varints[i].v);
        pb_free(&b);
    }
    PbBuf b = pb_new();
    pb_field_int64(&b, 2, -5);   // int64 -5: sign-extended, 10 bytes
    CHECK(bytes_are(&b, "10fbffffffffffffffff01"), "int64 -5");
    pb_free(&b);
    pb_field_double(&b, 1, 1700000000.5);
    CHECK(bytes_are(&b, "0900002040fc54d941"), "double field");
    pb_free(&b);
    pb_field_float(&b, 2, 0.5f);
    CHECK(bytes_are(&b, "150000003f"), "float field");
    pb_free(&b);
    pb_field_string(&b, 1, "ab");
    pb_field_bytes(&b, 4, "", 0);
    CHECK(bytes_are(&b, "0a0261622200"), "string and empty bytes");
    PbBuf outer = pb_new();
    pb_field_message(&outer, 5, &b);
    CHECK(bytes_are(&outer, "2a060a0261622200"), "embedded message");
    pb_free(&b);
    pb_free(&outer);
}

// The events of reference.tfevents (scripts/make_tfevents_fixtures.py reference_events), into path.
static int write_reference(const char *path) {
    char err[512];
    TfEvents *w = tfevents_open_file(path, REF_WALL_TIME, err, sizeof err);
    if (!w) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    tfevents_scalar(w, "train/loss", 1, 0.5f);
    tfevents_scalar(w, "train/lr", 2, 0.0f);
    tfevents_scalar(w, "val_psnr/dehaze", 1234567890123ll, -3.25f);
    tfevents_scalar(w, "x", 0, 1e-30f);
    tfevents_scalar(w, "negative step", -5, INFINITY);
    int rc = tfevents_image_png_file(w, "val/grid", 10, FIXTURES "/tiny.png", err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    tfevents_session_start(w, 11);
    if (tfevents_close(w, err, sizeof err)) fprintf(stderr, "%s\n", err), rc = -1;
    return rc;
}

typedef struct {
    RdEvent ev[16];
    int n;
} Events;

static void collect(void *ctx, const RdEvent *ev) {
    Events *e = ctx;
    if (e->n < 16) e->ev[e->n++] = *ev;
}

static void check_reference(const char *scratch) {
    char path[512];
    snprintf(path, sizeof path, "%s/ours.tfevents", scratch);
    CHECK(write_reference(path) == 0, "writing the reference events");
    size_t n_ours, n_ref;
    char *ours = read_all(path, &n_ours), *ref = read_all(FIXTURES "/reference.tfevents", &n_ref);
    CHECK(ours && ref && n_ours == n_ref && !memcmp(ours, ref, n_ref), "byte-identical to tensorboard's RecordWriter + "
          "protobuf (%zu vs %zu bytes)", n_ours, n_ref);
    for (size_t i = 0; ours && ref && i < n_ours && i < n_ref; i++)
        if (ours[i] != ref[i]) {
            fprintf(stderr, "  first difference at byte %zu\n", i);
            break;
        }
    char err[600];
    CHECK(tfevents_open_file(path, -1, err, sizeof err) == NULL && strstr(err, "ours.tfevents: cannot create: File exists"),
          "an existing file is not overwritten");
    free(ours);
    free(ref);

    // the reader sees the fields as written
    static Events evs;
    evs.n = 0;
    CHECK(read_events(FIXTURES "/reference.tfevents", collect, &evs) == 8, "8 records");
    const RdEvent *e = evs.ev;
    CHECK(evs.n == 8 && !strcmp(e[0].file_version, "brain.Event:2") && !strcmp(e[0].writer, "dod") &&
          e[0].wall_time == REF_WALL_TIME && e[0].step == 0, "file_version record");
    CHECK(evs.n == 8 && e[3].step == 1234567890123ll && e[3].n_values == 1 && !strcmp(e[3].v[0].tag, "val_psnr/dehaze") &&
          e[3].v[0].value == -3.25f, "scalar record");
    CHECK(evs.n == 8 && e[5].step == -5 && isinf(e[5].v[0].value), "negative step, inf");
    CHECK(evs.n == 8 && e[6].v[0].is_image && e[6].v[0].width == 3 && e[6].v[0].height == 2 && e[6].v[0].channels == 3 &&
          e[6].v[0].png_len > 33, "image record");
    CHECK(evs.n == 8 && e[7].session_status == 1 && e[7].step == 11, "SessionLog START");

    // a flipped byte in a record fails its CRC; a record cut short ends the file (TensorBoard's reading)
    size_t n;
    char *bytes = read_all(FIXTURES "/reference.tfevents", &n);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/flipped.tfevents", scratch);
    bytes[n - 10] ^= 1;
    write_file(bad, bytes, n);
    CHECK(read_events(bad, NULL, NULL) == -1, "a flipped byte is detected");
    bytes[n - 10] ^= 1;
    write_file(bad, bytes, n - 3);
    CHECK(read_events(bad, NULL, NULL) == 7, "a truncated last record is dropped, the 7 before it read");
    free(bytes);

    // a PNG that is not one
    TfEvents *w = tfevents_open_file(bad, -1, path, sizeof path);
    CHECK(w == NULL, "refuses an existing path");
    snprintf(bad, sizeof bad, "%s/new.tfevents", scratch);
    w = tfevents_open_file(bad, -1, path, sizeof path);
    CHECK(w && tfevents_image_png_file(w, "g", 1, FIXTURES "/reference.tfevents", path, sizeof path) == -1 &&
          strstr(path, "reference.tfevents: not a PNG image"), "not a PNG: %s", path);
    CHECK(tfevents_image_png_file(w, "g", 1, FIXTURES "/missing.png", path, sizeof path) == -1 &&
          strstr(path, "missing.png: cannot open"), "missing PNG: %s", path);
    CHECK(tfevents_close(w, path, sizeof path) == 0 && read_events(bad, NULL, NULL) == 1, "nothing written for them");
}

// Records are appended: what a flush pushed out is a prefix of the file forever after.
static void check_append_only(const char *scratch) {
    char path[600], err[600];
    snprintf(path, sizeof path, "%s/append.tfevents", scratch);
    TfEvents *w = tfevents_open_file(path, -1, err, sizeof err);
    CHECK(w != NULL, "%s", err);
    if (!w) return;
    tfevents_scalar(w, "a", 1, 1.0f);
    tfevents_flush(w, err, sizeof err);
    size_t n1, n2;
    char *first = read_all(path, &n1);
    for (int i = 2; i < 50; i++) tfevents_scalar(w, "a", i, (float)i);
    CHECK(tfevents_close(w, err, sizeof err) == 0, "%s", err);
    char *all = read_all(path, &n2);
    CHECK(n2 > n1 && !memcmp(first, all, n1), "the flushed prefix is unchanged (%zu then %zu bytes)", n1, n2);
    CHECK(read_events(path, NULL, NULL) == 50, "50 records");
    free(first);
    free(all);

    // a write that fails (the file size limit, in a child) is reported by the flush, naming the file
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &lim);
        snprintf(path, sizeof path, "%s/full.tfevents", scratch);
        TfEvents *f = tfevents_open_file(path, -1, err, sizeof err);
        for (int i = 0; f && i < 400; i++) tfevents_scalar(f, "a", i, 1.0f);
        int rc = tfevents_flush(f, err, sizeof err);
        tfevents_close(f, NULL, 0);
        _exit(rc == -1 && strstr(err, "full.tfevents: cannot write: File too large") ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a failed write is reported");
}

#if defined(DOD_HAVE_HDF5) && defined(DOD_HAVE_INIPARSER)
#include "tests/train_test_util.h"

// The scenario of tests/fixtures/tfevents/toy_run, into dir: a 5-step toy run (log every step,
// checkpoints and validations every 2 and at the end), step 5's checkpoint then lost (as after a
// crash between its log lines and its checkpoint), and a resume from step 4 to 6. TensorBoard should
// show every train/ tag at steps 1..6 once and validations at 2, 4, 6 (the one at 5 purged).
static int toy_run_scenario(const char *dir) {
    char data[600], run[600], path[700], err[CFG_ERR_LEN];
    snprintf(data, sizeof data, "%s/data.h5", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    train_test_dataset(data, true, 7);
    static const char *const sets[] = {
        "model.kind=toy", "model.toy_width=4", "model.frozen_dtype=f32", "data.tasks=dehaze:1,denoise:1",
        "data.crop=24", "data.threads=0", "optim.lr=2e-3", "optim.schedule=cosine", "optim.warmup=2",
        "loss.mse=1", "loss.ssim=0.5", "train.steps=5", "log.every=1", "checkpoint.every=2",
        "checkpoint.keep_last=0", "val.every=2", "val.images=2"};
    TrainConfig c = train_test_config("toy_run_scenario", sets, sizeof sets / sizeof sets[0], data, run);
    Record rec = {0};
    if (train_test_run(&c, false, &rec, err, sizeof err)) {
        fprintf(stderr, "toy run: %s\n", err);
        return -1;
    }
    snprintf(path, sizeof path, "%s/checkpoints/step_0000005.safetensors", run);
    unlink(path);
    snprintf(path, sizeof path, "%s/checkpoints/latest", run);
    write_file(path, "step_0000004.safetensors\n", 25);
    c.steps = 6;
    if (train_test_run(&c, true, &rec, err, sizeof err)) {
        fprintf(stderr, "toy run resume: %s\n", err);
        return -1;
    }
    return 0;
}

static void check_toy_run(const char *scratch) {
    static char expected[16384], committed[16384], fresh[16384];
    size_t n;
    char *text = read_all(FIXTURES "/toy_run.listing", &n);
    CHECK(text != NULL, "toy_run.listing missing");
    if (!text) return;
    snprintf(expected, sizeof expected, "%s", text);
    free(text);
    // our reader agrees with TensorBoard's on the committed files ...
    CHECK(list_dir(FIXTURES "/toy_run", "train/lr", committed, sizeof committed) == 0, "reading toy_run/");
    CHECK(!strcmp(committed, expected), "toy_run/ as read here:\n%s\nTensorBoard's listing:\n%s", committed, expected);
    // ... and a fresh run of the same scenario reads the same
    CHECK(toy_run_scenario(scratch) == 0, "the toy run scenario");
    char tb[600];
    snprintf(tb, sizeof tb, "%s/run/tb", scratch);
    CHECK(list_dir(tb, "train/lr", fresh, sizeof fresh) == 0, "reading the fresh run's event files");
    CHECK(!strcmp(fresh, expected), "fresh run:\n%s\nexpected:\n%s", fresh, expected);
    CHECK(strstr(expected, "scalar val/psnr steps=2,4,6\n") && strstr(expected, "scalar train/loss steps=1,2,3,4,5,6\n") &&
          strstr(expected, "scalar train/1-ssim") && strstr(expected, "image val/grid steps=2,4,6 size=120x72\n"),
          "the listing shows the purge of step 5 and the terms that are on");
}
#endif

int main(int argc, char **argv) {
#if defined(DOD_HAVE_HDF5) && defined(DOD_HAVE_INIPARSER)
    if (argc == 3 && !strcmp(argv[1], "--write-run")) return toy_run_scenario(argv[2]) ? 1 : 0;
#endif
    (void)argc, (void)argv;
    check_crc();
    check_protowire();
    char scratch[256];
    data_scratch_dir("tfevents", scratch, sizeof scratch);
    check_reference(scratch);
    check_append_only(scratch);
#if defined(DOD_HAVE_HDF5) && defined(DOD_HAVE_INIPARSER)
    check_toy_run(scratch);
#else
    printf("toy run listing skipped (needs HDF5 and iniparser)\n");
#endif
    data_rm_rf(scratch);
    return check_summary();
}
