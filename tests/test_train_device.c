// dod-train's loop with [model] device = cuda, on the toy model and a tiny generated dataset.
// Without a usable GPU (any machine, any build): train_run fails with "no CUDA device: <reason>"
// naming the key, before it writes the run dir. With one (then SKIP lines are absent):
//  - CUDA vs CPU, same configuration: per-step losses and gradient norms agree (step 1 within
//    1e-4 relative: the same parameters, only the kernels differ; later steps within 1e-3);
//  - CUDA: 2 steps, a stop, --resume for 2 more gives the uninterrupted CUDA run's losses (within
//    1e-6 relative; whether they are bitwise equal is printed, the contract does not promise it);
//  - validation runs on the device model (the metrics line and the grid are written);
//  - the CUDA run's checkpoint resumes on the CPU (device may change on resume).
#include "tests/check.h"

#if defined(DOD_HAVE_HDF5) && defined(DOD_HAVE_INIPARSER)
#include <math.h>
#include <signal.h>

#include "autograd/cuda/cuda_backend.h"
#include "train/loop.h"
#include "tests/train_test_util.h"

static char scratch[256];

static TrainConfig toy_config(const char *data, const char *run_dir, const char *device) {
    char dev[64];
    snprintf(dev, sizeof dev, "model.device=%s", device);
    const char *const sets[] = {
        "model.kind=toy", "model.toy_width=6", "model.frozen_dtype=f32", dev, "data.tasks=denoise:2",
        "data.crop=24", "data.threads=0", "optim.lr=2e-3", "optim.grad_accum=2", "optim.clip_norm=0.05",
        "loss.mse=1", "loss.ssim=0", "train.steps=4", "log.every=1", "checkpoint.every=2",
        "checkpoint.keep_last=0", "val.every=2", "val.images=2"};
    return train_test_config("toy_config", sets, sizeof sets / sizeof sets[0], data, run_dir);
}

static bool close_rel(double a, double b, double rtol) { return fabs(a - b) <= rtol * fabs(a) + 1e-9; }

int main(void) {
    data_scratch_dir("traindevice", scratch, sizeof scratch);
    char data[512], dir[600], err[16384], path[1024];
    snprintf(data, sizeof data, "%s/toy.h5", scratch);
    train_test_dataset(data, false, 2000);  // one task: denoise
    train_install_signal_handlers();

    if (!dod_cuda_available()) {   // the refusal, before anything is written
        snprintf(dir, sizeof dir, "%s/run_nogpu", scratch);
        TrainConfig c = toy_config(data, dir, "cuda");
        Record r = {0};
        int rc = train_test_run(&c, false, &r, err, sizeof err);
        CHECK(rc == -1 && strstr(err, "no CUDA device: ") && strstr(err, "[model] device = cuda, --set model.device=cuda") &&
                  r.n == 0, "no GPU: rc %d: %s", rc, err);
        CHECK(!data_file_exists(dir), "no GPU: %s was not created", dir);
        printf("SKIP: CUDA training: no CUDA device (%s)\n", dod_cuda_unavailable_reason());
        data_rm_rf(scratch);
        return check_summary();
    }
    printf("CUDA training on %s\n", dod_cuda_device_name());

    // CPU and CUDA, uninterrupted.
    Record rc_cpu = {0}, rc_gpu = {0};
    snprintf(dir, sizeof dir, "%s/run_cpu", scratch);
    TrainConfig ccpu = toy_config(data, dir, "cpu");
    int rc = train_test_run(&ccpu, false, &rc_cpu, err, sizeof err);
    CHECK(rc == 0 && rc_cpu.n == 4, "cpu run: rc %d: %s", rc, rc ? err : "");
    char dir_gpu[600];
    snprintf(dir_gpu, sizeof dir_gpu, "%s/run_cuda", scratch);
    TrainConfig cgpu = toy_config(data, dir_gpu, "cuda");
    rc = train_test_run(&cgpu, false, &rc_gpu, err, sizeof err);
    CHECK(rc == 0 && rc_gpu.n == 4, "cuda run: rc %d: %s", rc, rc ? err : "");
    for (int i = 0; i < 4 && i < rc_cpu.n && i < rc_gpu.n; i++) {
        double rtol = i == 0 ? 1e-4 : 1e-3;
        printf("step %d: loss cpu %.9g cuda %.9g | grad norm cpu %.9g cuda %.9g\n", i + 1, rc_cpu.s[i].loss,
               rc_gpu.s[i].loss, rc_cpu.s[i].grad_norm, rc_gpu.s[i].grad_norm);
        CHECK(close_rel(rc_cpu.s[i].loss, rc_gpu.s[i].loss, rtol) && close_rel(rc_cpu.s[i].grad_norm, rc_gpu.s[i].grad_norm, rtol),
              "step %d: cuda loss %.9g / grad norm %.9g vs cpu %.9g / %.9g (rtol %g)", i + 1, rc_gpu.s[i].loss,
              rc_gpu.s[i].grad_norm, rc_cpu.s[i].loss, rc_cpu.s[i].grad_norm, rtol);
    }
    CHECK(rc_gpu.n == 4 && rc_gpu.s[0].loss != rc_gpu.s[1].loss && rc_gpu.s[0].loss > 0, "cuda losses are live");
    snprintf(path, sizeof path, "%s/samples/step_0000004.png", dir_gpu);
    CHECK(data_file_exists(path), "validation grid of the cuda run: %s", path);

    // CUDA: 2 steps, stop, resume.
    Record rr = {.stop_at = 2};
    snprintf(dir, sizeof dir, "%s/run_cuda_resume", scratch);
    TrainConfig cres = toy_config(data, dir, "cuda");
    rc = train_test_run(&cres, false, &rr, err, sizeof err);
    CHECK(rc == TRAIN_INTERRUPTED && rr.n == 2, "interrupted cuda run: rc %d after %d steps: %s", rc, rr.n, err);
    rr.stop_at = 0;
    rc = train_test_run(&cres, true, &rr, err, sizeof err);
    CHECK(rc == 0 && rr.n == 4, "resumed cuda run: rc %d, %d steps: %s", rc, rr.n, rc ? err : "");
    bool bitwise = rr.n == 4 && rc_gpu.n == 4;
    for (int i = 0; i < 4 && i < rr.n && i < rc_gpu.n; i++) {
        bitwise = bitwise && !memcmp(&rr.s[i].loss, &rc_gpu.s[i].loss, sizeof(double));
        CHECK(close_rel(rr.s[i].loss, rc_gpu.s[i].loss, 1e-6), "step %d: resumed cuda loss %.17g vs %.17g", i + 1,
              rr.s[i].loss, rc_gpu.s[i].loss);
    }
    printf("cuda resume: losses %s the uninterrupted cuda run's\n", bitwise ? "bitwise equal to" : "close to (not bitwise)");

    // The CUDA run's checkpoint continues on the CPU.
    TrainConfig cmove = cgpu;
    config_set(&cmove, "model.device=cpu", err, sizeof err);
    config_set(&cmove, "train.steps=5", err, sizeof err);
    Record rm = {0};
    rc = train_test_run(&cmove, true, &rm, err, sizeof err);
    CHECK(rc == 0 && rm.n == 1 && rm.s[0].step == 5 && isfinite(rm.s[0].loss), "cuda checkpoint resumed on the cpu: %s",
          rc ? err : "");

    data_rm_rf(scratch);
    return check_summary();
}
#else
int main(void) {
    printf("test_train_device: skipped (needs HDF5 and iniparser)\n");
    return check_summary();
}
#endif
