// The training loop (see train/loop.h). Needs HDF5 (loader) and iniparser (configuration).
#include "train/loop.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    if (stop_requested) _exit(TRAIN_INTERRUPTED);
    stop_requested = 1;
    static const char msg[] = "\ndod-train: stop requested: stopping at the next micro-batch (several processes: "
                              "at the end of the step) and saving a checkpoint of the completed steps (again to "
                              "quit without saving)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
}

void train_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

#if defined(DOD_HAVE_HDF5) && defined(DOD_HAVE_INIPARSER)
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "autograd/cuda/cuda_backend.h"
#include "autograd/device_scalars.h"
#include "autograd/finite.h"
#include "autograd/ops.h"
#include "autograd/optim.h"
#include "data/keyed_rng.h"
#include "data/loader.h"
#include "eval/validate.h"
#include "layers/dod_loss.h"
#include "layers/lpips.h"
#include "layers/model.h"
#include "layers/model_weights.h"
#include "train/batch_feed.h"
#include "train/checkpoint.h"
#include "train/grad_sync.h"
#include "train/memory_check.h"
#include "train/step_log.h"

#define PATH_LEN (2 * CFG_STR + 64)

// dir/name, or name itself when absolute.
static void join(char *out, size_t len, const char *dir, const char *name) {
    if (name[0] == '/') snprintf(out, len, "%s", name);
    else snprintf(out, len, "%s/%s", dir, name);
}

// On resume: drop metrics lines of steps after the checkpoint (an interrupted run may have logged
// past it), so the log reads as one run. Rewritten atomically.
static int trim_jsonl(const char *path, int64_t last_step, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t cap = 1 << 16, len = 0;
    char *kept = dod_malloc(cap, "metrics log"), line[8192];
    kept[0] = 0;
    while (fgets(line, sizeof line, f)) {
        long long step;
        if (sscanf(line, "{\"step\": %lld", &step) == 1 && step > last_step) continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) kept = realloc(kept, cap *= 2);
        if (!kept) dod_fatal("trim_jsonl", "out of memory reading %s", path);
        memcpy(kept + len, line, n + 1);
        len += n;
    }
    fclose(f);
    int rc = fs_write_text_atomic(path, kept, err, errlen);
    free(kept);
    return rc;
}

static void format_duration(double s, char *buf, size_t len) {
    long long t = (long long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%lldh%02lldm", t / 3600, (t / 60) % 60);
    else snprintf(buf, len, "%lldm%02llds", t / 60, t % 60);
}

// The step's scalars (Run.scalars): sums over the micro-batches, the gradient norm, then each
// micro-batch's loss (to name the batch whose loss is not finite).
enum { STEP_MSE = 0, STEP_SSIM_LOSS, STEP_LPIPS, STEP_GRAD_NORM, STEP_LOSS0 };

// Everything a run holds; freed by run_free.
typedef struct {
    const TrainConfig *cfg;
    char run_dir[CFG_STR], ckpt_dir[PATH_LEN], jsonl_path[PATH_LEN], samples_dir[PATH_LEN];
    char *config_text;
    Model *model;
    Tensor **trainable;
    int n_trainable;
    AdamW *opt;
    Loader *loader;
    BatchFeed *feed;         // the loader's batches on the model's device, one micro-batch ahead
    DeviceScalars *scalars;  // the step's loss terms and gradient norm, read once per step (STEP_*)
    Validator *val;
    FILE *jsonl;
    // Several processes: comm NULL for one; rank 0 alone writes the run dir, logs and validates.
    Comm *comm;
    int rank, world;
    bool quiet;              // o->quiet, or not rank 0
    GradSync *sync;          // micro-batch accumulation and the all-reduce (NULL: one process, grad_accum 1)
    bool stop_agreed;        // several processes: a stop was requested on one of them before the last step's end
    TfEvents *tb;            // NULL: [log] tensorboard = false
    Lpips *lpips;            // [loss] lpips > 0: the frozen LPIPS network of dod_loss, on the model's device
} Run;

static void run_free(Run *r) {
    if (r->jsonl) fclose(r->jsonl);
    tfevents_close(r->tb, NULL, 0);   // a write error was reported when the loop flushed
    validator_close(r->val);
    batch_feed_free(r->feed);
    if (r->loader) loader_close(r->loader);
    device_scalars_free(r->scalars);
    grad_sync_free(r->sync);
    if (r->opt) adamw_free(r->opt);
    free(r->trainable);
    model_free(r->model);
    lpips_free(r->lpips);
    free(r->config_text);
}

// The run's loss weights (layers/dod_loss.h), with its LPIPS network.
static DodLossWeights loss_weights(const Run *r) {
    const TrainConfig *c = r->cfg;
    return (DodLossWeights){.mse = (float)c->loss_mse, .ssim = (float)c->loss_ssim, .lpips = (float)c->loss_lpips,
                            .lpips_net = r->lpips};
}

static int save_checkpoint(Run *r, int64_t step, char *path, size_t plen, char *err, size_t errlen) {
    CheckpointInfo info = {.step = step, .adamw_step = r->opt->step, .seed = (uint64_t)r->cfg->model.seed,
                           .loader_next = step * r->cfg->grad_accum * r->world, .stage = (int)r->cfg->model.stage,
                           .world_size = r->world, .config_text = r->config_text, .prompt = r->cfg->model.prompt,
                           .negative_prompt = r->cfg->model.negative_prompt,
                           .prompt_embedding = r->cfg->model.prompt_embedding};
    snprintf(info.model_kind, sizeof info.model_kind, "%s", r->model->kind);
    return checkpoint_save(r->ckpt_dir, r->trainable, r->n_trainable, r->opt, &info, (int)r->cfg->ckpt_keep_last,
                           path, plen, err, errlen);
}

// Builds model, optimizer, loader and validator; loads the stage-1 weights (stage 2) and, on
// resume, the checkpoint. *start_step = steps already done.
static int run_setup(Run *r, const TrainOptions *o, int64_t *start_step, char *err, size_t errlen) {
    const TrainConfig *c = &o->cfg;
    r->cfg = c;
    r->comm = o->comm && comm_backend(o->comm) != COMM_NONE ? o->comm : NULL;
    r->rank = r->comm ? comm_rank(r->comm) : 0;
    r->world = r->comm ? comm_world(r->comm) : 1;
    r->quiet = o->quiet || r->rank != 0;
    const ModelOptions *mo = &c->model;
    if (mo->device == DEV_CUDA && !dod_cuda_available()) {   // before writing or loading anything
        char w[CFG_STR + 32];
        config_where(c, "model", "device", w, sizeof w);
        snprintf(err, errlen, "no CUDA device: %s ([model] device = cuda, %s)", dod_cuda_unavailable_reason(), w);
        return -1;
    }
    snprintf(r->run_dir, sizeof r->run_dir, "%s", c->run_dir);
    join(r->ckpt_dir, sizeof r->ckpt_dir, r->run_dir, mo->ckpt_dir);
    join(r->jsonl_path, sizeof r->jsonl_path, r->run_dir, c->log_jsonl);
    join(r->samples_dir, sizeof r->samples_dir, r->run_dir, "samples");
    r->config_text = config_to_text(c);
    *start_step = 0;

    char resume_path[PATH_LEN] = "";
    if (o->resume) {
        if (checkpoint_latest(r->ckpt_dir, resume_path, sizeof resume_path, err, errlen)) return -1;
    } else {
        char latest[PATH_LEN + 16];
        snprintf(latest, sizeof latest, "%s/latest", r->ckpt_dir);
        if (access(latest, F_OK) == 0) {
            snprintf(err, errlen, "%s already holds checkpoints (%s); continue it with --resume %s, or choose another "
                                  "[train] run_dir", r->run_dir, latest, r->run_dir);
            return -1;
        }
    }
    char cfg_path[PATH_LEN + 16];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.ini", r->run_dir);
    if (r->rank == 0 && (fs_mkdirs(r->run_dir, err, errlen) || fs_mkdirs(r->samples_dir, err, errlen)))
        return -1;
    if (r->rank == 0) {   // what a killed run left half-written (fs_remove_stale_tmp)
        const char *jsonl_name = strrchr(r->jsonl_path, '/') ? strrchr(r->jsonl_path, '/') + 1 : r->jsonl_path;
        const char *run_files[] = {"config.ini", jsonl_name, MODEL_PROMPT_CACHE},
                   *ckpt_files[] = {"step_*.safetensors", "latest"}, *sample_files[] = {"step_*.png"};
        fs_remove_stale_tmp(r->run_dir, run_files, 3, "dod-train");
        fs_remove_stale_tmp(r->ckpt_dir, ckpt_files, 2, "dod-train");
        fs_remove_stale_tmp(r->samples_dir, sample_files, 1, "dod-train");
        if (fs_write_text_atomic(cfg_path, r->config_text, err, errlen)) return -1;
    }

    int n_loaded = 0;  // stage 2: the frozen stage-1 tensors, on a fresh run and on resume alike
    // Rank 0 caches the encoded prompts in the run dir (made above); the other ranks encode them
    // without the cache (the same CPU computation), so no rank reads a file another is writing.
    ModelOptions in_run = *mo;
    if (r->rank == 0) snprintf(in_run.prompt_cache, sizeof in_run.prompt_cache, "%s/" MODEL_PROMPT_CACHE, r->run_dir);
    if (!(r->model = model_load(&in_run, &n_loaded, err, errlen))) return -1;
    ParamStore *ps = r->model->params(r->model->self);
    if (mo->stage == 2 && !r->quiet)
        fprintf(stderr, "dod-train: stage 2: %d stage-1 tensors from %s\n", n_loaded, mo->init_from);
    if (r->model->device == DEV_CUDA && !r->quiet)
        fprintf(stderr, "dod-train: on %s, %s, %s activations\n", dod_cuda_device_name(),
                mo->precision == MODEL_PRECISION_MIXED ? "mixed precision (bf16 frozen linear weights read as-is, TF32)"
                                                       : "f32 precision (TF32 off)",
                dtype_name(ag_activation_dtype()));
    else if (ag_activation_dtype() != DT_F32 && !r->quiet)
        fprintf(stderr, "dod-train: %s activations\n", dtype_name(ag_activation_dtype()));
    if (c->loss_lpips > 0) {   // frozen, stored like the model's frozen weights
        DType dt = mo->frozen_dtype == MODEL_FROZEN_BF16 ? DT_BF16 : DT_F32;
        if (!(r->lpips = lpips_load(c->lpips_vgg, c->lpips_lin, dt, err, errlen))) return -1;
        lpips_to_device(r->lpips, r->model->device);
        if (!r->quiet)
            fprintf(stderr, "dod-train: LPIPS (VGG16) from %s and %s, weight %g\n", c->lpips_vgg, c->lpips_lin,
                    c->loss_lpips);
    }
    int cap = params_count(ps);
    r->trainable = dod_calloc(sizeof(Tensor *) * (size_t)(cap ? cap : 1), "trainable list");
    r->n_trainable = params_trainable(ps, r->trainable, cap);
    if (r->n_trainable == 0) {
        snprintf(err, errlen, "model %s (stage %lld) has no trainable tensors", r->model->kind, mo->stage);
        return -1;
    }
    AdamWConfig ac = {.lr = (float)c->lr, .beta1 = (float)c->beta1, .beta2 = (float)c->beta2, .eps = (float)c->eps,
                      .weight_decay = (float)c->weight_decay};
    r->opt = adamw_new(r->trainable, r->n_trainable, ac);
    r->scalars = device_scalars_new(r->model->device, STEP_LOSS0 + (int)c->grad_accum);

    if (o->resume) {
        CheckpointInfo info;
        if (checkpoint_load(resume_path, r->trainable, r->n_trainable, r->opt, &info, err, errlen)) return -1;
        char diff[CFG_ERR_LEN];
        int bad = config_compare_text(c, info.config_text, diff, sizeof diff);
        if (bad) snprintf(err, errlen, "%s: the configuration differs from the checkpoint's:\n%s", resume_path, diff);
        else if (strcmp(info.model_kind, r->model->kind) || info.stage != mo->stage)
            snprintf(err, errlen, "%s: checkpoint of a %s stage-%d model, the configuration says %s stage %lld", resume_path,
                     info.model_kind, info.stage, r->model->kind, mo->stage), bad = -1;
        else if (info.step > c->steps)
            snprintf(err, errlen, "%s: checkpoint at step %lld is past [train] steps = %lld (raise it to continue the run)",
                     resume_path, (long long)info.step, c->steps), bad = -1;
        else if (info.seed != (uint64_t)mo->seed)
            snprintf(err, errlen, "%s: seed %llu, the configuration says %lld", resume_path,
                     (unsigned long long)info.seed, mo->seed), bad = -1;
        else if (info.loader_next != info.step * c->grad_accum * r->world) {   // the same micro-batches a step
            long long per_step = info.step ? (long long)(info.loader_next / info.step) : 0;
            snprintf(err, errlen, "%s: written with %lld micro-batches a step (%d process%s x grad_accum %lld); this run "
                     "has %d x %lld: keep processes x [optim] grad_accum the same", resume_path, per_step, info.world_size,
                     info.world_size == 1 ? "" : "es", per_step / info.world_size, r->world, c->grad_accum);
            bad = -1;
        }
        *start_step = info.step;
        checkpoint_info_free(&info);
        if (bad) return -1;
        if (!r->quiet) fprintf(stderr, "dod-train: resuming from %s (step %lld)\n", resume_path, (long long)*start_step);
        if (r->rank == 0 && trim_jsonl(r->jsonl_path, *start_step, err, errlen)) return -1;
    }

    LoaderConfig lc;
    loader_config_default(&lc);
    if (loader_parse_tasks(&lc, c->tasks, err, errlen)) return -1;
    lc.path = c->train_file;
    lc.crop = (int)c->crop;
    lc.flips = c->flips;
    lc.seed = (uint64_t)mo->seed;
    lc.n_threads = (int)c->loader_threads;
    lc.rank = r->rank;
    lc.world_size = r->world;
    int batch_n = 0;   // the step's memory is checked before the loader allocates its batches
    for (int t = 0; t < lc.n_tasks; t++) batch_n += lc.tasks[t].count;
    if (train_memory_check(r->model, r->trainable, r->n_trainable, c, loss_weights(r), batch_n, r->quiet, err, errlen))
        return -1;
    if (!(r->loader = loader_open(&lc, err, errlen))) return -1;
    r->feed = batch_feed_new(r->loader, r->model->device);
    if (r->comm || c->grad_accum > 1)
        r->sync = grad_sync_new(r->trainable, r->n_trainable, r->comm, c->dist_bucket_mb);
    grad_sync_check_replicas(r->comm, r->trainable, r->n_trainable, o->resume ? "after loading the checkpoint" : "at initialisation");
    if (r->rank != 0) return 0;
    if (c->val_file[0] && c->val_every > 0 && !(r->val = validator_open(c->val_file, (int)c->val_images, err, errlen)))
        return -1;
    if (!(r->jsonl = fopen(r->jsonl_path, "a"))) {
        snprintf(err, errlen, "%s: cannot open the metrics log: %s", r->jsonl_path, strerror(errno));
        return -1;
    }
    if (c->log_tensorboard) {   // a new file per process; on resume TensorBoard drops steps after the checkpoint
        char tb_dir[PATH_LEN + 8];
        snprintf(tb_dir, sizeof tb_dir, "%s/tb", r->run_dir);
        if (!(r->tb = tfevents_open(tb_dir, err, errlen))) return -1;
        if (o->resume) tfevents_session_start(r->tb, *start_step + 1);
        if (tfevents_flush(r->tb, err, errlen)) return -1;
    }
    return 0;
}

// The failure path of a step whose loss or gradient norm is not finite (on this process: bad_a is
// the first micro-batch whose loss is not, or -1; on others: others_bad processes said so). Names
// the first trainable tensor whose gradient holds NaN / inf (clipping keeps such elements
// non-finite), else the first parameter that does (an earlier update diverged), else says that all
// are finite (a loss that overflowed in the forward, e.g. from huge weights): these scans wait
// for the device, which only this path does. Writes (=) the message; returns TRAIN_FAILED_TOGETHER.
static int step_failure(Run *r, int64_t s, float lr, const double *v, int bad_a, int others_bad, char *err,
                        size_t errlen) {
    int A = (int)r->cfg->grad_accum;
    char what[256], where[512];
    if (bad_a >= 0)
        snprintf(what, sizeof what, "the loss is %g on micro-batch %lld", v[STEP_LOSS0 + bad_a],
                 (long long)((s * A + bad_a) * r->world + r->rank));
    else if (!isfinite(v[STEP_GRAD_NORM]))
        snprintf(what, sizeof what, "the gradient norm is %g", v[STEP_GRAD_NORM]);
    else
        snprintf(what, sizeof what, "%d other process%s saw a non-finite loss or gradient", others_bad,
                 others_bad == 1 ? "" : "es");
    int64_t at = 0;
    double bad = 0;
    int k = tensors_first_nonfinite(r->trainable, r->n_trainable, true, &at, &bad);
    if (k >= 0) {
        snprintf(where, sizeof where, "the gradient of %s holds %g at element %lld", r->trainable[k]->name, bad, (long long)at);
    } else if ((k = tensors_first_nonfinite(r->trainable, r->n_trainable, false, &at, &bad)) >= 0) {
        snprintf(where, sizeof where, "parameter %s holds %g at element %lld", r->trainable[k]->name, bad, (long long)at);
    } else {
        snprintf(where, sizeof where, "every gradient and parameter is finite (the forward overflowed)");
    }
    snprintf(err, errlen, "step %lld: %s (lr %g): %s; stopping without saving (resume from the last checkpoint, "
             "with a lower [optim] lr or after checking the data)", (long long)s + 1, what, (double)lr, where);
    return TRAIN_FAILED_TOGETHER;
}

// One optimizer step (see train/loop.h). Fills st. 0; -1 (a loader error); TRAIN_FAILED_TOGETHER (a
// non-finite loss or gradient norm on any process: every process returns it at the same step); or,
// with one process, TRAIN_INTERRUPTED (a stop requested between micro-batches: the partial step is
// dropped, parameters and optimizer as before it).
// Nothing inside the step waits for the device: the loss terms and the gradient norm are added into
// device scalars where they are computed and read back once, after the optimizer's kernels are queued.
// So a non-finite loss or gradient is seen after the update it spoiled; the run then stops without
// saving (the last checkpoint is the one to resume from). The gradients are zeroed after that read, so
// the failure path can still name the one at fault.
// Several processes: the sums read back are this process's; they, a stop request and a failure are
// then all-reduced on the host, so every rank reports the step's means over all micro-batches, and
// stops (or fails) at the same step. A stop is not agreed between micro-batches (that would be a
// host sync each): it takes effect at the end of the step.
static int train_step(Run *r, int64_t s, const LrSchedule *sched, TrainStepStats *st, char *err, size_t errlen) {
    const TrainConfig *c = r->cfg;
    int A = (int)c->grad_accum;
    uint64_t noise_key = rng_key((uint64_t)c->model.seed, TRAIN_NOISE_STREAM);
    const DodLossWeights weights = loss_weights(r);
    device_scalars_zero(r->scalars);
    for (int a = 0; a < A; a++) {
        if (a > 0 && stop_requested && !r->comm) {   // one process: a stop between micro-batches drops the step
            for (int i = 0; i < r->n_trainable; i++) tensor_zero_grad(r->trainable[i]);
            ag_step_reset();
            return TRAIN_INTERRUPTED;
        }
        int64_t b = s * A + a;                     // this process's loader step (the loader adds rank and world)
        int64_t g = b * r->world + r->rank;        // the global micro-batch (train/loop.h)
        ag_step_reset();
        Tensor *lq, *hq;
        if (batch_feed_get(r->feed, b, &lq, &hq, err, errlen)) return -1;
        Tensor *out = r->model->forward(r->model->self, lq, rng_key(noise_key, (uint64_t)g), true);
        DodLossTerms l = dod_loss_terms(out, hq, weights);
        device_scalars_add(r->scalars, STEP_LOSS0 + a, l.total);
        device_scalars_add(r->scalars, STEP_MSE, l.mse);
        if (l.ssim_loss) device_scalars_add(r->scalars, STEP_SSIM_LOSS, l.ssim_loss);
        if (l.lpips) device_scalars_add(r->scalars, STEP_LPIPS, l.lpips);
        if (r->sync) grad_sync_begin(r->sync, a, A);
        ag_backward(op_scale(l.total, 1.0f / (float)(A * r->world)));
        // Loader step b + 1 is this process's next micro-batch (global (b + 1) * world + rank, the next
        // (s, a) in order), fetched while the device works on batch b; before grad_sync_end, which on the
        // step's last micro-batch waits for the gradient all-reduce.
        if (b + 1 < c->steps * A) batch_feed_prefetch(r->feed, b + 1);
        if (r->sync) grad_sync_end(r->sync);
    }
    ag_step_reset();
    clip_grad_norm_into(r->trainable, r->n_trainable, c->clip_norm, r->scalars, STEP_GRAD_NORM);
    float lr = lr_at(sched, s);
    adamw_step(r->opt, lr);
    const double *v = device_scalars_read(r->scalars);  // the step's one wait for the device
    // This process's loss, MSE, 1 - SSIM and LPIPS summed over its micro-batches; a stop request; a
    // non-finite loss or gradient norm.
    double sums[6] = {0, v[STEP_MSE], v[STEP_SSIM_LOSS], v[STEP_LPIPS], 0, 0};
    int bad_a = -1;
    for (int a = 0; a < A; a++) {
        float lv = (float)v[STEP_LOSS0 + a];
        if (!isfinite(lv) && bad_a < 0) bad_a = a;
        sums[0] += lv;
    }
    bool bad_here = bad_a >= 0 || !isfinite(v[STEP_GRAD_NORM]);
    sums[5] = bad_here;
    if (r->comm) {   // the step's means over every process's micro-batches; a stop or failure anywhere stops all
        sums[4] = stop_requested;
        comm_allreduce_f64(r->comm, sums, 6, COMM_SUM, "summing the step's losses");
        r->stop_agreed = sums[4] > 0;
    }
    if (sums[5] > 0) return step_failure(r, s, lr, v, bad_a, (int)sums[5] - bad_here, err, errlen);
    for (int i = 0; i < r->n_trainable; i++) tensor_zero_grad(r->trainable[i]);
    double n_micro = (double)A * r->world;
    *st = (TrainStepStats){.step = s + 1, .loss = sums[0] / n_micro, .mse = sums[1] / n_micro, .ssim = sums[2] / n_micro,
                           .lpips = sums[3] / n_micro, .lr = lr, .grad_norm = v[STEP_GRAD_NORM]};
    return 0;
}

static int run_validation(Run *r, int64_t step, double elapsed, bool quiet, char *err, size_t errlen) {
    char grid[PATH_LEN + 64], name[64];
    checkpoint_name(step, name, sizeof name);
    snprintf(grid, sizeof grid, "%s/step_%07lld.png", r->samples_dir, (long long)step);
    ValResult vr;
    if (validator_run(r->val, r->model, r->cfg->val_grid ? grid : NULL, &vr, err, errlen)) return -1;
    fprintf(r->jsonl,
            "{\"step\": %lld, \"val_psnr\": %.6f, \"val_ssim\": %.6f, \"val_input_psnr\": %.6f, "
            "\"val_input_ssim\": %.6f, \"val_images\": %d, \"time_s\": %.3f}\n",
            (long long)step, vr.all.psnr, vr.all.ssim, vr.all.psnr_input, vr.all.ssim_input, vr.all.images, elapsed);
    fflush(r->jsonl);
    if (!quiet)
        fprintf(stderr,
                "dod-train: validation at step %lld over %d images: restored PSNR %.3f dB SSIM %.4f | degraded "
                "input PSNR %.3f dB SSIM %.4f | gain %+.3f dB%s%s\n",
                (long long)step, vr.all.images, vr.all.psnr, vr.all.ssim, vr.all.psnr_input, vr.all.ssim_input,
                vr.all.psnr - vr.all.psnr_input,
                r->cfg->val_grid ? "; grid " : "", r->cfg->val_grid ? grid : "");
    if (!quiet) val_result_print_tasks(&vr, stderr, "dod-train:   ");
    if (step_log_tensorboard_validation(r->tb, step, &vr, r->cfg->val_grid ? grid : NULL, err, errlen)) return -1;
    return tfevents_flush(r->tb, err, errlen);
}

int train_run(const TrainOptions *o, char *err, size_t errlen) {
    const TrainConfig *c = &o->cfg;
    Run r;
    memset(&r, 0, sizeof r);
    int64_t start = 0;
    stop_requested = 0;
    if (run_setup(&r, o, &start, err, errlen)) {
        run_free(&r);
        return -1;
    }
    LrSchedule sched = {.kind = c->schedule == CFG_SCHEDULE_COSINE ? LR_COSINE : LR_CONSTANT, .base_lr = (float)c->lr,
                        .warmup_steps = c->warmup, .total_steps = c->steps};
    double t0 = dod_now_seconds(), last_print = -1;
    size_t train_peak = 0;
    int rc = 0;
    int64_t done = start;
    char ckpt_path[PATH_LEN + 64] = "";
    for (int64_t s = start; s < c->steps; s++) {
        TrainStepStats st;
        int step_rc = train_step(&r, s, &sched, &st, err, errlen);
        if (step_rc == TRAIN_INTERRUPTED) {   // one process: the checkpoint is of the steps completed so far
            bool saved_already = done % c->ckpt_every == 0;   // the previous step's own save
            if (done > start && !saved_already && save_checkpoint(&r, done, ckpt_path, sizeof ckpt_path, err, errlen)) {
                rc = -1;
                break;
            }
            fprintf(stderr, "dod-train: interrupted during step %lld (dropped); %s%s\n", (long long)s + 1,
                    done > start ? "checkpoint " : "nothing new to save", done > start ? ckpt_path : "");
            if (done > start || start > 0)
                fprintf(stderr, "dod-train: continue with: dod-train --resume %s\n", r.run_dir);
            rc = TRAIN_INTERRUPTED;
            break;
        }
        if (step_rc) {
            rc = step_rc;
            break;
        }
        done = s + 1;
        size_t step_peak = arena_peak_reset();  // activation memory of this step (validation excluded)
        if (step_peak > train_peak) train_peak = step_peak;
        double elapsed = dod_now_seconds() - t0, its = (done - start) / (elapsed > 1e-9 ? elapsed : 1e-9);
        if (o->on_step) o->on_step(o->on_step_ctx, &st);
        bool stop = r.comm ? r.stop_agreed : stop_requested;   // several processes decide together
        if (!r.quiet && (elapsed - last_print >= 1.0 || done == c->steps || last_print < 0)) {
            char eta[32];
            format_duration((c->steps - done) / its, eta, sizeof eta);
            step_log_progress(stderr, c, &st, its, eta);
            last_print = elapsed;
        }
        if (r.jsonl && (done % c->log_every == 0 || done == c->steps)) {
            char device_mem[96] = "";   // CUDA: the step's activations live in the device arena
            if (r.model->device == DEV_CUDA) {
                DodCudaMemStats ms = dod_cuda_mem_stats();
                snprintf(device_mem, sizeof device_mem, ", \"cuda_arena_peak_mib\": %.1f, \"cuda_reserved_peak_mib\": %.1f",
                         ms.arena_peak_bytes / 1048576.0, ms.peak_reserved_bytes / 1048576.0);
            }
            char lpips[48] = "";
            if (c->loss_lpips > 0) snprintf(lpips, sizeof lpips, ", \"lpips\": %.9g", st.lpips);
            fprintf(r.jsonl, "{\"step\": %lld, \"loss\": %.9g, \"mse\": %.9g, \"ssim_loss\": %.9g%s, \"lr\": %.9g, "
                             "\"grad_norm\": %.9g, \"it_s\": %.4f, \"time_s\": %.3f, \"step_arena_mib\": %.1f%s}\n",
                    (long long)done, st.loss, st.mse, st.ssim, lpips, st.lr, st.grad_norm, its, elapsed,
                    step_peak / 1048576.0, device_mem);
            fflush(r.jsonl);
            step_log_tensorboard_step(r.tb, c, &st, its);
            if (tfevents_flush(r.tb, err, errlen)) {
                rc = -1;
                break;
            }
        }
        bool saved = false;
        if (done % c->ckpt_every == 0 || done == c->steps || stop) {
            grad_sync_check_replicas(r.comm, r.trainable, r.n_trainable, "at a checkpoint");
            if (r.rank == 0 && save_checkpoint(&r, done, ckpt_path, sizeof ckpt_path, err, errlen)) {
                rc = -1;
                break;
            }
            saved = true;
        }
        bool validate = c->val_file[0] && c->val_every > 0 && (done % c->val_every == 0 || done == c->steps);
        if (r.val && validate && run_validation(&r, done, elapsed, r.quiet, err, errlen)) {
            rc = -1;
            break;
        }
        if (r.comm && (saved || validate)) comm_barrier(r.comm, "waiting for rank 0's checkpoint and validation");
        arena_peak_reset();  // validation's full-size restores are not part of the step
        if (stop && saved && done < c->steps) {
            if (r.rank == 0) fprintf(stderr, "dod-train: interrupted after step %lld; checkpoint %s\n"
                            "dod-train: continue with: dod-train --resume %s\n", (long long)done, ckpt_path, r.run_dir);
            rc = TRAIN_INTERRUPTED;
            break;
        }
    }
    if (rc == 0 && !r.quiet) {
        fprintf(stderr, "dod-train: done: %lld steps in %s; checkpoint %s\n", (long long)done, r.run_dir,
                ckpt_path[0] ? ckpt_path : "(none new)");
        fprintf(stderr, "dod-train: memory: training step activations %.1f MiB (arena peak), process peak RSS %.1f MiB\n",
                train_peak / 1048576.0, dod_peak_rss_mib());
        if (r.model->device == DEV_CUDA) dod_cuda_print_mem_report("dod-train");
        if (r.comm) {
            GradSyncStats gss = grad_sync_stats(r.sync);
            fprintf(stderr, "dod-train: gradient all-reduce: %.2f MiB a step in %d buckets; the last step started %d of "
                            "them during its backward and waited %.1f ms after it\n",
                    gss.bytes / 1048576.0, gss.buckets, gss.early_buckets, gss.wait_s * 1e3);
        }
    }
    run_free(&r);
    return rc;
}

#else
int train_run(const TrainOptions *o, char *err, size_t errlen) {
    (void)o;
    snprintf(err, errlen, "training needs HDF5 (the data loader) and iniparser (the configuration); this build "
                          "lacks %s", 
#ifndef DOD_HAVE_HDF5
             "HDF5"
#else
             "iniparser"
#endif
    );
    return -1;
}
#endif
