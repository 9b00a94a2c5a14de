// diffusers config.json parsing for the UNet, the VAE and the noise schedule. See sd_config.h.
// Defaults are those of diffusers 0.21.4 (UNet2DConditionModel.__init__, AutoencoderKL.__init__,
// DDPMScheduler.__init__).
#include "layers/sd_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// One config file being parsed; the first error wins and later getters become no-ops.
typedef struct {
    const char *path;
    cJSON *root;
    char *err;
    bool bad;
} Cfg;

static void cfg_error(Cfg *c, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cfg_error(Cfg *c, const char *key, const char *fmt, ...) {
    if (c->bad) return;
    c->bad = true;
    int n = snprintf(c->err, SD_CONFIG_ERR_LEN, "%s: %s: ", c->path, key);
    if (n < 0 || n >= SD_CONFIG_ERR_LEN) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, SD_CONFIG_ERR_LEN - (size_t)n, fmt, ap);
    va_end(ap);
}

// The value under key; NULL when absent or JSON null (both mean "use the default").
static const cJSON *field(Cfg *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static bool as_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e9) return false;
    *out = (int)v->valuedouble;
    return true;
}

static int get_int(Cfg *c, const char *key, int def) {
    const cJSON *v = field(c, key);
    int out = def;
    if (v && !as_int(v, &out)) cfg_error(c, key, "expected an integer");
    return out;
}

static double get_num(Cfg *c, const char *key, double def) {
    const cJSON *v = field(c, key);
    if (!v) return def;
    if (!cJSON_IsNumber(v)) cfg_error(c, key, "expected a number");
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static bool get_bool(Cfg *c, const char *key, bool def) {
    const cJSON *v = field(c, key);
    if (!v) return def;
    if (!cJSON_IsBool(v)) cfg_error(c, key, "expected true or false");
    return cJSON_IsTrue(v);
}

static const char *get_str(Cfg *c, const char *key, const char *def) {
    const cJSON *v = field(c, key);
    if (!v) return def;
    if (!cJSON_IsString(v)) {
        cfg_error(c, key, "expected a string");
        return def;
    }
    return v->valuestring;
}

// Range checks: a file may declare any number, and these sizes become allocations and loop counts
// (a layers_per_block of 1e9 is a billion-entry tensor table). The bounds are far above every
// Stable Diffusion release (docs/model-loading.md) and name the file and key when exceeded.
static void check_range(Cfg *c, const char *key, int v, int lo, int hi) {
    if (v < lo || v > hi) cfg_error(c, key, "%d is outside the supported range [%d, %d]", v, lo, hi);
}
static void check_list_range(Cfg *c, const char *key, const int *v, int n, int lo, int hi) {
    for (int i = 0; i < n; i++)
        if (v[i] < lo || v[i] > hi) {
            cfg_error(c, key, "entry %d is %d, outside the supported range [%d, %d]", i, v[i], lo, hi);
            return;
        }
}
// A finite float in (lo, hi] (lo < v <= hi).
static void check_float(Cfg *c, const char *key, double v, double lo, double hi) {
    if (!(isfinite(v) && v > lo && v <= hi)) cfg_error(c, key, "%g is outside the supported range (%g, %g]", v, lo, hi);
}

#define SD_MAX_CHANNELS 8192
#define SD_MAX_IO_CHANNELS 64
#define SD_MAX_LAYERS 16
#define SD_MAX_TRANSFORMER_LAYERS 32
#define SD_MAX_KERNEL 15
#define SD_MAX_SAMPLE_SIZE 4096
#define SD_MAX_TIMESTEPS 100000

// A list of positive ints of length n (n = 0: any length up to SD_MAX_LEVELS, returned); a single
// int is broadcast to n entries, as diffusers does. Absent: def broadcast (def <= 0: error).
static int get_int_list(Cfg *c, const char *key, int n, int def, int *out) {
    const cJSON *v = field(c, key);
    if (!v) {
        if (def <= 0) cfg_error(c, key, "missing (required)");
        for (int i = 0; i < n; i++) out[i] = def;
        return n;
    }
    int x;
    if (as_int(v, &x)) {
        if (n == 0) n = 1;
        for (int i = 0; i < n; i++) out[i] = x;
    } else if (cJSON_IsArray(v)) {
        int len = cJSON_GetArraySize(v);
        if (n && len != n) {
            cfg_error(c, key, "has %d entries but block_out_channels has %d", len, n);
            return n;
        }
        if (len < 1 || len > SD_MAX_LEVELS) {
            cfg_error(c, key, "has %d entries (1..%d supported)", len, SD_MAX_LEVELS);
            return 0;
        }
        for (int i = 0; i < len; i++)
            if (!as_int(cJSON_GetArrayItem(v, i), &out[i])) cfg_error(c, key, "entry %d is not an integer", i);
        n = len;
    } else {
        cfg_error(c, key, "expected an integer or a list of integers");
        return n;
    }
    for (int i = 0; i < n; i++)
        if (out[i] <= 0) cfg_error(c, key, "entry %d is %d (must be positive)", i, out[i]);
    return n;
}

// A list of n strings, each one of allowed[0..] (an index into allowed goes to out).
static void get_enum_list(Cfg *c, const char *key, int n, const char *const *allowed, int *out) {
    const cJSON *v = field(c, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n) {
        cfg_error(c, key, "expected a list of %d block types (one per block_out_channels entry)", n);
        return;
    }
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_GetArrayItem(v, i);
        out[i] = -1;
        for (int a = 0; allowed[a] && cJSON_IsString(s); a++)
            if (!strcmp(s->valuestring, allowed[a])) out[i] = a;
        if (out[i] < 0) {
            char list[256] = "";
            for (int a = 0; allowed[a]; a++) {
                strncat(list, a ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, allowed[a], sizeof list - strlen(list) - 1);
            }
            cfg_error(c, key, "entry %d (%s) is not supported (supported: %s)", i,
                      cJSON_IsString(s) ? s->valuestring : "not a string", list);
        }
    }
}

// Keys whose non-default values change the architecture in ways this toolkit does not implement.
static void must_be_null(Cfg *c, const char *key) {
    const cJSON *v = field(c, key);
    if (v) {
        char *s = cJSON_PrintUnformatted(v);
        cfg_error(c, key, "%s is not supported (only null)", s ? s : "?");
        free(s);
    }
}
static void must_be_false(Cfg *c, const char *key) {
    if (get_bool(c, key, false)) cfg_error(c, key, "true is not supported (only false)");
}
static void must_be_str(Cfg *c, const char *key, const char *want, const char *also) {
    const char *s = get_str(c, key, want);
    if (strcmp(s, want) && (!also || strcmp(s, also))) cfg_error(c, key, "\"%s\" is not supported (only \"%s\")", s, want);
}

static void warn_unknown_keys(Cfg *c, const char *const *known) {
    for (const cJSON *v = c->root->child; v; v = v->next) {
        if (v->string[0] == '_') continue;
        bool found = false;
        for (int k = 0; known[k] && !found; k++) found = !strcmp(known[k], v->string);
        if (!found) fprintf(stderr, "dod: warning: %s: ignoring unknown key %s\n", c->path, v->string);
    }
}

static cJSON *read_json(const char *path, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, SD_CONFIG_ERR_LEN, "%s: cannot open (is this a diffusers model directory?)", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0 || size > (16 << 20)) {
        fclose(f);
        snprintf(err, SD_CONFIG_ERR_LEN, "%s: unreadable or larger than 16 MiB", path);
        return NULL;
    }
    char *buf = malloc((size_t)size + 1);
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    buf[got] = 0;
    cJSON *root = cJSON_ParseWithLength(buf, got);
    if (!root || !cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        long off = (root || !at) ? 0 : (long)(at - buf);
        snprintf(err, SD_CONFIG_ERR_LEN, "%s: not a JSON object (parse error near byte %ld)", path, off);
        cJSON_Delete(root);
        root = NULL;
    }
    free(buf);
    return root;
}

// ---- UNet2DConditionModel -----------------------------------------------------------------------
static const char *const unet_keys[] = {
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "dropout", "act_fn", "norm_num_groups",
    "norm_eps", "cross_attention_dim", "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type",
    "attention_head_dim", "num_attention_heads", "dual_cross_attention", "use_linear_projection",
    "class_embed_type", "addition_embed_type", "addition_time_embed_dim", "num_class_embeds", "upcast_attention",
    "resnet_time_scale_shift", "resnet_skip_time_act", "resnet_out_scale_factor", "time_embedding_type",
    "time_embedding_dim", "time_embedding_act_fn", "timestep_post_act", "time_cond_proj_dim", "conv_in_kernel",
    "conv_out_kernel", "projection_class_embeddings_input_dim", "attention_type", "class_embeddings_concat",
    "mid_block_only_cross_attention", "cross_attention_norm", "addition_embed_type_num_heads",
    "reverse_transformer_layers_per_block", NULL};

static void parse_unet(Cfg *c, SdUNetConfig *u) {
    u->sample_size = get_int(c, "sample_size", 0);
    u->in_channels = get_int(c, "in_channels", 4);
    u->out_channels = get_int(c, "out_channels", 4);
    int def_channels[] = {320, 640, 1280, 1280};
    if (field(c, "block_out_channels")) {
        u->n_levels = get_int_list(c, "block_out_channels", 0, 0, u->block_out_channels);
        if (cJSON_IsNumber(field(c, "block_out_channels"))) cfg_error(c, "block_out_channels", "expected a list");
    } else {
        u->n_levels = 4;
        memcpy(u->block_out_channels, def_channels, sizeof def_channels);
    }
    int n = u->n_levels;
    static const char *const down_types[] = {"DownBlock2D", "CrossAttnDownBlock2D", NULL};
    static const char *const up_types[] = {"UpBlock2D", "CrossAttnUpBlock2D", NULL};
    int kinds[SD_MAX_LEVELS] = {0};
    if (field(c, "down_block_types")) {
        get_enum_list(c, "down_block_types", n, down_types, kinds);
        for (int i = 0; i < n; i++) u->down_attn[i] = kinds[i] == 1;
    } else {
        for (int i = 0; i < n; i++) u->down_attn[i] = i < 3;   // diffusers default: 3 x CrossAttn + Down
        if (n != 4) cfg_error(c, "down_block_types", "missing (required when block_out_channels is not the default)");
    }
    if (field(c, "up_block_types")) {
        get_enum_list(c, "up_block_types", n, up_types, kinds);
        for (int i = 0; i < n; i++) u->up_attn[i] = kinds[i] == 1;
    } else {
        for (int i = 0; i < n; i++) u->up_attn[i] = i > 0;
        if (n != 4) cfg_error(c, "up_block_types", "missing (required when block_out_channels is not the default)");
    }
    const char *mid = get_str(c, "mid_block_type", "UNetMidBlock2DCrossAttn");
    if (!field(c, "mid_block_type") && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c->root, "mid_block_type")))
        cfg_error(c, "mid_block_type", "null (no mid block) is not supported");
    else if (strcmp(mid, "UNetMidBlock2DCrossAttn"))
        cfg_error(c, "mid_block_type", "\"%s\" is not supported (only \"UNetMidBlock2DCrossAttn\")", mid);
    u->mid_attn = true;

    get_int_list(c, "layers_per_block", n, 2, u->layers_per_block);
    get_int_list(c, "transformer_layers_per_block", n, 1, u->transformer_layers);
    get_int_list(c, "cross_attention_dim", n, 1280, u->cross_attention_dim);
    // diffusers 0.21: num_attention_heads = num_attention_heads or attention_head_dim (see header).
    if (field(c, "num_attention_heads")) get_int_list(c, "num_attention_heads", n, 0, u->num_heads);
    else get_int_list(c, "attention_head_dim", n, 8, u->num_heads);
    for (int i = 0; i < n && !c->bad; i++)
        if (u->block_out_channels[i] % u->num_heads[i])
            cfg_error(c, field(c, "num_attention_heads") ? "num_attention_heads" : "attention_head_dim",
                      "level %d: %d heads do not divide %d channels", i, u->num_heads[i], u->block_out_channels[i]);

    u->norm_num_groups = get_int(c, "norm_num_groups", 32);
    if (!field(c, "norm_num_groups") && cJSON_GetObjectItemCaseSensitive(c->root, "norm_num_groups"))
        cfg_error(c, "norm_num_groups", "null (no output GroupNorm) is not supported");
    for (int i = 0; i < n && !c->bad; i++)
        if (u->norm_num_groups <= 0 || u->block_out_channels[i] % u->norm_num_groups)
            cfg_error(c, "norm_num_groups", "%d groups do not divide %d channels (level %d)", u->norm_num_groups,
                      u->block_out_channels[i], i);
    u->norm_eps = (float)get_num(c, "norm_eps", 1e-5);
    u->flip_sin_to_cos = get_bool(c, "flip_sin_to_cos", true);
    u->freq_shift = get_int(c, "freq_shift", 0);
    u->use_linear_projection = get_bool(c, "use_linear_projection", false);
    u->upcast_attention = get_bool(c, "upcast_attention", false);
    // diffusers' default, 4 x the first level's width, formed only for a width in range (one out of range
    // is refused below; 4 x a hostile file's width could overflow an int).
    int ch0 = u->block_out_channels[0];
    u->time_embed_dim = get_int(c, "time_embedding_dim", ch0 >= 1 && ch0 <= SD_MAX_CHANNELS ? 4 * ch0 : 0);
    u->conv_in_kernel = get_int(c, "conv_in_kernel", 3);
    u->conv_out_kernel = get_int(c, "conv_out_kernel", 3);
    if (u->conv_in_kernel % 2 == 0 || u->conv_in_kernel < 1) cfg_error(c, "conv_in_kernel", "must be odd and positive");
    if (u->conv_out_kernel % 2 == 0 || u->conv_out_kernel < 1) cfg_error(c, "conv_out_kernel", "must be odd and positive");
    u->downsample_padding = get_int(c, "downsample_padding", 1);
    u->mid_block_scale_factor = (float)get_num(c, "mid_block_scale_factor", 1.0);

    check_range(c, "sample_size", u->sample_size, 0, SD_MAX_SAMPLE_SIZE);
    check_range(c, "in_channels", u->in_channels, 1, SD_MAX_IO_CHANNELS);
    check_range(c, "out_channels", u->out_channels, 1, SD_MAX_IO_CHANNELS);
    check_list_range(c, "block_out_channels", u->block_out_channels, n, 1, SD_MAX_CHANNELS);
    check_list_range(c, "layers_per_block", u->layers_per_block, n, 1, SD_MAX_LAYERS);
    check_list_range(c, "transformer_layers_per_block", u->transformer_layers, n, 1, SD_MAX_TRANSFORMER_LAYERS);
    check_list_range(c, "cross_attention_dim", u->cross_attention_dim, n, 1, SD_MAX_CHANNELS);
    check_range(c, "time_embedding_dim", u->time_embed_dim, 1, 4 * SD_MAX_CHANNELS);
    check_range(c, "conv_in_kernel", u->conv_in_kernel, 1, SD_MAX_KERNEL);
    check_range(c, "conv_out_kernel", u->conv_out_kernel, 1, SD_MAX_KERNEL);
    // 1 pads the stride-2 convolution (SD); 0 pads right/bottom by one first (diffusers). Anything
    // else changes the feature map sizes the up path's skip connections must match.
    check_range(c, "downsample_padding", u->downsample_padding, 0, 1);
    // the sinusoid's exponent divides by half_dim - freq_shift (diffusers uses 0 or 1)
    check_range(c, "freq_shift", u->freq_shift, 0, 1);
    check_float(c, "norm_eps", u->norm_eps, 0, 1);
    check_float(c, "mid_block_scale_factor", u->mid_block_scale_factor, 0, 1000);

    // Values SD 1.x / 2.x never use and this toolkit does not implement.
    must_be_false(c, "dual_cross_attention");
    must_be_false(c, "center_input_sample");
    must_be_false(c, "resnet_skip_time_act");
    must_be_false(c, "class_embeddings_concat");
    must_be_false(c, "mid_block_only_cross_attention");
    if (cJSON_IsArray(field(c, "only_cross_attention"))) {
        for (int i = 0; i < cJSON_GetArraySize(field(c, "only_cross_attention")); i++)
            if (cJSON_IsTrue(cJSON_GetArrayItem(field(c, "only_cross_attention"), i)))
                cfg_error(c, "only_cross_attention", "true (level %d) is not supported (only false)", i);
    } else {
        must_be_false(c, "only_cross_attention");
    }
    must_be_null(c, "class_embed_type");
    must_be_null(c, "num_class_embeds");
    must_be_null(c, "addition_embed_type");
    must_be_null(c, "encoder_hid_dim");
    must_be_null(c, "encoder_hid_dim_type");
    must_be_null(c, "time_embedding_act_fn");
    must_be_null(c, "timestep_post_act");
    must_be_null(c, "time_cond_proj_dim");
    must_be_null(c, "cross_attention_norm");
    must_be_null(c, "reverse_transformer_layers_per_block");
    must_be_str(c, "act_fn", "silu", "swish");
    must_be_str(c, "time_embedding_type", "positional", NULL);
    must_be_str(c, "resnet_time_scale_shift", "default", NULL);
    must_be_str(c, "attention_type", "default", NULL);
    if (get_num(c, "resnet_out_scale_factor", 1.0) != 1.0)
        cfg_error(c, "resnet_out_scale_factor", "only 1.0 is supported");
    warn_unknown_keys(c, unet_keys);
}

// ---- AutoencoderKL ------------------------------------------------------------------------------
static const char *const vae_keys[] = {
    "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
    "act_fn", "latent_channels", "norm_num_groups", "sample_size", "scaling_factor", "force_upcast",
    "mid_block_add_attention", "use_quant_conv", "use_post_quant_conv", "shift_factor", "latents_mean",
    "latents_std", NULL};

static void parse_vae(Cfg *c, SdVaeConfig *v) {
    v->in_channels = get_int(c, "in_channels", 3);
    v->out_channels = get_int(c, "out_channels", 3);
    v->latent_channels = get_int(c, "latent_channels", 4);
    if (field(c, "block_out_channels")) {
        v->n_levels = get_int_list(c, "block_out_channels", 0, 0, v->block_out_channels);
    } else {
        v->n_levels = 1;
        v->block_out_channels[0] = 64;
    }
    int kinds[SD_MAX_LEVELS];
    static const char *const down_types[] = {"DownEncoderBlock2D", NULL};
    static const char *const up_types[] = {"UpDecoderBlock2D", NULL};
    if (field(c, "down_block_types") || v->n_levels != 1) get_enum_list(c, "down_block_types", v->n_levels, down_types, kinds);
    if (field(c, "up_block_types") || v->n_levels != 1) get_enum_list(c, "up_block_types", v->n_levels, up_types, kinds);
    v->layers_per_block = get_int(c, "layers_per_block", 1);
    v->norm_num_groups = get_int(c, "norm_num_groups", 32);
    for (int i = 0; i < v->n_levels && !c->bad; i++)
        if (v->norm_num_groups <= 0 || v->block_out_channels[i] % v->norm_num_groups)
            cfg_error(c, "norm_num_groups", "%d groups do not divide %d channels (level %d)", v->norm_num_groups,
                      v->block_out_channels[i], i);
    v->sample_size = get_int(c, "sample_size", 32);
    v->scaling_factor = (float)get_num(c, "scaling_factor", 0.18215);
    v->mid_block_add_attention = get_bool(c, "mid_block_add_attention", true);
    v->use_quant_conv = get_bool(c, "use_quant_conv", true);
    v->use_post_quant_conv = get_bool(c, "use_post_quant_conv", true);
    check_range(c, "in_channels", v->in_channels, 1, SD_MAX_IO_CHANNELS);
    check_range(c, "out_channels", v->out_channels, 1, SD_MAX_IO_CHANNELS);
    check_range(c, "latent_channels", v->latent_channels, 1, SD_MAX_IO_CHANNELS);
    check_list_range(c, "block_out_channels", v->block_out_channels, v->n_levels, 1, SD_MAX_CHANNELS);
    check_range(c, "layers_per_block", v->layers_per_block, 1, SD_MAX_LAYERS);
    check_range(c, "sample_size", v->sample_size, 0, 16 * SD_MAX_SAMPLE_SIZE);
    check_float(c, "scaling_factor", v->scaling_factor, 0, 1000);
    must_be_str(c, "act_fn", "silu", "swish");
    must_be_null(c, "shift_factor");
    warn_unknown_keys(c, vae_keys);
}

// ---- noise schedule -----------------------------------------------------------------------------
static void parse_scheduler(Cfg *c, SdSchedulerConfig *s) {
    s->num_train_timesteps = get_int(c, "num_train_timesteps", 1000);
    check_range(c, "num_train_timesteps", s->num_train_timesteps, 1, SD_MAX_TIMESTEPS);
    s->beta_start = get_num(c, "beta_start", 0.0001);
    s->beta_end = get_num(c, "beta_end", 0.02);
    check_float(c, "beta_start", s->beta_start, 0, 1);
    check_float(c, "beta_end", s->beta_end, 0, 1);
    const char *bs = get_str(c, "beta_schedule", "linear");
    if (!strcmp(bs, "linear")) s->beta_schedule = SD_BETA_LINEAR;
    else if (!strcmp(bs, "scaled_linear")) s->beta_schedule = SD_BETA_SCALED_LINEAR;
    else if (!strcmp(bs, "squaredcos_cap_v2")) s->beta_schedule = SD_BETA_SQUAREDCOS_CAP_V2;
    else cfg_error(c, "beta_schedule", "\"%s\" is not supported (linear, scaled_linear, squaredcos_cap_v2)", bs);
    const char *pt = get_str(c, "prediction_type", "epsilon");
    if (!strcmp(pt, "epsilon")) s->prediction_type = SD_PRED_EPSILON;
    else if (!strcmp(pt, "v_prediction")) s->prediction_type = SD_PRED_V;
    else if (!strcmp(pt, "sample")) s->prediction_type = SD_PRED_SAMPLE;
    else cfg_error(c, "prediction_type", "\"%s\" is not supported (epsilon, v_prediction, sample)", pt);
    must_be_null(c, "trained_betas");
    must_be_false(c, "rescale_betas_zero_snr");
    // Other keys (timestep_spacing, steps_offset, clip_sample, ...) configure samplers, not the
    // training noise schedule, and are ignored.
}

// ---- CLIPTextModel ------------------------------------------------------------------------------
static void parse_text_encoder(Cfg *c, SdTextEncoderConfig *t) {
    static const char *const positive[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                           "num_attention_heads", "max_position_embeddings"};
    static const int defaults[] = {49408, 512, 2048, 12, 8, 77};
    int *fields[] = {&t->vocab_size, &t->hidden_size, &t->intermediate_size, &t->num_layers, &t->num_heads,
                     &t->max_positions};
    for (int i = 0; i < 6; i++) {
        *fields[i] = get_int(c, positive[i], defaults[i]);
        if (*fields[i] < 1) cfg_error(c, positive[i], "must be positive, got %d", *fields[i]);
    }
    if (!c->bad && t->hidden_size % t->num_heads)
        cfg_error(c, "num_attention_heads", "%d does not divide hidden_size %d", t->num_heads, t->hidden_size);
    const char *act = get_str(c, "hidden_act", "quick_gelu");
    if (!strcmp(act, "quick_gelu")) t->act = SD_TEXT_ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu")) t->act = SD_TEXT_ACT_GELU;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) t->act = SD_TEXT_ACT_GELU_TANH;
    else cfg_error(c, "hidden_act", "\"%s\" is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)", act);
    t->layer_norm_eps = (float)get_num(c, "layer_norm_eps", 1e-5);
    if (!(t->layer_norm_eps > 0)) cfg_error(c, "layer_norm_eps", "must be positive");
    if (get_bool(c, "use_attention_mask", false))
        cfg_error(c, "use_attention_mask", "true is not supported (the pipeline would mask the pad tokens)");
}

void sd_scheduler_alphas_cumprod(const SdSchedulerConfig *s, double *out) {
    int n = s->num_train_timesteps;
    double prod = 1.0;
    for (int t = 0; t < n; t++) {
        double frac = n > 1 ? (double)t / (n - 1) : 0.0, beta;
        if (s->beta_schedule == SD_BETA_LINEAR) {
            beta = s->beta_start + frac * (s->beta_end - s->beta_start);
        } else if (s->beta_schedule == SD_BETA_SCALED_LINEAR) {
            double r = sqrt(s->beta_start) + frac * (sqrt(s->beta_end) - sqrt(s->beta_start));
            beta = r * r;
        } else {   // Glide cosine schedule, betas capped at 0.999
            double t1 = (double)t / n, t2 = (double)(t + 1) / n;
            double a1 = cos((t1 + 0.008) / 1.008 * M_PI / 2), a2 = cos((t2 + 0.008) / 1.008 * M_PI / 2);
            beta = fmin(1.0 - (a2 * a2) / (a1 * a1), 0.999);
        }
        prod *= 1.0 - beta;
        out[t] = prod;
    }
}

const char *sd_prediction_name(SdPrediction p) {
    return p == SD_PRED_EPSILON ? "epsilon" : p == SD_PRED_V ? "v_prediction" : "sample";
}

// ---- entry points -------------------------------------------------------------------------------
// Zero cfg, remember the path, parse; the caller runs its parser when this returns true.
static bool cfg_open(Cfg *c, const char *path, char *err, char *cfg_path, size_t cfg_path_len) {
    snprintf(cfg_path, cfg_path_len, "%s", path);
    *c = (Cfg){.path = path, .err = err, .bad = false};
    c->root = read_json(path, err);
    return c->root != NULL;
}

static int cfg_close(Cfg *c) {
    cJSON_Delete(c->root);
    return c->bad ? -1 : 0;
}

int sd_unet_config_load(const char *path, SdUNetConfig *cfg, char err[SD_CONFIG_ERR_LEN]) {
    memset(cfg, 0, sizeof *cfg);
    Cfg c;
    if (!cfg_open(&c, path, err, cfg->path, sizeof cfg->path)) return -1;
    parse_unet(&c, cfg);
    return cfg_close(&c);
}

int sd_vae_config_load(const char *path, SdVaeConfig *cfg, char err[SD_CONFIG_ERR_LEN]) {
    memset(cfg, 0, sizeof *cfg);
    Cfg c;
    if (!cfg_open(&c, path, err, cfg->path, sizeof cfg->path)) return -1;
    parse_vae(&c, cfg);
    return cfg_close(&c);
}

int sd_scheduler_config_load(const char *path, SdSchedulerConfig *cfg, char err[SD_CONFIG_ERR_LEN]) {
    memset(cfg, 0, sizeof *cfg);
    Cfg c;
    if (!cfg_open(&c, path, err, cfg->path, sizeof cfg->path)) return -1;
    parse_scheduler(&c, cfg);
    return cfg_close(&c);
}

int sd_text_encoder_config_load(const char *path, SdTextEncoderConfig *cfg, char err[SD_CONFIG_ERR_LEN]) {
    memset(cfg, 0, sizeof *cfg);
    Cfg c;
    if (!cfg_open(&c, path, err, cfg->path, sizeof cfg->path)) return -1;
    parse_text_encoder(&c, cfg);
    return cfg_close(&c);
}
