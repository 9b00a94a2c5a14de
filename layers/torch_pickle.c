// The restricted unpickler of torch_pickle.h. Reference for the opcodes: CPython's Lib/pickle.py
// and Lib/pickletools.py; for what torch writes: torch/serialization.py (persistent ids) and
// torch/_utils.py, torch/_tensor.py (the rebuild functions).
#include "layers/torch_pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STACK (1u << 20)     // values on the stack at once
#define MAX_MARKS (1u << 16)     // nested MARKs
#define MAX_MEMO (1u << 24)      // memo entries
#define MAX_GLOBAL_NAME 256      // bytes of a module or attribute name

size_t torch_dtype_size(TorchDType dt) {
    static const size_t sizes[TORCH_NDTYPES] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1};
    return (unsigned)dt < TORCH_NDTYPES ? sizes[dt] : 0;
}

const char *torch_dtype_name(TorchDType dt) {
    static const char *const names[TORCH_NDTYPES] = {"float32", "float64", "float16", "bfloat16", "int64",
                                                     "int32",   "int16",   "int8",    "uint8",    "bool"};
    return (unsigned)dt < TORCH_NDTYPES ? names[dt] : "?";
}

// ---- the allowed globals ------------------------------------------------------------------------
enum {
    G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER, G_REBUILD_PARAMETER_STATE,
    G_REBUILD_FROM_TYPE_V2, G_TENSOR_CLASS, G_PARAMETER_CLASS, G_STORAGE_TYPE, G_CODECS_ENCODE,
    G_NUMPY_SCALAR, G_NUMPY_DTYPE,
};

static const struct {
    const char *module, *name;
    int which;
} allowed_globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT},
    {"torch._utils", "_rebuild_tensor", G_REBUILD_TENSOR},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER},
    {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAMETER_STATE},
    {"torch._tensor", "_rebuild_from_type_v2", G_REBUILD_FROM_TYPE_V2},
    {"torch._tensor", "Tensor", G_TENSOR_CLASS},
    {"torch", "Tensor", G_TENSOR_CLASS},
    {"torch.nn.parameter", "Parameter", G_PARAMETER_CLASS},
    {"_codecs", "encode", G_CODECS_ENCODE},
    {"numpy.core.multiarray", "scalar", G_NUMPY_SCALAR},
    {"numpy._core.multiarray", "scalar", G_NUMPY_SCALAR},
    {"numpy", "dtype", G_NUMPY_DTYPE},
};

static const struct {
    const char *name;
    TorchDType dtype;
} storage_types[] = {
    {"FloatStorage", TORCH_F32}, {"DoubleStorage", TORCH_F64}, {"HalfStorage", TORCH_F16},
    {"BFloat16Storage", TORCH_BF16}, {"LongStorage", TORCH_I64}, {"IntStorage", TORCH_I32},
    {"ShortStorage", TORCH_I16}, {"CharStorage", TORCH_I8}, {"ByteStorage", TORCH_U8}, {"BoolStorage", TORCH_BOOL},
};

// ---- the machine --------------------------------------------------------------------------------
struct Pickle {
    PyVal **values;        // every value made, freed by pickle_free
    size_t nvalues, cap_values;
};

typedef struct {
    const char *who;
    const uint8_t *start, *p, *end;
    size_t op_at;          // offset of the opcode being run, for messages
    Pickle *arena;
    PyVal **stack;
    size_t sp, cap_stack;
    size_t *marks;
    size_t nmarks, cap_marks;
    PyVal **memo;
    size_t nmemo, cap_memo;
    char *err;
} Vm;

static int fail(Vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Vm *vm, const char *fmt, ...) {
    int k = snprintf(vm->err, PICKLE_ERR_LEN, "%s: byte %zu: ", vm->who, vm->op_at);
    if (k < 0 || k >= PICKLE_ERR_LEN) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vm->err + k, PICKLE_ERR_LEN - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

// Grows *arr (element size es, capacity *cap) to hold at least want elements; false when out of memory.
static bool grow(void **arr, size_t *cap, size_t want, size_t es) {
    if (want <= *cap) return true;
    size_t c = *cap ? *cap : 8;
    while (c < want) c *= 2;
    void *n = realloc(*arr, c * es);
    if (!n) return false;
    *arr = n;
    *cap = c;
    return true;
}

static PyVal *new_val(Vm *vm, PvKind kind) {
    Pickle *a = vm->arena;
    if (!grow((void **)&a->values, &a->cap_values, a->nvalues + 1, sizeof(PyVal *))) return NULL;
    PyVal *v = calloc(1, sizeof(PyVal));
    if (!v) return NULL;
    v->kind = kind;
    a->values[a->nvalues++] = v;
    return v;
}

static const char *kind_name(PvKind k) {
    static const char *const names[] = {"None",  "bool", "int",    "float",   "str",    "bytes",  "tuple",
                                        "list",  "dict", "global", "storage", "tensor", "object"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

// Pushes v; a NULL v is the failure of what made it (its message stands, else out of memory).
static int push(Vm *vm, PyVal *v) {
    if (!v) return vm->err[0] ? -1 : fail(vm, "out of memory");
    if (vm->sp >= MAX_STACK) return fail(vm, "more than %u values on the pickle stack", MAX_STACK);
    if (!grow((void **)&vm->stack, &vm->cap_stack, vm->sp + 1, sizeof(PyVal *))) return fail(vm, "out of memory");
    vm->stack[vm->sp++] = v;
    return 0;
}

// The lowest stack index usable by a plain pop: above the innermost mark.
static size_t floor_sp(const Vm *vm) { return vm->nmarks ? vm->marks[vm->nmarks - 1] : 0; }

static PyVal *pop(Vm *vm) {
    if (vm->sp <= floor_sp(vm)) {
        fail(vm, "stack underflow");
        return NULL;
    }
    return vm->stack[--vm->sp];
}

static PyVal *top(Vm *vm) {
    if (vm->sp <= floor_sp(vm)) {
        fail(vm, "stack underflow");
        return NULL;
    }
    return vm->stack[vm->sp - 1];
}

// Pops the innermost mark; *from is where the items above it start.
static int pop_mark(Vm *vm, size_t *from) {
    if (!vm->nmarks) return fail(vm, "no MARK on the stack");
    *from = vm->marks[--vm->nmarks];
    return 0;
}

static bool take(Vm *vm, size_t n, const uint8_t **bytes) {
    if ((size_t)(vm->end - vm->p) < n) return false;
    *bytes = vm->p;
    vm->p += n;
    return true;
}

static uint64_t le_uint(const uint8_t *b, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | b[i];
    return v;
}

static int read_uint(Vm *vm, size_t n, uint64_t *out) {
    const uint8_t *b;
    if (!take(vm, n, &b)) return fail(vm, "truncated: a %zu-byte argument runs past the end", n);
    *out = le_uint(b, n);
    return 0;
}

static PyVal *new_string(Vm *vm, PvKind kind, const uint8_t *s, size_t len) {
    PyVal *v = new_val(vm, kind);
    if (!v) return NULL;
    v->str.s = malloc(len + 1);
    if (!v->str.s) return NULL;
    memcpy(v->str.s, s, len);
    v->str.s[len] = 0;
    v->str.len = len;
    return v;
}

// A string of n bytes (n read from an lbytes-byte length field).
static int op_string(Vm *vm, PvKind kind, size_t lbytes) {
    uint64_t n = 0;
    const uint8_t *s;
    if (read_uint(vm, lbytes, &n)) return -1;
    if (n > (uint64_t)(vm->end - vm->p) || !take(vm, (size_t)n, &s))
        return fail(vm, "truncated: a %llu-byte string runs past the end of the pickle", (unsigned long long)n);
    return push(vm, new_string(vm, kind, s, (size_t)n));
}

// A two's-complement little-endian integer of n bytes (LONG1 / LONG4), at most 64 bits.
static int op_long(Vm *vm, size_t lbytes) {
    uint64_t n = 0;
    const uint8_t *b;
    if (read_uint(vm, lbytes, &n)) return -1;
    if (n > 8) return fail(vm, "integer of %llu bytes is wider than 64 bits", (unsigned long long)n);
    if (!take(vm, (size_t)n, &b)) return fail(vm, "truncated: a %llu-byte integer runs past the end", (unsigned long long)n);
    uint64_t u = le_uint(b, (size_t)n);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~0ull << (8 * n);   // sign-extend
    PyVal *v = new_val(vm, PV_INT);
    if (v) v->i = (int64_t)u;
    return push(vm, v);
}

static int push_int(Vm *vm, int64_t i) {
    PyVal *v = new_val(vm, PV_INT);
    if (v) v->i = i;
    return push(vm, v);
}

static int seq_append(Vm *vm, PyVal *seq, PyVal *item) {
    if (!grow((void **)&seq->seq.items, &seq->seq.cap, seq->seq.n + 1, sizeof(PyVal *))) return fail(vm, "out of memory");
    seq->seq.items[seq->seq.n++] = item;
    return 0;
}

static int dict_set(Vm *vm, PyVal *d, PyVal *k, PyVal *v) {
    if (d->kind != PV_DICT) return fail(vm, "SETITEM(S) on a %s (only dicts)", kind_name(d->kind));
    if (!grow((void **)&d->dict.kv, &d->dict.cap, 2 * d->dict.n + 2, sizeof(PyVal *))) return fail(vm, "out of memory");
    d->dict.kv[2 * d->dict.n] = k;
    d->dict.kv[2 * d->dict.n + 1] = v;
    d->dict.n++;
    return 0;
}

// Tuple or list of the items stack[from, sp) (popped).
static int make_seq(Vm *vm, PvKind kind, size_t from) {
    PyVal *v = new_val(vm, kind);
    if (!v) return fail(vm, "out of memory");
    for (size_t i = from; i < vm->sp; i++)
        if (seq_append(vm, v, vm->stack[i])) return -1;
    vm->sp = from;
    return push(vm, v);
}

static int pop_n_tuple(Vm *vm, size_t n) {
    if (vm->sp < floor_sp(vm) + n) return fail(vm, "stack underflow");
    return make_seq(vm, PV_TUPLE, vm->sp - n);
}

// Key/value pairs stack[from, sp) set into d (popped).
static int set_items(Vm *vm, PyVal *d, size_t from) {
    if ((vm->sp - from) % 2) return fail(vm, "odd number of items for a dict");
    for (size_t i = from; i < vm->sp; i += 2)
        if (dict_set(vm, d, vm->stack[i], vm->stack[i + 1])) return -1;
    vm->sp = from;
    return 0;
}

static int global_value(Vm *vm, const char *module, const char *name) {
    for (size_t i = 0; i < sizeof allowed_globals / sizeof allowed_globals[0]; i++)
        if (!strcmp(module, allowed_globals[i].module) && !strcmp(name, allowed_globals[i].name)) {
            PyVal *v = new_val(vm, PV_GLOBAL);
            if (v) v->global.which = allowed_globals[i].which;
            return push(vm, v);
        }
    if (!strcmp(module, "torch") || !strcmp(module, "torch.cuda"))
        for (size_t i = 0; i < sizeof storage_types / sizeof storage_types[0]; i++)
            if (!strcmp(name, storage_types[i].name)) {
                PyVal *v = new_val(vm, PV_GLOBAL);
                if (v) v->global.which = G_STORAGE_TYPE, v->global.dtype = storage_types[i].dtype;
                return push(vm, v);
            }
    return fail(vm, "global %s.%s is not allowed (a tensor checkpoint needs only collections.OrderedDict, "
                    "torch._utils._rebuild_tensor*, torch._utils._rebuild_parameter*, torch.*Storage; "
                    "nothing is executed)", module, name);
}

// A printable copy of a name read from the pickle (non-printable bytes as '?').
static void printable(char *dst, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    dst[n] = 0;
}

// One '\n'-terminated line (GLOBAL / INST arguments) into dst.
static int read_line(Vm *vm, char dst[MAX_GLOBAL_NAME + 1]) {
    const uint8_t *nl = memchr(vm->p, '\n', (size_t)(vm->end - vm->p));
    if (!nl) return fail(vm, "truncated: a global's name has no end of line");
    size_t n = (size_t)(nl - vm->p);
    if (n > MAX_GLOBAL_NAME) return fail(vm, "a global's name is %zu bytes long (limit %d)", n, MAX_GLOBAL_NAME);
    printable(dst, vm->p, n);
    vm->p = nl + 1;
    return 0;
}

static bool is_str(const PyVal *v) { return v && v->kind == PV_STR; }
static bool is_int(const PyVal *v) { return v && (v->kind == PV_INT || v->kind == PV_BOOL); }
static int64_t int_of(const PyVal *v) { return v->kind == PV_BOOL ? v->b : v->i; }

// BINPERSID: ('storage', torch.<T>Storage, key, location, numel[, view_metadata]) -> PV_STORAGE.
static int op_persid(Vm *vm) {
    PyVal *pid = pop(vm);
    if (!pid) return -1;
    if (pid->kind != PV_TUPLE || pid->seq.n < 5 || pid->seq.n > 6)
        return fail(vm, "persistent id is a %s of %zu items, not ('storage', type, key, location, numel[, view])",
                    kind_name(pid->kind), pid->kind == PV_TUPLE ? pid->seq.n : 0);
    PyVal **it = pid->seq.items;
    if (!is_str(it[0]) || strcmp(it[0]->str.s, "storage"))
        return fail(vm, "persistent id of type %s is not supported (only 'storage')",
                    is_str(it[0]) ? it[0]->str.s : kind_name(it[0]->kind));
    if (it[1]->kind != PV_GLOBAL || it[1]->global.which != G_STORAGE_TYPE)
        return fail(vm, "persistent id: the storage type is a %s, not torch.<T>Storage", kind_name(it[1]->kind));
    if (!is_str(it[2]) || it[2]->str.len == 0 || strlen(it[2]->str.s) != it[2]->str.len)
        return fail(vm, "persistent id: the storage key is not a non-empty string");
    if (!is_str(it[3])) return fail(vm, "persistent id of storage %s: the location is not a string", it[2]->str.s);
    if (!is_int(it[4]) || int_of(it[4]) < 0)
        return fail(vm, "persistent id of storage %s: the size is not a non-negative integer", it[2]->str.s);
    PyVal *v = new_val(vm, PV_STORAGE);
    if (!v) return fail(vm, "out of memory");
    v->storage.dtype = it[1]->global.dtype;
    v->storage.key = it[2]->str.s;
    v->storage.numel = int_of(it[4]);
    v->storage.view_offset = 0;
    v->storage.view_numel = v->storage.numel;
    if (pid->seq.n == 6 && it[5]->kind != PV_NONE) {   // legacy storage view: (view_key, offset, size)
        const PyVal *view = it[5];
        if (view->kind != PV_TUPLE || view->seq.n != 3 || !is_int(view->seq.items[1]) || !is_int(view->seq.items[2]))
            return fail(vm, "persistent id of storage %s: view metadata is not (key, offset, size)", v->storage.key);
        int64_t off = int_of(view->seq.items[1]), n = int_of(view->seq.items[2]);
        if (off < 0 || n < 0 || off > v->storage.numel || n > v->storage.numel - off)
            return fail(vm, "storage %s: view [%lld, +%lld) lies outside its %lld elements", v->storage.key,
                        (long long)off, (long long)n, (long long)v->storage.numel);
        v->storage.view_offset = off;
        v->storage.view_numel = n;
    }
    return push(vm, v);
}

// A tuple of at most TORCH_MAX_DIMS non-negative integers (a tensor's size or stride).
static int int_tuple(Vm *vm, const PyVal *t, const char *what, int64_t *out, int *n) {
    if (!t || (t->kind != PV_TUPLE && t->kind != PV_LIST)) return fail(vm, "tensor %s is not a tuple", what);
    if (t->seq.n > TORCH_MAX_DIMS) return fail(vm, "tensor has %zu dims (at most %d)", t->seq.n, TORCH_MAX_DIMS);
    for (size_t i = 0; i < t->seq.n; i++) {
        if (!is_int(t->seq.items[i]) || int_of(t->seq.items[i]) < 0)
            return fail(vm, "tensor %s entry %zu is not a non-negative integer", what, i);
        out[i] = int_of(t->seq.items[i]);
    }
    *n = (int)t->seq.n;
    return 0;
}

// _rebuild_tensor(storage, offset, size, stride) and _rebuild_tensor_v2(..., requires_grad,
// backward_hooks[, metadata]): the tensor's place in its storage. Hooks must be an empty dict (any
// hook would be a function, refused as a global before this point).
static PyVal *rebuild_tensor(Vm *vm, const PyVal *args, bool v2) {
    size_t n = args->seq.n;
    if (v2 ? (n < 6 || n > 7) : n != 4) {
        fail(vm, "_rebuild_tensor%s takes %s arguments, got %zu", v2 ? "_v2" : "", v2 ? "6 or 7" : "4", n);
        return NULL;
    }
    PyVal **a = args->seq.items;
    if (a[0]->kind != PV_STORAGE) {
        fail(vm, "_rebuild_tensor: the storage argument is a %s", kind_name(a[0]->kind));
        return NULL;
    }
    if (!is_int(a[1]) || int_of(a[1]) < 0) {
        fail(vm, "_rebuild_tensor: the storage offset is not a non-negative integer");
        return NULL;
    }
    if (v2 && a[5]->kind != PV_DICT && a[5]->kind != PV_NONE) {
        fail(vm, "_rebuild_tensor_v2: backward hooks are a %s", kind_name(a[5]->kind));
        return NULL;
    }
    if (v2 && a[5]->kind == PV_DICT && a[5]->dict.n) {
        fail(vm, "_rebuild_tensor_v2: the tensor has %zu backward hooks (not loadable without running code)",
             a[5]->dict.n);
        return NULL;
    }
    PyVal *t = new_val(vm, PV_TENSOR);
    if (!t) {
        fail(vm, "out of memory");
        return NULL;
    }
    int ns, nt;
    if (int_tuple(vm, a[2], "size", t->tensor.shape, &ns) || int_tuple(vm, a[3], "stride", t->tensor.stride, &nt))
        return NULL;
    if (ns != nt) {
        fail(vm, "tensor size has %d dims, stride %d", ns, nt);
        return NULL;
    }
    t->tensor.ndim = ns;
    t->tensor.storage = a[0];
    t->tensor.offset = int_of(a[1]);
    return t;
}

static bool is_global(const PyVal *v, int which) { return v && v->kind == PV_GLOBAL && v->global.which == which; }

// func(*args) for an allowed global func, interpreted here (nothing is called). NULL on failure.
static PyVal *call_global(Vm *vm, const PyVal *func, const PyVal *args) {
    if (args->kind != PV_TUPLE) {
        fail(vm, "REDUCE arguments are a %s, not a tuple", kind_name(args->kind));
        return NULL;
    }
    size_t n = args->seq.n;
    PyVal **a = args->seq.items;
    switch (func->global.which) {
    case G_ORDERED_DICT: {   // OrderedDict() or OrderedDict([[k, v], ...]) (Python 2's __reduce__)
        PyVal *d = new_val(vm, PV_DICT);
        if (!d) return fail(vm, "out of memory"), NULL;
        if (n == 0) return d;
        if (n != 1 || (a[0]->kind != PV_LIST && a[0]->kind != PV_TUPLE)) {
            fail(vm, "OrderedDict takes no argument or a list of pairs");
            return NULL;
        }
        for (size_t i = 0; i < a[0]->seq.n; i++) {
            const PyVal *pair = a[0]->seq.items[i];
            if ((pair->kind != PV_LIST && pair->kind != PV_TUPLE) || pair->seq.n != 2) {
                fail(vm, "OrderedDict item %zu is not a (key, value) pair", i);
                return NULL;
            }
            if (dict_set(vm, d, pair->seq.items[0], pair->seq.items[1])) return NULL;
        }
        return d;
    }
    case G_REBUILD_TENSOR:
    case G_REBUILD_TENSOR_V2:
        return rebuild_tensor(vm, args, func->global.which == G_REBUILD_TENSOR_V2);
    case G_REBUILD_PARAMETER:   // (data, requires_grad, backward_hooks[, state]): the tensor itself
    case G_REBUILD_PARAMETER_STATE: {
        size_t want = func->global.which == G_REBUILD_PARAMETER ? 3 : 4;
        if (n != want || a[0]->kind != PV_TENSOR) {
            fail(vm, "_rebuild_parameter%s takes a tensor and %zu more arguments",
                 want == 4 ? "_with_state" : "", want - 1);
            return NULL;
        }
        return a[0];
    }
    case G_REBUILD_FROM_TYPE_V2: {   // (func, new_type, args, state): func(*args) as a plain tensor
        if (n != 4 || a[0]->kind != PV_GLOBAL || a[2]->kind != PV_TUPLE ||
            !(is_global(a[1], G_TENSOR_CLASS) || is_global(a[1], G_PARAMETER_CLASS))) {
            fail(vm, "_rebuild_from_type_v2 takes (rebuild function, torch.Tensor or Parameter, args, state)");
            return NULL;
        }
        int w = a[0]->global.which;
        if (w != G_REBUILD_TENSOR && w != G_REBUILD_TENSOR_V2 && w != G_REBUILD_PARAMETER &&
            w != G_REBUILD_PARAMETER_STATE) {
            fail(vm, "_rebuild_from_type_v2: the rebuild function is not a tensor rebuild function");
            return NULL;
        }
        return call_global(vm, a[0], a[2]);
    }
    case G_CODECS_ENCODE: {   // _codecs.encode(str, 'latin1'): how protocol 2 stores bytes (numpy scalars)
        if (n != 2 || !is_str(a[0]) || !is_str(a[1]) || (strcmp(a[1]->str.s, "latin1") && strcmp(a[1]->str.s, "latin-1"))) {
            fail(vm, "_codecs.encode takes (str, 'latin1')");
            return NULL;
        }
        // UTF-8 code points below 256 -> one byte each.
        const uint8_t *s = (const uint8_t *)a[0]->str.s;
        size_t len = a[0]->str.len, k = 0;
        uint8_t *buf = malloc(len + 1);
        if (!buf) return fail(vm, "out of memory"), NULL;
        for (size_t i = 0; i < len; k++) {
            if (s[i] < 0x80) buf[k] = s[i++];
            else if ((s[i] & 0xfe) == 0xc2 && i + 1 < len && (s[i + 1] & 0xc0) == 0x80)
                buf[k] = (uint8_t)(((s[i] & 0x03) << 6) | (s[i + 1] & 0x3f)), i += 2;
            else {
                free(buf);
                fail(vm, "_codecs.encode: a character outside latin1");
                return NULL;
            }
        }
        PyVal *v = new_string(vm, PV_BYTES, buf, k);
        free(buf);
        if (!v) fail(vm, "out of memory");
        return v;
    }
    case G_NUMPY_SCALAR:
    case G_NUMPY_DTYPE: {
        PyVal *v = new_val(vm, PV_OPAQUE);
        if (!v) fail(vm, "out of memory");
        return v;
    }
    default:
        fail(vm, "REDUCE calls a class or storage type (not callable in a checkpoint)");
        return NULL;
    }
}

static int op_reduce(Vm *vm) {
    PyVal *args = pop(vm), *func = args ? pop(vm) : NULL;
    if (!func) return -1;
    if (func->kind != PV_GLOBAL) return fail(vm, "REDUCE calls a %s (only allowed globals are callable)", kind_name(func->kind));
    return push(vm, call_global(vm, func, args)) ? -1 : 0;
}

// BUILD(obj, state): attributes of an OrderedDict (a state dict's _metadata) or of an inert numpy
// object are dropped; nothing else takes state.
static int op_build(Vm *vm) {
    PyVal *state = pop(vm), *obj = state ? top(vm) : NULL;
    if (!obj) return -1;
    if (obj->kind == PV_DICT || obj->kind == PV_OPAQUE) return 0;
    return fail(vm, "BUILD on a %s is not allowed", kind_name(obj->kind));
}

// Picklers number memo entries in order (Python 3 from 0, Python 2 from 1); an index may not run ahead
// of the values made so far, so the memo never grows past the pickle's own size.
static int memo_put(Vm *vm, uint64_t idx) {
    PyVal *v = top(vm);
    if (!v) return -1;
    if (idx > vm->arena->nvalues + 1)
        return fail(vm, "memo index %llu runs ahead of the %zu values made so far", (unsigned long long)idx,
                    vm->arena->nvalues);
    if (idx >= MAX_MEMO) return fail(vm, "memo index %llu (limit %u)", (unsigned long long)idx, MAX_MEMO);
    if (idx >= vm->nmemo) {
        if (!grow((void **)&vm->memo, &vm->cap_memo, idx + 1, sizeof(PyVal *))) return fail(vm, "out of memory");
        memset(vm->memo + vm->nmemo, 0, sizeof(PyVal *) * (idx + 1 - vm->nmemo));
        vm->nmemo = idx + 1;
    }
    vm->memo[idx] = v;
    return 0;
}

static int memo_get(Vm *vm, uint64_t idx) {
    if (idx >= vm->nmemo || !vm->memo[idx]) return fail(vm, "memo index %llu was never stored", (unsigned long long)idx);
    return push(vm, vm->memo[idx]);
}

static const char *opcode_name(uint8_t op) {
    switch (op) {
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";
    case 0x82: case 0x83: case 0x84: return "EXT";
    case 'P': return "PERSID";
    case 'I': return "INT";
    case 'L': return "LONG";
    case 'F': return "FLOAT";
    case 'S': return "STRING";
    case 'V': return "UNICODE";
    case 'g': return "GET";
    case 'p': return "PUT";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

// One opcode. Returns 1 at STOP, 0 to go on, -1 on error.
static int step(Vm *vm) {
    vm->op_at = (size_t)(vm->p - vm->start);
    if (vm->p >= vm->end) return fail(vm, "truncated: the pickle ends without STOP");
    uint8_t op = *vm->p++;
    uint64_t u = 0;
    const uint8_t *b;
    size_t from = 0;
    PyVal *v, *w;
    switch (op) {
    case 0x80:   // PROTO
        if (read_uint(vm, 1, &u)) return -1;
        if (u < 2 || u > 5) return fail(vm, "pickle protocol %llu (this reader knows 2 to 5)", (unsigned long long)u);
        return 0;
    case 0x95:   // FRAME: a length hint; the frame must lie inside the data
        if (read_uint(vm, 8, &u)) return -1;
        if (u > (uint64_t)(vm->end - vm->p)) return fail(vm, "truncated: a %llu-byte frame runs past the end", (unsigned long long)u);
        return 0;
    case '.':    // STOP
        return 1;
    case '(':    // MARK
        if (vm->nmarks >= MAX_MARKS) return fail(vm, "more than %u nested MARKs", MAX_MARKS);
        if (!grow((void **)&vm->marks, &vm->cap_marks, vm->nmarks + 1, sizeof(size_t))) return fail(vm, "out of memory");
        vm->marks[vm->nmarks++] = vm->sp;
        return 0;
    case '0':    // POP (a mark when nothing lies above it)
        if (vm->sp > floor_sp(vm)) {
            vm->sp--;
            return 0;
        }
        return pop_mark(vm, &from);
    case '1':    // POP_MARK
        if (pop_mark(vm, &from)) return -1;
        vm->sp = from;
        return 0;
    case '2':    // DUP
        return (v = top(vm)) ? push(vm, v) : -1;
    case 'N': return push(vm, new_val(vm, PV_NONE));
    case 0x88:   // NEWTRUE
    case 0x89:   // NEWFALSE
        if ((v = new_val(vm, PV_BOOL))) v->b = op == 0x88;
        return push(vm, v);
    case 'J':    // BININT
        if (read_uint(vm, 4, &u)) return -1;
        return push_int(vm, (int32_t)(uint32_t)u);
    case 'K':    // BININT1
        if (read_uint(vm, 1, &u)) return -1;
        return push_int(vm, (int64_t)u);
    case 'M':    // BININT2
        if (read_uint(vm, 2, &u)) return -1;
        return push_int(vm, (int64_t)u);
    case 0x8a: return op_long(vm, 1);   // LONG1
    case 0x8b: return op_long(vm, 4);   // LONG4
    case 'G':    // BINFLOAT: big-endian double
        if (!take(vm, 8, &b)) return fail(vm, "truncated: BINFLOAT");
        u = 0;
        for (int i = 0; i < 8; i++) u = (u << 8) | b[i];
        if ((v = new_val(vm, PV_FLOAT))) memcpy(&v->f, &u, 8);
        return push(vm, v);
    case 'X': return op_string(vm, PV_STR, 4);     // BINUNICODE
    case 0x8c: return op_string(vm, PV_STR, 1);    // SHORT_BINUNICODE
    case 0x8d: return op_string(vm, PV_STR, 8);    // BINUNICODE8
    case 'T': return op_string(vm, PV_STR, 4);     // BINSTRING (Python 2 str)
    case 'U': return op_string(vm, PV_STR, 1);     // SHORT_BINSTRING
    case 'B': return op_string(vm, PV_BYTES, 4);   // BINBYTES
    case 'C': return op_string(vm, PV_BYTES, 1);   // SHORT_BINBYTES
    case 0x8e: return op_string(vm, PV_BYTES, 8);  // BINBYTES8
    case ')': return push(vm, new_val(vm, PV_TUPLE));   // EMPTY_TUPLE
    case 't':    // TUPLE
        return pop_mark(vm, &from) ? -1 : make_seq(vm, PV_TUPLE, from);
    case 0x85: return pop_n_tuple(vm, 1);
    case 0x86: return pop_n_tuple(vm, 2);
    case 0x87: return pop_n_tuple(vm, 3);
    case ']': return push(vm, new_val(vm, PV_LIST));   // EMPTY_LIST
    case 'l':    // LIST
        return pop_mark(vm, &from) ? -1 : make_seq(vm, PV_LIST, from);
    case 'a':    // APPEND
        if (!(w = pop(vm)) || !(v = top(vm))) return -1;
        if (v->kind != PV_LIST) return fail(vm, "APPEND to a %s (only lists)", kind_name(v->kind));
        return seq_append(vm, v, w);
    case 'e':    // APPENDS
        if (pop_mark(vm, &from)) return -1;
        if (from <= floor_sp(vm) || (v = vm->stack[from - 1])->kind != PV_LIST)
            return fail(vm, "APPENDS without a list below the mark");
        for (size_t i = from; i < vm->sp; i++)
            if (seq_append(vm, v, vm->stack[i])) return -1;
        vm->sp = from;
        return 0;
    case '}': return push(vm, new_val(vm, PV_DICT));   // EMPTY_DICT
    case 'd':    // DICT
        if (pop_mark(vm, &from)) return -1;
        if (!(v = new_val(vm, PV_DICT))) return fail(vm, "out of memory");
        if (set_items(vm, v, from)) return -1;
        return push(vm, v);
    case 's':    // SETITEM
        if (vm->sp < floor_sp(vm) + 3) return fail(vm, "stack underflow");
        vm->sp -= 2;
        return dict_set(vm, vm->stack[vm->sp - 1], vm->stack[vm->sp], vm->stack[vm->sp + 1]);
    case 'u':    // SETITEMS
        if (pop_mark(vm, &from)) return -1;
        if (from <= floor_sp(vm)) return fail(vm, "SETITEMS without a dict below the mark");
        return set_items(vm, vm->stack[from - 1], from);
    case 'c': {  // GLOBAL module\nname\n
        char module[MAX_GLOBAL_NAME + 1], name[MAX_GLOBAL_NAME + 1];
        if (read_line(vm, module) || read_line(vm, name)) return -1;
        return global_value(vm, module, name);
    }
    case 0x93: { // STACK_GLOBAL
        PyVal *name = pop(vm), *module = name ? pop(vm) : NULL;
        if (!module) return -1;
        if (!is_str(module) || !is_str(name)) return fail(vm, "STACK_GLOBAL needs two strings");
        char m[MAX_GLOBAL_NAME + 1], n[MAX_GLOBAL_NAME + 1];
        if (module->str.len > MAX_GLOBAL_NAME || name->str.len > MAX_GLOBAL_NAME)
            return fail(vm, "a global's name is longer than %d bytes", MAX_GLOBAL_NAME);
        printable(m, (const uint8_t *)module->str.s, module->str.len);
        printable(n, (const uint8_t *)name->str.s, name->str.len);
        return global_value(vm, m, n);
    }
    case 'i': {  // INST module\nname\n: builds an instance of any class
        char module[MAX_GLOBAL_NAME + 1], name[MAX_GLOBAL_NAME + 1];
        if (read_line(vm, module) || read_line(vm, name)) return -1;
        return fail(vm, "opcode INST (instance of global %s.%s) is not allowed: it would run code", module, name);
    }
    case 'R': return op_reduce(vm);
    case 'b': return op_build(vm);
    case 'Q': return op_persid(vm);   // BINPERSID
    case 'h':    // BINGET
        return read_uint(vm, 1, &u) ? -1 : memo_get(vm, u);
    case 'j':    // LONG_BINGET
        return read_uint(vm, 4, &u) ? -1 : memo_get(vm, u);
    case 'q':    // BINPUT
        return read_uint(vm, 1, &u) ? -1 : memo_put(vm, u);
    case 'r':    // LONG_BINPUT
        return read_uint(vm, 4, &u) ? -1 : memo_put(vm, u);
    case 0x94:   // MEMOIZE
        return memo_put(vm, vm->nmemo);
    default: {
        const char *name = opcode_name(op);
        if (name) return fail(vm, "opcode %s (0x%02x) is not allowed in a tensor checkpoint", name, op);
        return fail(vm, "unknown opcode 0x%02x (not a pickle, or corrupt)", op);
    }
    }
}

Pickle *pickle_load(const uint8_t *data, size_t n, const char *who, const PyVal **root, size_t *consumed,
                    char err[PICKLE_ERR_LEN]) {
    Vm vm = {.who = who, .start = data, .p = data, .end = data + n, .err = err};
    err[0] = 0;
    vm.arena = calloc(1, sizeof(Pickle));
    if (!vm.arena) {
        snprintf(err, PICKLE_ERR_LEN, "%s: out of memory", who);
        return NULL;
    }
    int rc;
    while ((rc = step(&vm)) == 0) {}
    if (rc == 1) {
        if (vm.nmarks) rc = fail(&vm, "STOP with %zu MARKs open", vm.nmarks);
        else if (vm.sp != 1) rc = fail(&vm, "STOP with %zu values on the stack (want 1)", vm.sp);
    }
    if (rc == 1) {
        *root = vm.stack[0];
        *consumed = (size_t)(vm.p - data);
    } else {
        pickle_free(vm.arena);
        vm.arena = NULL;
    }
    free(vm.stack);
    free(vm.marks);
    free(vm.memo);
    return vm.arena;
}

void pickle_free(Pickle *p) {
    if (!p) return;
    for (size_t i = 0; i < p->nvalues; i++) {
        PyVal *v = p->values[i];
        if (v->kind == PV_STR || v->kind == PV_BYTES) free(v->str.s);
        else if (v->kind == PV_TUPLE || v->kind == PV_LIST) free(v->seq.items);
        else if (v->kind == PV_DICT) free(v->dict.kv);
        free(v);
    }
    free(p->values);
    free(p);
}
