// TensorBoard event files, written without TensorFlow: scalars and PNG images as TensorBoard's
// own readers expect them (`tensorboard --logdir DIR` picks up every events.out.tfevents.* file in
// DIR and its subfolders).
//
// A file is a sequence of TFRecords, each
//     uint64 length | uint32 masked_crc32c(the 8 length bytes) | data[length] | uint32 masked_crc32c(data)
// (little-endian; masked_crc(c) = ((c >> 15) | (c << 17)) + 0xa282ead8, 32-bit arithmetic; CRC-32C is
// the Castagnoli polynomial 0x1EDC6F41, reflected, init and final xor 0xffffffff). Each record's data
// is one serialized tensorboard.Event (tensorboard/compat/proto/event.proto, summary.proto):
//     Event        { 1 wall_time double; 2 step int64; oneof { 3 file_version string; 5 summary Summary;
//                    7 session_log SessionLog }; 10 source_metadata SourceMetadata { 1 writer string } }
//     Summary      { repeated 1 value Value }
//     Value        { 1 tag string; oneof { 2 simple_value float; 4 image Image } }
//     Image        { 1 height int32; 2 width int32; 3 colorspace int32 (channels); 4 encoded_image_string bytes }
//     SessionLog   { 1 status enum (START = 1) }
// The first record of a file is {wall_time, file_version "brain.Event:2", source_metadata {"dod"}}; then
// one Event per scalar or image. Fields are written in field-number order and proto3 defaults are
// left out, so the bytes equal those of protobuf's own encoder (tests/test_tfevents.c checks a file
// against one written by the tensorboard package's RecordWriter, scripts/make_tfevents_fixtures.py).
//
// Records are only ever appended, and reach the file on tfevents_flush: a crash loses at most what
// was added since the last flush (TensorBoard reads a file whose last record is cut short up to that
// record). A resumed run opens a new file and writes SessionLog START at its first step, which makes
// TensorBoard drop the earlier files' records from that step on (as the resume drops them from the
// JSONL log).
//
// Depends on libc, autograd/base.h (fs_mkdirs) and protowire (the encoding). Write errors are
// sticky and reported by tfevents_flush / tfevents_close.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "eval/protowire.h"

// CRC-32C of n bytes (=): SSE4.2's crc32 instruction when compiled for it, else the table.
uint32_t tfevents_crc32c(const void *data, size_t n);
// The portable table-driven CRC-32C (what tfevents_crc32c computes without SSE4.2).
uint32_t tfevents_crc32c_table(const void *data, size_t n);
// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t tfevents_masked_crc(uint32_t crc);
// Appends (+=) one TFRecord holding data[0..n) to out.
void tfevents_frame(PbBuf *out, const void *data, size_t n);

typedef struct TfEvents TfEvents;

// Creates dir (and parents) and a new file dir/events.out.tfevents.<unix seconds>.<host>.<pid>.<n>
// (n counts the files this process opened, as TensorBoard's own writer names them; TensorBoard reads
// a folder's files in name order), and writes the file_version record. NULL with "<path>: cannot create: <reason>" in err.
TfEvents *tfevents_open(const char *dir, char *err, size_t errlen);
// The same at exactly `path` (which must not exist). fixed_wall_time >= 0 stamps every record with
// that time instead of the clock (tests compare bytes); < 0: the clock.
TfEvents *tfevents_open_file(const char *path, double fixed_wall_time, char *err, size_t errlen);
// The file being written.
const char *tfevents_path(const TfEvents *w);

// Each appends (+=) one Event; NULL w does nothing (logging switched off).
void tfevents_scalar(TfEvents *w, const char *tag, int64_t step, float value);
// An image already encoded as PNG (or any format TensorBoard's browser front end shows).
void tfevents_image(TfEvents *w, const char *tag, int64_t step, const void *png, size_t n, int height, int width,
                    int channels);
// A PNG file's bytes as an image; its size and channels are read from its IHDR chunk. 0, or -1 with
// "<path>: ..." in err when the file cannot be read or is not a PNG (nothing is written then).
int tfevents_image_png_file(TfEvents *w, const char *tag, int64_t step, const char *path, char *err, size_t errlen);
// SessionLog START at step: TensorBoard discards records of steps >= step read before it (resume).
void tfevents_session_start(TfEvents *w, int64_t step);

// Pushes everything added so far to the file (fflush). 0, or -1 with "<path>: cannot write: <reason>"
// (also for a write that failed since the last flush). NULL w: 0.
int tfevents_flush(TfEvents *w, char *err, size_t errlen);
// Flushes and closes (w is freed either way). 0 or -1 as tfevents_flush. NULL w: 0.
int tfevents_close(TfEvents *w, char *err, size_t errlen);
