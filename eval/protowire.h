// Encoding the few protocol-buffer wire types a TensorBoard event file needs, by hand (no protobuf
// library): varints, fixed 32/64-bit little-endian numbers, and length-delimited fields (strings,
// bytes, embedded messages). Reference: https://protobuf.dev/programming-guides/encoding/
//
// A field is a key varint (field_number << 3 | wire_type) then its payload. Messages are built
// bottom-up: encode the inner message into its own PbBuf, then append it to the outer one as a
// length-delimited field. Fields are appended in the order the calls are made; writing them in
// field-number order (as the reference encoders do) makes the bytes equal to theirs.
//
// Proto3 leaves out a scalar field that holds its default (0, 0.0, "") unless the field is a member
// of a oneof; the callers decide, these functions always write what they are given.
//
// Base level: libc only. Allocation failures are sticky (ok = false) and reported by the caller.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 } PbWireType;

typedef struct {
    uint8_t *data;   // heap; pb_free releases
    size_t len, cap;
    bool ok;         // false once an allocation failed (the content is then incomplete)
} PbBuf;

// An empty buffer (=).
PbBuf pb_new(void);
void pb_free(PbBuf *b);

// Append (+=) raw bytes / a bare varint (7 bits a byte, low group first, high bit = more follow).
void pb_raw(PbBuf *b, const void *bytes, size_t n);
void pb_varint(PbBuf *b, uint64_t v);

// Append (+=) one whole field: key then payload.
// int32/int64/uint64/enum/bool: varint (a negative int32/int64 is sign-extended to 10 bytes, as
// protobuf does; no zigzag: that is sint32/sint64, which the event protocol does not use).
void pb_field_varint(PbBuf *b, int field, uint64_t v);
void pb_field_int64(PbBuf *b, int field, int64_t v);
void pb_field_double(PbBuf *b, int field, double v);   // fixed64, IEEE-754 little-endian
void pb_field_float(PbBuf *b, int field, float v);     // fixed32, IEEE-754 little-endian
void pb_field_bytes(PbBuf *b, int field, const void *bytes, size_t n);
void pb_field_string(PbBuf *b, int field, const char *s);
// An embedded message: msg's bytes as a length-delimited field (msg is not freed).
void pb_field_message(PbBuf *b, int field, const PbBuf *msg);
