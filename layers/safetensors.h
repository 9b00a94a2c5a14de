// safetensors files: a validating, mmap-backed reader and an atomic writer.
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes
// of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the data section; offsets are relative to its start.
//
// The reader maps the file read-only and checks everything before handing out a byte: the header
// length lies inside the file, the header is a JSON object, every entry has a supported dtype
// (F32, F16, BF16, I64), a shape of non-negative integers, offsets inside the data section with
// end - begin == numel * dtype size, and no two tensors overlap. Errors are returned (status + a
// message naming the file, the tensor and what is wrong), never fatal, so callers and tests decide.
//
// tensor_file_open opens either a safetensors file or a PyTorch checkpoint (layers/torch_ckpt.h),
// told apart by the first bytes, and presents both through this handle: model loading takes either.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "autograd/tensor.h"

#define ST_ERR_LEN 512

typedef enum {
    ST_OK = 0,
    ST_ERR_IO,          // cannot open / stat / map / write the file
    ST_ERR_TRUNCATED,   // file shorter than its 8-byte length prefix or than the header it announces
    ST_ERR_HEADER,      // header is not a JSON object, or an entry is malformed
    ST_ERR_DTYPE,       // dtype not one of F32/F16/BF16/I64 (or not convertible to the requested one)
    ST_ERR_SHAPE,       // shape not an array of non-negative integers, or too many dims
    ST_ERR_OFFSETS,     // data_offsets malformed, begin > end, or past the end of the data section
    ST_ERR_SIZE,        // end - begin != numel * dtype size
    ST_ERR_OVERLAP,     // two tensors share bytes
    ST_ERR_DUPLICATE,   // a tensor name appears twice
    ST_ERR_NOT_FOUND,   // no tensor of that name
    ST_ERR_TORCH,       // a PyTorch checkpoint that cannot be read safely (refused global, corrupt, truncated)
    ST_ERR_NONFINITE,   // a float tensor holds NaN or an infinity (as stored, or once converted to the dtype asked for)
} StStatus;

typedef struct {
    char *name;
    DType dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;   // byte range within the data section (validated); PyTorch checkpoints: the
                           // tensor's place in a notional back-to-back layout (end - begin is its size)
} StEntry;

typedef struct SafeTensors SafeTensors;

// Opens and validates path. On success *out is the open file; on failure *out is NULL, err holds
// "<path>: <what is wrong>" and the status says which check failed.
StStatus safetensors_open(const char *path, SafeTensors **out, char err[ST_ERR_LEN]);
// Opens path as a PyTorch checkpoint when its first bytes say so (a zip archive, or the legacy magic
// number), else as safetensors. A checkpoint's tensors are listed under their key paths
// (torch_ckpt.h); those stored as float64 are presented as F32 and the integer and bool ones as I64
// (converted when read), so safetensors_tensor hands out heap copies, never views. The status is
// ST_ERR_TORCH for any checkpoint problem (the message says which).
StStatus tensor_file_open(const char *path, SafeTensors **out, char err[ST_ERR_LEN]);
// The dtype as stored in the file, in safetensors spelling ("F32", ..., or for a checkpoint also
// "F64", "I32", "I16", "I8", "U8", "BOOL").
const char *tensor_file_stored_dtype(const SafeTensors *st, const StEntry *e);
// Unmaps the file. Tensors wrapping its bytes (safetensors_tensor zero-copy views) die with it.
void safetensors_close(SafeTensors *st);

const char *safetensors_path(const SafeTensors *st);
int safetensors_count(const SafeTensors *st);
const StEntry *safetensors_entry(const SafeTensors *st, int i);      // file order (by begin offset)
const StEntry *safetensors_find(const SafeTensors *st, const char *name);   // NULL if absent
// Raw bytes of an entry inside the mapping (read-only); NULL for a PyTorch checkpoint's entry.
const void *safetensors_bytes(const SafeTensors *st, const StEntry *e);
// Drops the mapping's pages lying wholly inside e's bytes (madvise DONTNEED), so a tensor that was
// converted into a heap copy stops costing resident memory twice. Reading e again still works (the
// pages come back from the file).
void safetensors_drop_pages(const SafeTensors *st, const StEntry *e);
// Value of a "__metadata__" key, or NULL.
const char *safetensors_metadata(const SafeTensors *st, const char *key);

// A persistent tensor named `name` (NULL: the entry's name) with e's shape, as dtype `want`:
//  - want == e->dtype and the bytes are aligned for it: a zero-copy view of the mapped bytes
//    (owns_data false, read-only memory: writing to it faults; see sd_tensor_make_owned);
//  - otherwise a converted heap copy (F32/F16/BF16 among themselves; I64 only to I64).
// Returns ST_ERR_DTYPE (message names the tensor and file) when the conversion is impossible, and
// ST_ERR_NONFINITE (naming file, tensor, value and element; no tensor) when a value is NaN or
// infinite: every weight, checkpoint, prompt embedding and LPIPS / CLIP file is read through here.
StStatus safetensors_tensor(const SafeTensors *st, const StEntry *e, DType want, const char *name,
                            Tensor **out, char err[ST_ERR_LEN]);

// Every tensor of path as an owned, writable persistent tensor of dtype `want` (heap copies, names as
// in the file, file order) in a new ParamStore (=). NULL with the reader's message in err on failure.
struct ParamStore;
struct ParamStore *safetensors_load_store(const char *path, DType want, char err[ST_ERR_LEN]);

typedef struct {
    const char *key, *value;
} StMetadata;

// Writes tensors (host memory, named by t->name, any of the four dtypes) and optional string
// metadata to path, atomically: "<path>.tmp.<pid>" is written, fsynced and renamed into place.
// Layout matches the reference implementation: header padded with spaces to a multiple of 8 bytes,
// tensors stored back to back in the given order. Python's safetensors reads the result.
StStatus safetensors_save(const char *path, Tensor *const *tensors, int n, const StMetadata *meta, int nmeta,
                          char err[ST_ERR_LEN]);

// Parse "F32"/"F16"/"BF16"/"I64"; returns -1 for anything else.
int safetensors_parse_dtype(const char *s);
const char *safetensors_dtype_str(DType dt);
