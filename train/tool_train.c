// dod-train: train a DOD (or toy) model from an INI configuration. See docs/training.md.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"
#include "train/comm.h"
#include "train/config.h"
#include "train/loop.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dod-train --config FILE [--set section.key=value ...] [--run-dir DIR]\n"
            "       dod-train --resume RUN_DIR [--config FILE] [--set section.key=value ...]\n"
            "       dod-train --config FILE --print-config      print the resolved configuration and exit\n"
            "       dod-train --config-reference                print the Markdown key reference and exit\n"
            "\n"
            "  --config FILE        INI configuration (configs/aio3.ini, configs/aio5.ini, configs/toy.ini)\n"
            "  --set S.K=V          override one key after the file, e.g. --set optim.lr=1e-4 (repeatable)\n"
            "  --run-dir DIR        same as --set train.run_dir=DIR\n"
            "  --resume RUN_DIR     continue RUN_DIR from its latest checkpoint, bit-exactly; the configuration\n"
            "                       is RUN_DIR/config.ini (or --config) and must match the checkpoint's except\n"
            "                       for keys marked \"may change\" in the reference (steps, logging, ...)\n"
            "  --print-config       resolve and check the configuration, print it, exit\n"
            "  --config-reference   print every key with type, default, range and meaning (Markdown)\n"
            "  --quiet              no progress lines\n"
            "  --version            version, git revision and dependencies of this build\n"
            "  -h, --help           this text\n"
            "\n"
            "Run dir: config.ini (resolved copy), metrics.jsonl, checkpoints/step_NNNNNNN.safetensors + latest,\n"
            "samples/step_NNNNNNN.png. Ctrl-C (SIGINT/SIGTERM) stops at the next micro-batch (several processes:\n"
            "at the end of the step), saves a checkpoint of the completed steps, exits 130.\n"
            "Several processes: mpirun -np N dod-train ..., srun dod-train ..., torchrun --no-python\n"
            "--nproc-per-node N dod-train ... ([dist] keys; docs/training.md, \"Several processes\").\n");
}

#ifdef DOD_HAVE_INIPARSER
int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-train")) return 0;
    const char *config_path = NULL, *resume_dir = NULL, *run_dir = NULL;
    const char **sets = calloc((size_t)argc, sizeof(char *));
    int n_sets = 0, print_config = 0, reference = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_arg = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(stdout), 0;
        else if (!strcmp(a, "--config") && has_arg) config_path = argv[++i];
        else if (!strcmp(a, "--set") && has_arg) sets[n_sets++] = argv[++i];
        else if (!strcmp(a, "--resume") && has_arg) resume_dir = argv[++i];
        else if (!strcmp(a, "--run-dir") && has_arg) run_dir = argv[++i];
        else if (!strcmp(a, "--print-config")) print_config = 1;
        else if (!strcmp(a, "--config-reference")) reference = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else {
            fprintf(stderr, "dod-train: %s: %s\n", a,
                    (!strcmp(a, "--config") || !strcmp(a, "--set") || !strcmp(a, "--resume") || !strcmp(a, "--run-dir"))
                        ? "needs a value" : "unknown argument (see --help)");
            return 2;
        }
    }
    if (reference) {
        config_write_reference(stdout);
        return 0;
    }
    char cfg_from_run[4200];
    if (resume_dir && !config_path) {
        snprintf(cfg_from_run, sizeof cfg_from_run, "%s/config.ini", resume_dir);
        config_path = cfg_from_run;
    }
    if (!config_path) {
        fprintf(stderr, "dod-train: give --config FILE or --resume RUN_DIR (see --help)\n");
        return 2;
    }
    TrainOptions o;
    memset(&o, 0, sizeof o);
    static char err[CFG_ERR_LEN];
    config_defaults(&o.cfg);
    if (config_load_file(&o.cfg, config_path, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int i = 0; i < n_sets; i++)
        if (config_set(&o.cfg, sets[i], err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    const char *dir = resume_dir ? resume_dir : run_dir;
    if (resume_dir && run_dir && strcmp(resume_dir, run_dir)) {
        fprintf(stderr, "dod-train: --resume %s and --run-dir %s disagree\n", resume_dir, run_dir);
        return 2;
    }
    if (dir) {
        char assignment[4200];
        snprintf(assignment, sizeof assignment, "train.run_dir=%s", dir);
        if (config_set(&o.cfg, assignment, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    if (config_validate(&o.cfg, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (print_config) {
        char *text = config_to_text(&o.cfg);
        fputs(text, stdout);
        free(text);
        return 0;
    }
    o.resume = resume_dir != NULL;
    o.quiet = quiet;
    static char run_err[8192 + CFG_ERR_LEN];
    // ---- several processes: join the others the launcher started (train/comm.h) ----
    CommOptions co = {.backend = (CommBackend)o.cfg.dist_backend, .cuda = o.cfg.model.device == DEV_CUDA,
                      .timeout_s = (double)o.cfg.dist_timeout, .port = (int)o.cfg.dist_port};
    Comm *comm = comm_create(&co, run_err, sizeof run_err);
    if (!comm) {
        fprintf(stderr, "dod-train: %s\n", run_err);
        return 1;
    }
    if (comm_backend(comm) != COMM_NONE && comm_rank(comm) == 0 && !quiet) {
        char line[1024];
        comm_describe(comm, line, sizeof line);
        fprintf(stderr, "dod-train: data parallel: %s\n", line);
    }
    o.comm = comm;
    // ---- end of the several-processes part ----
    train_install_signal_handlers();
    int rc = train_run(&o, run_err, sizeof run_err);
    free(sets);
    if (rc < 0) {
        if (comm_world(comm) > 1) {
            fprintf(stderr, "dod-train: rank %d of %d: %s\n", comm_rank(comm), comm_world(comm), run_err);
            // the others must not wait for this one until the timeout, unless they stop on it too
            if (rc != TRAIN_FAILED_TOGETHER) comm_abort(comm, 1);
        } else {
            fprintf(stderr, "dod-train: %s\n", run_err);
        }
        comm_destroy(comm);
        return 1;
    }
    comm_destroy(comm);
    return rc;
}
#else
int main(int argc, char **argv) {
    if (dod_version_requested(argc, argv, "dod-train")) return 0;
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return usage(stdout), 0;
    fprintf(stderr, "dod-train: this build has no iniparser (Debian: apt-get install libiniparser-dev, then re-run cmake)\n");
    return 1;
}
#endif
