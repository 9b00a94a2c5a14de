// Fuzz target: the PyTorch checkpoint reader (layers/torch_ckpt.c, layers/torch_pickle.c): each
// input is opened as a checkpoint (zip or legacy) and every tensor it lists is read; the input is
// also run through the unpickler directly, so mutations of plain pickles reach every opcode.
// libFuzzer's default input size is the corpus' largest; FUZZ_ARGS="-max_len=65536" goes further.
#include <stdint.h>
#include <stdlib.h>

#include "layers/torch_ckpt.h"
#include "tests/fuzz/fuzz_util.h"

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

// The small real files of both formats among the reader's fixtures (scripts/make_torch_ckpt_fixtures.py).
int fuzz_write_seeds(const char *dir) {
    const char *names[] = {"state_zip.pt", "state_legacy.pt", "legacy_v1.pth", "bare_tensor.pt", "state_deflated.pt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char src[256];
        snprintf(src, sizeof src, "tests/fixtures/torch_ckpt/%s", names[i]);
        if (fuzz_seed_from_repo(dir, src, names[i])) return 1;
    }
    return 0;
}
