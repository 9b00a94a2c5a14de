// PyTorch checkpoints (torch.save files: .pt, .pth, .pkl, .ckpt, .bin) read without Python and
// without running code.
//
// Two formats, told apart by their first bytes:
//  - zip (torch >= 1.6): a zip archive <prefix>/data.pkl (the pickle) + <prefix>/data/<key> (one raw
//    little-endian storage per key) + <prefix>/version (+ byteorder in torch >= 2.1). Read with
//    libzip (stored or deflated entries, zip64); without libzip in the build such files are refused.
//  - legacy (torch < 1.6, or _use_new_zipfile_serialization=False): five pickles back to back, the
//    magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, a sys-info dict, the object,
//    the list of storage keys; then each storage as an 8-byte little-endian element count and its bytes,
//    in the order of that list.
// The object is run through the restricted unpickler of torch_pickle.h (only the globals a state
// dict needs; anything else is refused naming the global). Every tensor found is listed under its
// key path: dict keys (and list/tuple indices) from the root down, joined with '/'
// ("state_dict_unet/conv_in.weight"); a file holding a single tensor lists it as "tensor"; the
// tensors of a root dict's "state_dict" entry (Lightning checkpoints: {"state_dict": {...},
// "epoch": ...}) are listed without the "state_dict/" prefix. Non-tensor values (ints, strings,
// a state dict's _metadata) are skipped. A name listed twice is an error.
//
// Checked before anything is returned: every storage a tensor names exists, has the declared size
// in the file (zip entry size / legacy count == numel x element size, inside the file) and one
// element type; every tensor's shape and strides fit its storage (offset + sum((size - 1) x stride)
// < storage elements, no overflow; a view repeating elements through zero strides holds at most 64x
// its storage's elements). Reading a tensor gathers its elements in row-major order, so views
// with offsets, shared storages and non-contiguous strides (a transpose) all come out contiguous.
// Errors name the file and what is wrong, and never exit.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layers/torch_pickle.h"

#define TORCH_ERR_LEN 512

typedef struct {
    char *name;                  // key path
    TorchDType dtype;
    int ndim;
    int64_t shape[TORCH_MAX_DIMS], stride[TORCH_MAX_DIMS];   // elements
    int64_t numel;
    int64_t storage_offset;      // elements from the start of the storage's data
    int storage;                 // index into the checkpoint's storages
} TorchTensor;

typedef struct TorchCkpt TorchCkpt;

// True when the first n bytes of a file start a PyTorch checkpoint of either format (a zip local
// header, or the legacy magic-number pickle). 32 bytes are enough.
bool torch_ckpt_sniff(const uint8_t *head, size_t n);
// Opens and validates path (mapped read-only). Returns 0, or -1 with err "<path>: <what is wrong>".
int torch_ckpt_open(const char *path, TorchCkpt **out, char err[TORCH_ERR_LEN]);
// The same over caller memory (kept until torch_ckpt_close); name stands for the file in messages.
int torch_ckpt_open_memory(const char *name, const uint8_t *data, size_t size, TorchCkpt **out,
                           char err[TORCH_ERR_LEN]);
void torch_ckpt_close(TorchCkpt *ck);

const char *torch_ckpt_path(const TorchCkpt *ck);
const char *torch_ckpt_format(const TorchCkpt *ck);    // "zip" or "legacy"
int torch_ckpt_count(const TorchCkpt *ck);
const TorchTensor *torch_ckpt_tensor(const TorchCkpt *ck, int i);      // the pickle's order
const TorchTensor *torch_ckpt_find(const TorchCkpt *ck, const char *name);   // NULL if absent

// t's elements in row-major order, in t's own dtype, written (=) to dst (numel x element size bytes).
// Returns 0, or -1 with err naming the file and tensor (a zip entry failing its CRC, for instance).
int torch_ckpt_read(TorchCkpt *ck, const TorchTensor *t, void *dst, char err[TORCH_ERR_LEN]);
