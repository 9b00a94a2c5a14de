// TensorBoard event files (see eval/tfevents.h).
#include "eval/tfevents.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __SSE4_2__
#include <nmmintrin.h>
#endif

#include "autograd/base.h"

// ---- CRC-32C ------------------------------------------------------------------------------------
#define CRC32C_REFLECTED_POLY 0x82f63b78u   // 0x1EDC6F41 bit-reversed

static uint32_t crc_table[256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ CRC32C_REFLECTED_POLY : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t tfevents_crc32c_table(const void *data, size_t n) {
    pthread_once(&crc_table_once, crc_table_init);
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

uint32_t tfevents_crc32c(const void *data, size_t n) {
#ifdef __SSE4_2__
    const uint8_t *p = data;
    uint64_t c = 0xffffffffu;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; n; n--, p++) c32 = _mm_crc32_u8(c32, *p);
    return c32 ^ 0xffffffffu;
#else
    return tfevents_crc32c_table(data, n);
#endif
}

uint32_t tfevents_masked_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static void put_le(uint8_t *out, uint64_t v, int n) {
    for (int i = 0; i < n; i++) out[i] = (uint8_t)(v >> (8 * i));
}

void tfevents_frame(PbBuf *out, const void *data, size_t n) {
    uint8_t head[12], foot[4];
    put_le(head, n, 8);
    put_le(head + 8, tfevents_masked_crc(tfevents_crc32c(head, 8)), 4);
    put_le(foot, tfevents_masked_crc(tfevents_crc32c(data, n)), 4);
    pb_raw(out, head, sizeof head);
    pb_raw(out, data, n);
    pb_raw(out, foot, sizeof foot);
}

// ---- the writer -----------------------------------------------------------------------------------
// Field numbers of event.proto / summary.proto (see the header).
enum { EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5, EVENT_SESSION_LOG = 7,
       EVENT_SOURCE_METADATA = 10 };
enum { SOURCE_WRITER = 1 };
enum { SUMMARY_VALUE = 1 };
enum { VALUE_TAG = 1, VALUE_SIMPLE_VALUE = 2, VALUE_IMAGE = 4 };
enum { IMAGE_HEIGHT = 1, IMAGE_WIDTH = 2, IMAGE_COLORSPACE = 3, IMAGE_ENCODED = 4 };
enum { SESSION_LOG_STATUS = 1, SESSION_LOG_START = 1 };

struct TfEvents {
    FILE *f;
    char path[4200];
    double fixed_wall_time;   // < 0: the clock
    int write_errno;          // the first write failure (0: none); sticky
};

static double wall_time(const TfEvents *w) {
    if (w->fixed_wall_time >= 0) return w->fixed_wall_time;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// The Event envelope (=): wall_time and step, each left out when 0 as proto3 does.
static PbBuf event_head(const TfEvents *w, int64_t step) {
    PbBuf ev = pb_new();
    double t = wall_time(w);
    if (t != 0) pb_field_double(&ev, EVENT_WALL_TIME, t);
    if (step != 0) pb_field_int64(&ev, EVENT_STEP, step);
    return ev;
}

// Frames the event's bytes and appends them to the file; frees ev. After a failed write nothing more
// is appended (a record after a partial one would be unreadable anyway).
static void write_event(TfEvents *w, PbBuf *ev) {
    PbBuf rec = pb_new();
    tfevents_frame(&rec, ev->data, ev->len);
    if (!w->write_errno && (!ev->ok || !rec.ok)) w->write_errno = ENOMEM;
    if (!w->write_errno && fwrite(rec.data, 1, rec.len, w->f) != rec.len) w->write_errno = errno ? errno : EIO;
    pb_free(&rec);
    pb_free(ev);
}

// Event { summary { value { tag, <value field> } } } around a finished Value message; frees value.
static void write_summary_value(TfEvents *w, int64_t step, PbBuf *value) {
    PbBuf summary = pb_new(), ev = event_head(w, step);
    pb_field_message(&summary, SUMMARY_VALUE, value);
    pb_field_message(&ev, EVENT_SUMMARY, &summary);
    write_event(w, &ev);
    pb_free(&summary);
    pb_free(value);
}

TfEvents *tfevents_open_file(const char *path, double fixed_wall_time, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    TfEvents *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "%s: out of memory", path);
        fclose(f);
        return NULL;
    }
    w->f = f;
    snprintf(w->path, sizeof w->path, "%s", path);
    w->fixed_wall_time = fixed_wall_time;
    PbBuf ev = event_head(w, 0), source = pb_new();
    pb_field_string(&ev, EVENT_FILE_VERSION, "brain.Event:2");
    pb_field_string(&source, SOURCE_WRITER, "dod");
    pb_field_message(&ev, EVENT_SOURCE_METADATA, &source);
    pb_free(&source);
    write_event(w, &ev);
    if (tfevents_flush(w, err, errlen)) {
        tfevents_close(w, NULL, 0);
        return NULL;
    }
    return w;
}

TfEvents *tfevents_open(const char *dir, char *err, size_t errlen) {
    if (fs_mkdirs(dir, err, errlen)) return NULL;
    char host[256] = "localhost", path[4200];
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    static int files_opened = 0;   // tells apart two files of one process opened in the same second
    if ((size_t)snprintf(path, sizeof path, "%s/events.out.tfevents.%010lld.%s.%d.%d", dir, (long long)time(NULL), host,
                         (int)getpid(), files_opened++) >= sizeof path) {
        snprintf(err, errlen, "%s: directory name too long for an event file", dir);
        return NULL;
    }
    return tfevents_open_file(path, -1, err, errlen);
}

const char *tfevents_path(const TfEvents *w) { return w->path; }

void tfevents_scalar(TfEvents *w, const char *tag, int64_t step, float value) {
    if (!w) return;
    PbBuf v = pb_new();
    pb_field_string(&v, VALUE_TAG, tag);
    pb_field_float(&v, VALUE_SIMPLE_VALUE, value);   // a oneof member: written even when 0
    write_summary_value(w, step, &v);
}

void tfevents_image(TfEvents *w, const char *tag, int64_t step, const void *png, size_t n, int height, int width,
                    int channels) {
    if (!w) return;
    PbBuf img = pb_new(), v = pb_new();
    if (height) pb_field_varint(&img, IMAGE_HEIGHT, (uint64_t)height);
    if (width) pb_field_varint(&img, IMAGE_WIDTH, (uint64_t)width);
    if (channels) pb_field_varint(&img, IMAGE_COLORSPACE, (uint64_t)channels);
    if (n) pb_field_bytes(&img, IMAGE_ENCODED, png, n);
    pb_field_string(&v, VALUE_TAG, tag);
    pb_field_message(&v, VALUE_IMAGE, &img);
    pb_free(&img);
    write_summary_value(w, step, &v);
}

// Big-endian 32-bit number at p (PNG's byte order).
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

int tfevents_image_png_file(TfEvents *w, const char *tag, int64_t step, const char *path, char *err, size_t errlen) {
    if (!w) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    uint8_t *bytes = NULL;
    size_t n = 0;
    if (fstat(fileno(f), &sb) == 0 && sb.st_size > 0 && (bytes = malloc((size_t)sb.st_size)))
        n = fread(bytes, 1, (size_t)sb.st_size, f);
    fclose(f);
    // signature, then the IHDR chunk: length 13, "IHDR", width, height, bit depth, colour type
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const int channels_of_colour_type[7] = {1, 0, 3, 3, 2, 0, 4};   // grey, -, RGB, palette, grey+A, -, RGBA
    int channels = n >= 33 && bytes[25] < 7 ? channels_of_colour_type[bytes[25]] : 0;
    if (n != (size_t)sb.st_size || n < 33 || memcmp(bytes, sig, 8) || be32(bytes + 8) != 13 ||
        memcmp(bytes + 12, "IHDR", 4) || !channels || be32(bytes + 16) == 0 || be32(bytes + 16) > 0x7fffffff ||
        be32(bytes + 20) == 0 || be32(bytes + 20) > 0x7fffffff) {
        snprintf(err, errlen, "%s: %s", path, n != (size_t)sb.st_size ? "cannot read the whole file" : "not a PNG image");
        free(bytes);
        return -1;
    }
    tfevents_image(w, tag, step, bytes, n, (int)be32(bytes + 20), (int)be32(bytes + 16), channels);
    free(bytes);
    return 0;
}

void tfevents_session_start(TfEvents *w, int64_t step) {
    if (!w) return;
    PbBuf log = pb_new(), ev = event_head(w, step);
    pb_field_varint(&log, SESSION_LOG_STATUS, SESSION_LOG_START);
    pb_field_message(&ev, EVENT_SESSION_LOG, &log);
    pb_free(&log);
    write_event(w, &ev);
}

int tfevents_flush(TfEvents *w, char *err, size_t errlen) {
    if (!w) return 0;
    if (fflush(w->f) != 0 && !w->write_errno) w->write_errno = errno ? errno : EIO;
    if (!w->write_errno) return 0;
    if (err) snprintf(err, errlen, "%s: cannot write: %s", w->path, strerror(w->write_errno));
    return -1;
}

int tfevents_close(TfEvents *w, char *err, size_t errlen) {
    if (!w) return 0;
    int rc = tfevents_flush(w, err, errlen);
    if (fclose(w->f) != 0 && !rc) {
        if (err) snprintf(err, errlen, "%s: cannot write: %s", w->path, strerror(errno));
        rc = -1;
    }
    free(w);
    return rc;
}
