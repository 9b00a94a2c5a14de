// Fuzz target: safetensors files (the validating mmap reader, conversion of every tensor to f32 and
// bf16, metadata, and the whole-file store loader).
#include "autograd/params.h"
#include "layers/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[256], err[ST_ERR_LEN];
    fuzz_scratch(path, sizeof path, "st.safetensors");
    if (fuzz_write_file(path, data, size)) return 0;
    SafeTensors *st = NULL;
    if (safetensors_open(path, &st, err) == ST_OK) {
        for (int i = 0; i < safetensors_count(st); i++) {
            const StEntry *e = safetensors_entry(st, i);
            if (safetensors_find(st, e->name) == NULL) abort();
            DType want[2] = {DT_F32, DT_BF16};
            for (int k = 0; k < 2; k++) {
                Tensor *t = NULL;
                if (safetensors_tensor(st, e, want[k], NULL, &t, err) == ST_OK) tensor_free(t);
            }
        }
        safetensors_metadata(st, "format");
        safetensors_close(st);
        ParamStore *ps = safetensors_load_store(path, DT_F32, err);
        if (ps) params_free(ps);
    }
    unlink(path);
    return 0;
}

int fuzz_write_seeds(const char *dir) {
    int64_t s1[2] = {2, 3}, s2[1] = {4};
    Tensor *a = tensor_new_persistent("a.weight", 2, s1, DT_F32), *b = tensor_new_persistent("b", 1, s2, DT_BF16);
    Tensor *c = tensor_new_persistent("c.half", 1, s2, DT_F16), *d = tensor_new_persistent("d.index", 1, s2, DT_I64);
    for (int i = 0; i < 6; i++) ((float *)a->data)[i] = 0.5f * (float)i - 1;
    Tensor *all[] = {a, b, c, d};
    StMetadata meta[] = {{"format", "pt"}};
    char path[4096], err[ST_ERR_LEN];
    snprintf(path, sizeof path, "%s/seed.safetensors", dir);
    int rc = safetensors_save(path, all, 4, meta, 1, err) != ST_OK;
    for (int i = 0; i < 4; i++) tensor_free(all[i]);
    return rc;
}
