// A restricted unpickler for PyTorch checkpoints: it builds plain values (containers, scalars,
// strings) and the few objects a tensor state dict is made of, and never calls anything.
//
// Python's pickle format is a small stack machine; a pickle names Python callables ("globals") and
// asks the loader to call them (REDUCE), which is how a pickle runs arbitrary code. This machine knows
// a fixed list of globals (see torch_pickle.c: collections.OrderedDict, torch._utils._rebuild_tensor /
// _rebuild_tensor_v2 / _rebuild_parameter / _rebuild_parameter_with_state, torch._tensor's
// _rebuild_from_type_v2 with the Tensor and Parameter classes, the typed storages torch.<T>Storage and
// torch.cuda.<T>Storage, and the inert numpy scalar / dtype / _codecs.encode constructors that
// Lightning checkpoints contain) and *interprets* a call of one of them itself, checking its arguments;
// any other global is refused with an error naming it ("global os.system is not allowed"), as are the
// opcodes that build arbitrary objects (INST, OBJ, NEWOBJ, NEWOBJ_EX), the extension registry and
// text persistent ids. Binary opcodes of protocols 2 to 5 are understood, which covers what torch
// writes (protocol 2 unless asked otherwise).
//
// Bounds: every length is checked against the bytes left; integers wider than 64 bits are refused;
// the stack, the mark stack and the memo have fixed limits, and a memo index may not run ahead of the
// values made so far (picklers number them in order), so no allocation follows an unchecked number. Values live in an arena freed
// at once with pickle_free.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PICKLE_ERR_LEN 512

// Storage element types (torch.<T>Storage).
typedef enum {
    TORCH_F32, TORCH_F64, TORCH_F16, TORCH_BF16, TORCH_I64, TORCH_I32, TORCH_I16, TORCH_I8, TORCH_U8, TORCH_BOOL,
    TORCH_NDTYPES
} TorchDType;

size_t torch_dtype_size(TorchDType dt);
const char *torch_dtype_name(TorchDType dt);   // "float32", "bfloat16", ...

#define TORCH_MAX_DIMS 8

typedef enum {
    PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_BYTES, PV_TUPLE, PV_LIST, PV_DICT,
    PV_GLOBAL,    // one of the allowed globals (only ever an argument of REDUCE / a persistent id)
    PV_STORAGE,   // a persistent id ('storage', torch.<T>Storage, key, location, numel[, view])
    PV_TENSOR,    // a tensor rebuilt by _rebuild_tensor(_v2) / _rebuild_parameter(...)
    PV_OPAQUE,    // an inert object a state dict does not use (numpy scalar, numpy dtype)
} PvKind;

typedef struct PyVal PyVal;
struct PyVal {
    PvKind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct {          // PV_STR (UTF-8, or a Python 2 str's bytes) and PV_BYTES; NUL-terminated copy
            char *s;
            size_t len;
        } str;
        struct {          // PV_TUPLE, PV_LIST
            PyVal **items;
            size_t n, cap;
        } seq;
        struct {          // PV_DICT: n pairs in insertion order, key kv[2i], value kv[2i + 1]; keys are
            PyVal **kv;   // kept as written (a repeated key is not merged: the reader refuses it later)
            size_t n, cap;
        } dict;
        struct {          // PV_GLOBAL
            int which;            // internal id (torch_pickle.c)
            TorchDType dtype;     // storage types
        } global;
        struct {          // PV_STORAGE
            TorchDType dtype;
            const char *key;      // the storage's key: zip entry data/<key>, or the legacy key
            int64_t numel;        // declared elements of the root storage
            int64_t view_offset;  // legacy storage views: element offset into the root storage (else 0)
            int64_t view_numel;   // and its length (else numel)
        } storage;
        struct {          // PV_TENSOR
            const PyVal *storage; // a PV_STORAGE
            int64_t offset;       // elements into the storage (into the view, for a legacy storage view)
            int ndim;
            int64_t shape[TORCH_MAX_DIMS], stride[TORCH_MAX_DIMS];
        } tensor;
    };
};

typedef struct Pickle Pickle;

// Runs the pickle at data[0, n) up to its STOP opcode. who names it in messages ("FILE: data.pkl").
// On success returns the arena holding every value, with *root the pickle's value and *consumed the
// bytes read (pickles in the legacy format follow each other). On failure returns NULL and err
// holds "<who>: byte N: <what is wrong>", naming a refused global as module.name.
Pickle *pickle_load(const uint8_t *data, size_t n, const char *who, const PyVal **root, size_t *consumed,
                    char err[PICKLE_ERR_LEN]);
void pickle_free(Pickle *p);
