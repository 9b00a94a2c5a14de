// Protocol-buffer wire encoding (see eval/protowire.h).
#include "eval/protowire.h"

#include <stdlib.h>
#include <string.h>

PbBuf pb_new(void) { return (PbBuf){.data = NULL, .len = 0, .cap = 0, .ok = true}; }

void pb_free(PbBuf *b) {
    free(b->data);
    *b = pb_new();
}

void pb_raw(PbBuf *b, const void *bytes, size_t n) {
    if (!b->ok || n == 0) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            b->ok = false;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

void pb_varint(PbBuf *b, uint64_t v) {
    uint8_t out[10];
    size_t n = 0;
    do {
        out[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    pb_raw(b, out, n);
}

static void key(PbBuf *b, int field, PbWireType type) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)type); }

// n bytes of v, least significant first (the wire's fixed32 / fixed64 order on any host).
static void little_endian(PbBuf *b, uint64_t v, int n) {
    uint8_t out[8];
    for (int i = 0; i < n; i++) out[i] = (uint8_t)(v >> (8 * i));
    pb_raw(b, out, (size_t)n);
}

void pb_field_varint(PbBuf *b, int field, uint64_t v) {
    key(b, field, PB_VARINT);
    pb_varint(b, v);
}

void pb_field_int64(PbBuf *b, int field, int64_t v) { pb_field_varint(b, field, (uint64_t)v); }

void pb_field_double(PbBuf *b, int field, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    key(b, field, PB_FIXED64);
    little_endian(b, bits, 8);
}

void pb_field_float(PbBuf *b, int field, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    key(b, field, PB_FIXED32);
    little_endian(b, bits, 4);
}

void pb_field_bytes(PbBuf *b, int field, const void *bytes, size_t n) {
    key(b, field, PB_LEN);
    pb_varint(b, n);
    pb_raw(b, bytes, n);
}

void pb_field_string(PbBuf *b, int field, const char *s) { pb_field_bytes(b, field, s, strlen(s)); }

void pb_field_message(PbBuf *b, int field, const PbBuf *msg) {
    if (!msg->ok) b->ok = false;
    pb_field_bytes(b, field, msg->data, msg->len);
}
