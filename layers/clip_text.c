// CLIPTextModel forward from the engine's ops (see clip_text.h).
#include "layers/clip_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "layers/sd_weights.h"

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

ClipTextModel *clip_text_load(const char *dir, DType dtype, char *err, size_t errlen) {
    char cfg_path[1200], weights[1200];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    ClipTextModel *m = dod_calloc(sizeof *m, "clip text model");
    char cfg_err[SD_CONFIG_ERR_LEN];
    if (sd_text_encoder_config_load(cfg_path, &m->cfg, cfg_err)) {
        snprintf(err, errlen, "%s", cfg_err);
        free(m);
        return NULL;
    }
    snprintf(weights, sizeof weights, "%s/model.safetensors", dir);
    if (!is_file(weights)) snprintf(weights, sizeof weights, "%s/model.fp16.safetensors", dir);
    if (!is_file(weights)) snprintf(weights, sizeof weights, "%s/pytorch_model.bin", dir);   // older releases
    if (!is_file(weights)) {
        snprintf(err, errlen, "%s: no model.safetensors (nor model.fp16.safetensors, pytorch_model.bin)", dir);
        free(m);
        return NULL;
    }
    char st_err[ST_ERR_LEN];
    if (tensor_file_open(weights, &m->file, st_err) != ST_OK) {   // safetensors or a PyTorch checkpoint
        snprintf(err, errlen, "%s", st_err);
        free(m);
        return NULL;
    }
    SdTensorTable table = {0};
    sd_text_encoder_tensor_table(&m->cfg, &table);
    m->ps = params_new();
    SdLoadReport rep;
    memset(&rep, 0, sizeof rep);
    char *load_err = NULL;
    int rc = sd_load_tensors(m->file, &table, SD_NAMES_DIFFUSERS, "text_model.", dtype, m->ps, &rep, &load_err);
    sd_table_free(&table);
    // Unexpected names are ignored (older files carry the I64 buffer text_model.embeddings.position_ids).
    sd_report_free(&rep);
    if (rc) {
        snprintf(err, errlen, "%s", load_err);
        free(load_err);
        clip_text_free(m);
        return NULL;
    }
    return m;
}

void clip_text_free(ClipTextModel *m) {
    if (!m) return;
    params_free(m->ps);
    if (m->file) safetensors_close(m->file);
    free(m);
}

void clip_text_to_device(ClipTextModel *m, Device device) {
    params_to_device(m->ps, device);
    m->device = device;
}

static Tensor *weight(ClipTextModel *m, const char *prefix, const char *name) {
    char full[3 * SD_NAME_LEN];
    snprintf(full, sizeof full, "%s.%s", prefix, name);
    return params_require(m->ps, full, "clip_text_forward");
}

static Tensor *linear(ClipTextModel *m, const char *prefix, const char *mod, Tensor *x) {
    char w[SD_NAME_LEN + 8], b[SD_NAME_LEN + 8];
    snprintf(w, sizeof w, "%s.weight", mod);
    snprintf(b, sizeof b, "%s.bias", mod);
    return op_linear(x, weight(m, prefix, w), weight(m, prefix, b));
}

static Tensor *layer_norm(ClipTextModel *m, const char *prefix, const char *mod, Tensor *x) {
    char w[SD_NAME_LEN + 8], b[SD_NAME_LEN + 8];
    snprintf(w, sizeof w, "%s.weight", mod);
    snprintf(b, sizeof b, "%s.bias", mod);
    return op_layer_norm(x, weight(m, prefix, w), weight(m, prefix, b), m->cfg.layer_norm_eps);
}

// One CLIPEncoderLayer on h [1, n, D] (= new tensor).
static Tensor *encoder_layer(ClipTextModel *m, int i, Tensor *h) {
    char pre[SD_NAME_LEN];
    snprintf(pre, sizeof pre, "text_model.encoder.layers.%d", i);
    Tensor *x = layer_norm(m, pre, "layer_norm1", h);
    Tensor *q = linear(m, pre, "self_attn.q_proj", x), *k = linear(m, pre, "self_attn.k_proj", x);
    Tensor *v = linear(m, pre, "self_attn.v_proj", x);
    Tensor *a = op_attention_causal(q, k, v, m->cfg.num_heads, 0.0f);  // scale 1/sqrt(head_dim)
    h = op_add(h, linear(m, pre, "self_attn.out_proj", a));
    x = linear(m, pre, "mlp.fc1", layer_norm(m, pre, "layer_norm2", h));
    x = m->cfg.act == SD_TEXT_ACT_QUICK_GELU ? op_quick_gelu(x) : op_gelu(x, m->cfg.act == SD_TEXT_ACT_GELU_TANH);
    return op_add(h, linear(m, pre, "mlp.fc2", x));
}

Tensor *clip_text_forward(ClipTextModel *m, const int64_t *ids, int n) {
    const SdTextEncoderConfig *c = &m->cfg;
    DOD_CHECK(n >= 1 && n <= c->max_positions, "clip_text_forward", "%s: %d tokens, the model takes 1 to %d", c->path,
              n, c->max_positions);
    bool grad = ag_set_grad_enabled(false);
    DType act = ag_activation_dtype();
    ag_set_activation_dtype(DT_F32);
    int64_t *pos = dod_malloc(sizeof(int64_t) * (size_t)n, "clip positions");
    for (int i = 0; i < n; i++) pos[i] = i;
    int64_t shape[3] = {1, n, c->hidden_size};
    // h lives before every layer's scratch scope: each layer's tensors are given back once its result
    // is copied into h.
    Tensor *h = tensor_new_on(m->device, 3, shape, DT_F32);
    ScratchScope sc = scratch_begin(m->device);
    Tensor *emb = op_add(op_embedding(weight(m, "text_model.embeddings", "token_embedding.weight"), ids, n),
                         op_embedding(weight(m, "text_model.embeddings", "position_embedding.weight"), pos, n));
    device_copy(h->data, m->device, emb->data, emb->device, sizeof(float) * (size_t)h->numel);
    scratch_end(sc);
    free(pos);
    for (int i = 0; i < c->num_layers; i++) {
        sc = scratch_begin(m->device);
        Tensor *out = encoder_layer(m, i, h);
        device_copy(h->data, m->device, out->data, out->device, sizeof(float) * (size_t)h->numel);
        scratch_end(sc);
    }
    Tensor *y = op_layer_norm(h, weight(m, "text_model", "final_layer_norm.weight"),
                              weight(m, "text_model", "final_layer_norm.bias"), c->layer_norm_eps);
    ag_set_activation_dtype(act);
    ag_set_grad_enabled(grad);
    return op_reshape(y, 2, (int64_t[]){n, c->hidden_size});
}
