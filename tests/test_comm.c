// The communicator (train/comm.h) without a launcher program:
//  - launcher detection from the environment: OpenMPI, torchrun (MASTER_ADDR/PORT; torchrun's agent
//    store), Slurm job steps (a batch script without SLURM_STEP_NUM_TASKS is one process), the
//    priority between them, and the errors (not an integer, rank outside the world);
//  - the tcp backend with 3 forked processes on loopback: f64 sum / min / max, the f32 gradient
//    all-reduce summed in rank order (values whose sum depends on the order), several buffers
//    started then awaited, broadcast, barrier; ranks that disagree on the next collective fail
//    the job with a message naming both sides;
//  - backend resolution refusals (none with 2 processes, nccl on the CPU, mpi/tcp on a GPU);
//  - [dist] backend's values match CommBackend's (dod-train casts one to the other).
// The multi-process training itself is tests/cli_dist.sh.
#include "tests/check.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "train/comm.h"
#ifdef DOD_HAVE_INIPARSER
#include "train/config.h"
#endif

static const char *const VARS[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "RANK",
                                   "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                                   "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "TORCHELASTIC_USE_AGENT_STORE"};

static void clear_env(void) {
    for (size_t i = 0; i < sizeof VARS / sizeof VARS[0]; i++) unsetenv(VARS[i]);
}

// Sets "NAME=VALUE" pairs after clearing every launcher variable; then detects (=).
static int detect_with(CommLaunch *l, char *err, size_t errlen, const char *const *kv, int n) {
    clear_env();
    for (int i = 0; i < n; i++) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", kv[i]);
        char *eq = strchr(buf, '=');
        *eq = 0;
        setenv(buf, eq + 1, 1);
    }
    err[0] = 0;
    return comm_detect_launcher(l, err, errlen);
}
#define DETECT(l, err, ...) detect_with(l, err, sizeof err, (const char *const[]){__VA_ARGS__}, \
                                        (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(char *)))

static void test_detection(void) {
    CommLaunch l;
    char err[512];
    CHECK(DETECT(&l, err, "UNRELATED=1") == 0 && l.kind == COMM_LAUNCHER_NONE && l.world == 1 && l.rank == 0, "none");
    CHECK(DETECT(&l, err, "OMPI_COMM_WORLD_RANK=3", "OMPI_COMM_WORLD_SIZE=8", "OMPI_COMM_WORLD_LOCAL_RANK=1") == 0 &&
              l.kind == COMM_LAUNCHER_OPENMPI && l.rank == 3 && l.world == 8 && l.local_rank == 1,
          "openmpi: kind %d rank %d world %d local %d", l.kind, l.rank, l.world, l.local_rank);
    CHECK(DETECT(&l, err, "RANK=5", "WORLD_SIZE=16", "LOCAL_RANK=5", "MASTER_ADDR=node7", "MASTER_PORT=29500") == 0 &&
              l.kind == COMM_LAUNCHER_TORCHRUN && l.rank == 5 && l.world == 16 && l.local_rank == 5 &&
              !strcmp(l.master_addr, "node7") && l.master_port == 29500 && !l.agent_store,
          "torchrun: kind %d %s:%d", l.kind, l.master_addr, l.master_port);
    CHECK(DETECT(&l, err, "RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=29500", "TORCHELASTIC_USE_AGENT_STORE=True") == 0 &&
              l.agent_store && l.local_rank == 0, "torchrun agent store");
    CHECK(DETECT(&l, err, "RANK=1", "WORLD_SIZE=2") == 0 && l.kind == COMM_LAUNCHER_NONE,
          "RANK without MASTER_ADDR/PORT is not torchrun: kind %d", l.kind);
    CHECK(DETECT(&l, err, "SLURM_PROCID=9", "SLURM_STEP_NUM_TASKS=16", "SLURM_LOCALID=1") == 0 &&
              l.kind == COMM_LAUNCHER_SLURM && l.rank == 9 && l.world == 16 && l.local_rank == 1 && !l.master_addr[0],
          "slurm step");
    CHECK(DETECT(&l, err, "SLURM_PROCID=0", "SLURM_STEP_NUM_TASKS=2", "MASTER_ADDR=n0", "MASTER_PORT=4000") == 0 &&
              l.kind == COMM_LAUNCHER_SLURM && !strcmp(l.master_addr, "n0") && l.master_port == 4000, "slurm with MASTER_ADDR");
    CHECK(DETECT(&l, err, "SLURM_PROCID=0", "SLURM_NTASKS=8") == 0 && l.kind == COMM_LAUNCHER_NONE,
          "a batch script (no job step) is one process");
    CHECK(DETECT(&l, err, "OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=2", "RANK=4", "WORLD_SIZE=8", "MASTER_ADDR=a",
                 "MASTER_PORT=1", "SLURM_PROCID=3", "SLURM_STEP_NUM_TASKS=4") == 0 &&
              l.kind == COMM_LAUNCHER_OPENMPI && l.rank == 1, "mpirun wins over torchrun and Slurm");
    CHECK(DETECT(&l, err, "RANK=4", "WORLD_SIZE=8", "MASTER_ADDR=a", "MASTER_PORT=1", "SLURM_PROCID=0",
                 "SLURM_STEP_NUM_TASKS=1") == 0 && l.kind == COMM_LAUNCHER_TORCHRUN && l.rank == 4,
          "torchrun inside a Slurm step is torchrun");
    CHECK(DETECT(&l, err, "RANK=x", "WORLD_SIZE=2", "MASTER_ADDR=a", "MASTER_PORT=1") == -1 &&
              strstr(err, "environment: RANK=x is not an integer"), "bad RANK: %s", err);
    CHECK(DETECT(&l, err, "OMPI_COMM_WORLD_RANK=2", "OMPI_COMM_WORLD_SIZE=2") == -1 &&
              strstr(err, "OMPI_COMM_WORLD_RANK=2 is not below OMPI_COMM_WORLD_SIZE=2"), "rank outside: %s", err);
    CHECK(DETECT(&l, err, "RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=a", "MASTER_PORT=70000") == -1 &&
              strstr(err, "MASTER_PORT=70000 is not an integer in [1, 65535]"), "bad port: %s", err);
    CHECK(DETECT(&l, err, "OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=0") == -1 &&
              strstr(err, "OMPI_COMM_WORLD_SIZE=0 is not an integer in [1, "), "world 0: %s", err);
    clear_env();
}

static void test_refusals(void) {
    char err[512];
    clear_env();
    setenv("OMPI_COMM_WORLD_RANK", "0", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    CommOptions o = {.backend = COMM_NONE, .timeout_s = 5};
    CHECK(!comm_create(&o, err, sizeof err) && strstr(err, "OpenMPI (mpirun) started 2 processes but [dist] backend = none"),
          "none with 2 processes: %s", err);
    clear_env();
    o = (CommOptions){.backend = COMM_NCCL, .cuda = false, .timeout_s = 5};
    CHECK(!comm_create(&o, err, sizeof err) && strstr(err, "needs [model] device = cuda"), "nccl on the CPU: %s", err);
    o = (CommOptions){.backend = COMM_TCP, .cuda = true, .timeout_s = 5};
    CHECK(!comm_create(&o, err, sizeof err) && strstr(err, "backend = tcp reduces host memory"), "tcp on a GPU: %s", err);
    o = (CommOptions){.backend = COMM_AUTO, .timeout_s = 5};   // one process: none
    Comm *c = comm_create(&o, err, sizeof err);
    CHECK(c && comm_backend(c) == COMM_NONE && comm_world(c) == 1 && comm_rank(c) == 0, "auto, one process: none");
    double x = 3;
    if (c) comm_allreduce_f64(c, &x, 1, COMM_SUM, "test");
    CHECK(x == 3, "world 1 all-reduce is the identity");
    comm_destroy(c);
}

// ---- tcp with 3 forked processes ----------------------------------------------------------------------
#define W 3
#define N_F32 300000   // more than one receive chunk at rank 0

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len))
        dod_fatal("test_comm", "cannot find a free port");
    close(fd);
    return ntohs(a.sin_port);
}

// What rank r contributes to element i of the f32 all-reduce: rank order matters for the sum.
static float f32_value(int r, int i) {
    static const float v[W] = {1.0f, 1e8f, -1e8f};
    return v[r] * (float)(1 + i % 7);
}

// One rank's work; exit status 0 when every result was right. mismatch: rank 2 calls a broadcast
// where the others call an all-reduce (the job must fail).
static int rank_main(int rank, int port, bool mismatch) {
    char buf[32], err[512];
    clear_env();
    snprintf(buf, sizeof buf, "%d", rank);
    setenv("RANK", buf, 1);
    setenv("LOCAL_RANK", buf, 1);
    setenv("WORLD_SIZE", "3", 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(buf, sizeof buf, "%d", port);
    setenv("MASTER_PORT", buf, 1);
    CommOptions o = {.backend = COMM_AUTO, .timeout_s = 20};   // auto under torchrun on the CPU: tcp
    Comm *c = comm_create(&o, err, sizeof err);
    if (!c) {
        fprintf(stderr, "rank %d: %s\n", rank, err);
        return 2;
    }
    int bad = 0;
    if (comm_backend(c) != COMM_TCP || comm_rank(c) != rank || comm_world(c) != W) bad |= 1;
    if (mismatch) {
        double d = 1;
        if (rank == 2) comm_broadcast(c, &d, sizeof d, "the odd one out");
        else comm_allreduce_f64(c, &d, 1, COMM_SUM, "the usual");
        return 0;   // not reached: the job fails
    }
    double s[3] = {rank + 1.0, 10.0 * rank, -rank}, mn[2] = {rank + 5.0, -rank * 2.0}, mx[2] = {rank + 5.0, -rank * 2.0};
    comm_allreduce_f64(c, s, 3, COMM_SUM, "sum");
    comm_allreduce_f64(c, mn, 2, COMM_MIN, "min");
    comm_allreduce_f64(c, mx, 2, COMM_MAX, "max");
    if (s[0] != 6 || s[1] != 30 || s[2] != -3 || mn[0] != 5 || mn[1] != -4 || mx[0] != 7 || mx[1] != 0) bad |= 2;
    float *g = malloc(sizeof(float) * N_F32), *h = malloc(sizeof(float) * 10);
    for (int i = 0; i < N_F32; i++) g[i] = f32_value(rank, i);
    for (int i = 0; i < 10; i++) h[i] = (float)(rank * 10 + i);
    comm_allreduce_f32_start(c, g, N_F32);   // two buffers started, then awaited
    comm_allreduce_f32_start(c, h, 10);
    comm_wait_all(c, "gradients");
    for (int i = 0; i < N_F32; i++) {
        float want = f32_value(0, i);
        for (int r = 1; r < W; r++) want += f32_value(r, i);   // ((v0 + v1) + v2): rank order
        if (memcmp(&g[i], &want, sizeof want)) {
            bad |= 4;
            break;
        }
    }
    for (int i = 0; i < 10; i++)
        if (h[i] != (float)(30 + 3 * i)) bad |= 8;
    char text[64] = "";
    if (rank == 0) snprintf(text, sizeof text, "from rank 0, %d", 42);
    comm_broadcast(c, text, sizeof text, "broadcast");
    if (strcmp(text, "from rank 0, 42")) bad |= 16;
    comm_barrier(c, "barrier");
    char line[512];
    comm_describe(c, line, sizeof line);
    snprintf(buf, sizeof buf, "127.0.0.1:%d", port);
    if (!strstr(line, "backend tcp") || !strstr(line, buf) || !strstr(line, "launcher torchrun")) bad |= 32;
    if (bad) fprintf(stderr, "rank %d: failures 0x%x (%s)\n", rank, bad, line);
    free(g);
    free(h);
    comm_destroy(c);
    return bad ? 1 : 0;
}

// Runs W ranks as child processes; their exit statuses into rc[], rank 0's stderr into log.
static void run_ranks(bool mismatch, int rc[W], char *log, size_t loglen) {
    int port = free_port();
    char path[] = "/tmp/dod_test_comm_XXXXXX";
    int logfd = mkstemp(path);
    pid_t pid[W];
    for (int r = 0; r < W; r++) {
        fflush(NULL);
        pid[r] = fork();
        if (pid[r] == 0) {
            if (r == 0) dup2(logfd, 2);
            else if (mismatch) freopen("/dev/null", "w", stderr);   // their side of the failure: not checked
            _exit(rank_main(r, port, mismatch));
        }
    }
    for (int r = 0; r < W; r++) {
        int st = 0;
        waitpid(pid[r], &st, 0);
        rc[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    ssize_t n = pread(logfd, log, loglen - 1, 0);
    log[n > 0 ? n : 0] = 0;
    close(logfd);
    unlink(path);
}

// [dist] backend's values (train/config.c) are CommBackend's, in order: dod-train casts one to the other.
static void test_config_backend_order(void) {
#ifdef DOD_HAVE_INIPARSER
    static const char *names[] = {"auto", "nccl", "mpi", "tcp", "none"};
    for (int i = 0; i < 5; i++) {
        TrainConfig c;
        char set[64], err[CFG_ERR_LEN];
        config_defaults(&c);
        snprintf(set, sizeof set, "dist.backend=%s", names[i]);
        CHECK(config_set(&c, set, err, sizeof err) == 0 && !strcmp(comm_backend_name((CommBackend)c.dist_backend), names[i]),
              "[dist] backend = %s is CommBackend %s", names[i], comm_backend_name((CommBackend)c.dist_backend));
    }
#endif
}

int main(void) {
    test_config_backend_order();
    test_detection();
    test_refusals();
    int rc[W];
    char log[4096];
    run_ranks(false, rc, log, sizeof log);
    CHECK(rc[0] == 0 && rc[1] == 0 && rc[2] == 0, "tcp collectives: exit statuses %d %d %d; rank 0 said: %s", rc[0], rc[1],
          rc[2], log);
    run_ranks(true, rc, log, sizeof log);
    CHECK(rc[0] == 1 && strstr(log, "rank 0 of 3 (backend tcp): the usual: rank 2 is in a broadcast (collective #1, 0 "
                                    "bytes) while rank 0 is in an f64 all-reduce (#1, 8 bytes)"),
          "mismatched collectives: rank 0 exit %d, said: %s", rc[0], log);
    CHECK(rc[1] != 0 && rc[2] != 0, "mismatched collectives end every rank: %d %d", rc[1], rc[2]);
    return check_summary();
}
