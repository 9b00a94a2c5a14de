// Step and validation reports of the training loop (see train/step_log.h).
#include "train/step_log.h"

int step_log_terms(const TrainConfig *c, const TrainStepStats *st, StepLossTerm terms[STEP_LOG_MAX_TERMS]) {
    int n = 0;
    if (c->loss_mse > 0) terms[n++] = (StepLossTerm){"mse", st->mse};
    if (c->loss_ssim > 0) terms[n++] = (StepLossTerm){"1-ssim", st->ssim};
    if (c->loss_lpips > 0) terms[n++] = (StepLossTerm){"lpips", st->lpips};
    return n;
}

void step_log_progress(FILE *f, const TrainConfig *c, const TrainStepStats *st, double it_per_s, const char *eta) {
    StepLossTerm terms[STEP_LOG_MAX_TERMS];
    int n = step_log_terms(c, st, terms);
    fprintf(f, "step %lld/%lld | loss %.5f", (long long)st->step, c->steps, st->loss);
    for (int i = 0; i < n; i++) fprintf(f, " %s %.5f", terms[i].name, terms[i].value);
    fprintf(f, " | lr %.3g | %.2f it/s | ETA %s\n", st->lr, it_per_s, eta);
}

void step_log_tensorboard_step(TfEvents *tb, const TrainConfig *c, const TrainStepStats *st, double it_per_s) {
    if (!tb) return;
    StepLossTerm terms[STEP_LOG_MAX_TERMS];
    int n = step_log_terms(c, st, terms);
    char tag[96];
    tfevents_scalar(tb, "train/loss", st->step, (float)st->loss);
    for (int i = 0; i < n; i++) {
        snprintf(tag, sizeof tag, "train/%s", terms[i].name);
        tfevents_scalar(tb, tag, st->step, (float)terms[i].value);
    }
    tfevents_scalar(tb, "train/lr", st->step, (float)st->lr);
    tfevents_scalar(tb, "train/grad_norm", st->step, (float)st->grad_norm);
    tfevents_scalar(tb, "train/it_per_s", st->step, (float)it_per_s);
}

int step_log_tensorboard_validation(TfEvents *tb, int64_t step, const ValResult *vr, const char *grid_path, char *err,
                                    size_t errlen) {
    if (!tb) return 0;
    const EvalScores *all = &vr->all;
    tfevents_scalar(tb, "val/psnr", step, (float)all->psnr);
    tfevents_scalar(tb, "val/ssim", step, (float)all->ssim);
    tfevents_scalar(tb, "val/psnr_input", step, (float)all->psnr_input);
    tfevents_scalar(tb, "val/ssim_input", step, (float)all->ssim_input);
    tfevents_scalar(tb, "val/psnr_gain", step, (float)(all->psnr - all->psnr_input));
    char tag[96];
    for (int t = 0; t < vr->n_tasks; t++) {
        snprintf(tag, sizeof tag, "val_psnr/%s", vr->task[t].name);
        tfevents_scalar(tb, tag, step, (float)vr->task[t].scores.psnr);
        snprintf(tag, sizeof tag, "val_ssim/%s", vr->task[t].name);
        tfevents_scalar(tb, tag, step, (float)vr->task[t].scores.ssim);
    }
    return grid_path ? tfevents_image_png_file(tb, "val/grid", step, grid_path, err, errlen) : 0;
}
