// Named-parameter registry: an insertion-ordered array plus an open-addressing hash index.
#include "autograd/params.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

struct ParamStore {
    Tensor **items;
    int n, cap;
    int *index;      // hash slots -> item position, -1 empty
    int index_cap;   // power of two, > 2 * n
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void rebuild_index(ParamStore *ps, int cap) {
    free(ps->index);
    ps->index_cap = cap;
    ps->index = dod_malloc(sizeof(int) * cap, "parameter index");
    for (int i = 0; i < cap; i++) ps->index[i] = -1;
    for (int i = 0; i < ps->n; i++) {
        uint64_t h = hash_str(ps->items[i]->name) & (cap - 1);
        while (ps->index[h] >= 0) h = (h + 1) & (cap - 1);
        ps->index[h] = i;
    }
}

ParamStore *params_new(void) {
    ParamStore *ps = dod_calloc(sizeof *ps, "parameter store");
    rebuild_index(ps, 64);
    return ps;
}

void params_free(ParamStore *ps) {
    if (!ps) return;
    for (int i = 0; i < ps->n; i++) tensor_free(ps->items[i]);
    free(ps->items);
    free(ps->index);
    free(ps);
}

Tensor *params_get(ParamStore *ps, const char *name) {
    uint64_t h = hash_str(name) & (ps->index_cap - 1);
    while (ps->index[h] >= 0) {
        Tensor *t = ps->items[ps->index[h]];
        if (!strcmp(t->name, name)) return t;
        h = (h + 1) & (ps->index_cap - 1);
    }
    return NULL;
}

Tensor *params_add(ParamStore *ps, const char *name, Tensor *t) {
    DOD_CHECK(t->persistent, "params_add", "tensor %s must be persistent", name);
    DOD_CHECK(params_get(ps, name) == NULL, "params_add", "duplicate parameter name %s", name);
    if (!t->name || strcmp(t->name, name)) {
        free((char *)t->name);
        t->name = strdup(name);
    }
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 256;
        ps->items = realloc(ps->items, sizeof(Tensor *) * ps->cap);
        DOD_CHECK(ps->items != NULL, "params_add", "out of memory for %d parameters", ps->cap);
    }
    ps->items[ps->n++] = t;
    if (2 * ps->n >= ps->index_cap) {
        rebuild_index(ps, ps->index_cap * 2);
    } else {
        uint64_t h = hash_str(name) & (ps->index_cap - 1);
        while (ps->index[h] >= 0) h = (h + 1) & (ps->index_cap - 1);
        ps->index[h] = ps->n - 1;
    }
    return t;
}

Tensor *params_require(ParamStore *ps, const char *name, const char *who) {
    Tensor *t = params_get(ps, name);
    if (!t) dod_fatal(who, "missing tensor %s", name);
    return t;
}

int params_count(const ParamStore *ps) { return ps->n; }

Tensor *params_at(const ParamStore *ps, int i) {
    DOD_CHECK(i >= 0 && i < ps->n, "params_at", "index %d out of range (%d parameters)", i, ps->n);
    return ps->items[i];
}

int params_set_trainable(ParamStore *ps, const char *pattern, bool on) {
    int hits = 0;
    for (int i = 0; i < ps->n; i++)
        if (fnmatch(pattern, ps->items[i]->name, 0) == 0) {
            ps->items[i]->requires_grad = on;
            hits++;
        }
    return hits;
}

int params_trainable(const ParamStore *ps, Tensor **out, int cap) {
    int k = 0;
    for (int i = 0; i < ps->n; i++)
        if (ps->items[i]->requires_grad) {
            if (k < cap) out[k] = ps->items[i];
            k++;
        }
    return k;
}

int64_t params_numel(const ParamStore *ps, bool trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < ps->n; i++)
        if (!trainable_only || ps->items[i]->requires_grad) n += ps->items[i]->numel;
    return n;
}

void params_zero_grad(ParamStore *ps) {
    for (int i = 0; i < ps->n; i++) tensor_zero_grad(ps->items[i]);
}

void params_to_device(ParamStore *ps, Device device) {
    for (int i = 0; i < params_count(ps); i++) tensor_move_to(params_at(ps, i), device);
}
