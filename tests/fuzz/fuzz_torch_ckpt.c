// libFuzzer target of the PyTorch checkpoint reader (layers/torch_ckpt.c, layers/torch_pickle.c):
// each input is opened as a checkpoint (zip or legacy) and every tensor it lists is read; the input
// is also run through the unpickler directly, so mutations of plain pickles reach every opcode.
// Build and run: scripts/fuzz_torch_ckpt.sh (seed corpus: tests/fuzz/corpus_torch_ckpt).
#include <stdint.h>
#include <stdlib.h>

#include "layers/torch_ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[TORCH_ERR_LEN];
    TorchCkpt *ck;
    if (torch_ckpt_open_memory("fuzz", data, size, &ck, err) == 0) {
        for (int i = 0; i < torch_ckpt_count(ck); i++) {
            const TorchTensor *t = torch_ckpt_tensor(ck, i);
            size_t bytes = (size_t)t->numel * torch_dtype_size(t->dtype);
            if (bytes > (64u << 20)) continue;   // legal (a broadcast view) but not worth the time
            void *buf = malloc(bytes + 1);
            torch_ckpt_read(ck, t, buf, err);
            free(buf);
        }
        torch_ckpt_close(ck);
    }
    const PyVal *root;
    size_t used;
    Pickle *p = pickle_load(data, size, "fuzz", &root, &used, err);
    pickle_free(p);
    return 0;
}
