// Models trained with the public DOD code: its saved dicts (osediff.py, save_model) read into the DOD
// model's tensors (layers/dod_model.h names), so they restore, evaluate and fine-tune here.
//
// The public code torch.saves (read by the safe reader, layers/torch_ckpt.h, whose key paths join the
// dict keys with '/'):
//   stage 1  state_dict_unet/<k>            {unet.state_dict() entries with "lora" or "conv_in"}: PEFT names
//            state_dict_vae/<k>             {vae.state_dict() entries with "lora" or "skip_conv"}
//            state_dict_unet_de_mlp/0.*     nn.Sequential(Linear(1024, 256), ReLU)
//            state_dict_unet_block_mlp/0.*  nn.Sequential(Linear(64, 64), ReLU)
//            state_dict_unet_fuse_mlp/*     Linear(256 + 64, 2 r)
//            state_dict_unet_block/weight   Embedding(10, 64)
//            (and non-tensor entries: the target lists, rank_unet, rank_vae)
//   stage 2  state_dict_vae/<k>             {vae_decoder.state_dict() entries with "lora", "sft_blocks" or
//                                            "skip_conv"} (full = True saves the whole decoder VAE)
//            (and rank_vae_decoder)
// Key -> our name:
//   state_dict_unet/conv_in.{weight,bias}                  unet.conv_in.{weight,bias}
//   state_dict_unet/<L>.lora_{A,B}.<adapter>.weight        unet.<L>.lora_{A,B}.weight
//   state_dict_vae/<L>.lora_{A,B}.<adapter>.weight         vae.<L>.lora_{A,B}.weight
//   state_dict_unet_de_mlp/0.{weight,bias}                 mod.de_mlp.*
//   state_dict_unet_block_mlp/0.{weight,bias}              mod.block_mlp.*
//   state_dict_unet_fuse_mlp/{weight,bias}                 mod.fuse_mlp.*
//   state_dict_unet_block/weight                           mod.block_embeddings.weight
//   state_dict_vae/decoder.skip_conv_<n>.weight            detail.skip_convs.<n-1>.weight
//   state_dict_vae/decoder.sft_blocks_<n>.encode_enc_1.<p> detail.fuse.<n-1>.res_in.<p>  (its 1x1 shortcut
//                                                          conv_out is our conv_shortcut)
//   state_dict_vae/decoder.sft_blocks_<n>.encode_enc_2.0.<p> detail.fuse.<n-1>.rrdb.<p>  (rdb<r>.conv<j>.*)
//   state_dict_vae/decoder.sft_blocks_<n>.encode_enc_3.<p> detail.fuse.<n-1>.res_out.<p>
//   state_dict_vae/decoder.sft_blocks_<n>.w                detail.fuse_weights.<n-1>  (0-dim -> [1])
// Any other state_dict_vae/decoder.*, encoder.*, quant_conv.*, post_quant_conv.* entry without "lora" is
// a frozen base weight (a full = True stage-2 save): skipped and counted. Everything else is unexpected.
//
// The formulas match ours: the same target layers (PEFT's matching of the same lists), the block index
// rule, [gamma; beta] = fuse_mlp([de_mlp(d); block_mlp(E_k)]) split in halves, PEFT's scale
// lora_alpha / r with the public code's LoraConfig leaving lora_alpha at PEFT's default 8, the detail
// module's order (concat(skip, dec), dec + w Fuse). What the public material does not show is the
// modulated LoRA forward itself (its model_qkv.py, my_lora_fwd_sft): the import assumes ours,
// h = W0 x + s B((1 + gamma) A x + beta) (docs/dod-modules.md); dod_import_gamma_plain converts a model
// whose forward is gamma (A x) + beta. See docs/model-loading.md.
#pragma once
#include <stddef.h>

#include "autograd/params.h"

#define DOD_IMPORT_SKIPPED 1

// Our tensor name for a public key path (=). 0: mapped; DOD_IMPORT_SKIPPED: a frozen base weight of a
// full stage-2 save (out unset); -1: not a key the public code saves.
int dod_public_to_ours(const char *key, char *out, size_t len);
// The public key path of one of our tensor names (=), the inverse of dod_public_to_ours with the public
// code's adapter names ("default" for the UNet, "vae_skip" for the VAE encoder). 0, or -1 for a name the
// public code has no key for (mod.cnn.*: it has no cnn extractor).
int dod_ours_to_public(const char *name, char *out, size_t len);

typedef struct {
    int copied;    // tensors copied into ps
    int skipped;   // frozen base weights of a full stage-2 save, not read
} DodImportStats;

// Copies (=) every tensor of the public file `path` (a stage-1 or stage-2 dict; any format
// tensor_file_open reads) into the tensor of ps its key maps to, converted to that tensor's storage dtype,
// on its device; a 0-dim tensor fills a one-element one. Then every trainable tensor of ps
// (requires_grad: the stage's) must have been filled. 0, or -1 with err listing by name every key that
// is unexpected or maps to no tensor of ps, every shape mismatch (both shapes), and every trainable
// tensor the file lacks (with the public key it comes from). stats (may be NULL) receives the counts.
int dod_import_public(ParamStore *ps, const char *path, DodImportStats *stats, char *err, size_t errlen);

// For a public model whose modulated LoRA is h = W0 x + s B(gamma (A x) + beta) rather than ours
// ((1 + gamma) A x): our gamma must be theirs - 1, so 1 is subtracted (+=) from the gamma half (the
// first `rank` entries) of mod.fuse_mlp.bias, on its device. 0, or -1 with err when ps has no
// mod.fuse_mlp.bias of 2 rank entries.
int dod_import_gamma_plain(ParamStore *ps, int rank, char *err, size_t errlen);
