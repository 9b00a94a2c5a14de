#!/usr/bin/env bash
# dod-train on several processes, on the CPU (train/comm.h, train/grad_sync.h; docs/training.md,
# "Several processes"):
#  - 2 processes x micro-batch B give bit-identical parameters, AdamW moments and losses to 1
#    process with grad_accum = 2: under mpirun (backend mpi) and from the torchrun environment on
#    loopback (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT: backend tcp), on the toy
#    model (4 steps) and the tiny DOD fixture (3 steps, 199 trainable tensors); 3 processes over
#    tcp (sums in rank order) against 1 with grad_accum = 3 (toy); with buckets small
#    enough to make several, so that from step 2 on buckets are sent from the tape hook; one process
#    through the bucketed path (backend tcp, world 1) trains bit-identically to the plain path;
#  - resume across world sizes: 2 processes for 2 steps, then 1 process with grad_accum 2 to step
#    4, and the reverse, end where the uninterrupted run does; a resume that changes
#    processes x grad_accum is refused; the checkpoint records world_size;
#  - rank 0 alone writes (one metrics line a step); the start-up line says what was detected;
#  - scripts/slurm/*.sbatch with a stand-in srun (Slurm's job-step variables) reach the same run;
#  - no silent hangs: a rank killed mid-step ends the job non-zero (mpirun; tcp: the other rank
#    names it at once), a stopped rank (SIGSTOP) ends it within [dist] timeout (mpi, tcp); an
#    unreachable rank 0 and a missing rank are reported within the timeout; backend none under a
#    2-process launcher and nccl on a CPU device are refused;
#  - agreed stops: a step going non-finite ends every process at once with exit 1, naming the step
#    and the tensor, without aborting the job; SIGINT to one rank stops both at the end of the step
#    (tcp), rank 0 saving the checkpoint, exit 130.
# Usage: bash tests/cli_dist.sh BUILD_DIR SOURCE_DIR
set -u
B=$1 S=$2
T=$(mktemp -d /tmp/dod_cli_dist_XXXXXX)
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$T"' EXIT
. "$S/tests/shell_lib.sh"
TRAIN=$B/bin/dod-train
if ! "$TRAIN" --config-reference > /dev/null 2>&1 || [ ! -x "$B/bin/dod-data" ]; then
    echo "0 passed, 0 failed (dod-train built without iniparser or HDF5: skipped)"; exit 0
fi
# One thread a process (2 processes on a 2-core CI machine); the same in the 1-process references.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# OpenMPI in a container: as root, shared memory without CMA, no network needed.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl self,vader -np 2)

ck() { echo "$1/checkpoints/step_$(printf %07d "$2").safetensors"; }
losses() { grep -o '"loss": [^,]*' "$1/metrics.jsonl"; }
# same_run REF RUN STEP: the checkpoints of STEP hold the same tensors bit for bit, the losses agree
same_run() {
    if same_tensors "$B" "$(ck "$1" "$3")" "$(ck "$2" "$3")" && diff -q <(losses "$1") <(losses "$2") > /dev/null; then ok
    else bad "$2: step $3 differs from $1 (tensors or losses)"; fi
}
# tcpn N LOG_PREFIX ARGS...: N dod-train processes with torchrun's environment on loopback (port
# chosen at random, tried again once when taken); waits for all; 0 when all succeeded
tcpn() {
    local n=$1 prefix=$2 try r rc pids
    shift 2
    for try in 1 2; do
        PORT=$((20000 + RANDOM % 40000))
        pids=()
        for ((r = 0; r < n; r++)); do
            RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT "$TRAIN" "$@" > "$prefix.$r.log" 2>&1 &
            pids+=($!)
        done
        rc=0
        for ((r = 0; r < n; r++)); do wait "${pids[r]}" || { rc=1; echo "rank $r: $(tail -2 "$prefix.$r.log")" >&2; }; done
        grep -q "Address already in use" "$prefix.0.log" || break
    done
    return $rc
}
tcp2() { tcpn 2 "$@"; }

"$B/bin/dod-data" synth --clean "$S/tests/fixtures/data" --tasks noise,rain,haze --out "$T/d.h5" --seed 3 --quiet
TOY=(--config "$S/configs/toy.ini" --set "data.train=$T/d.h5" --set "data.val=$T/d.h5" --set data.tasks=dehaze:2,denoise:1
     --set train.steps=4 --set checkpoint.every=2 --set checkpoint.keep_last=0 --set val.every=4 --set dist.bucket_mb=0.0005)

# ---- the reference: 1 process, grad_accum 2 ----------------------------------------------------
"$TRAIN" "${TOY[@]}" --set optim.grad_accum=2 --run-dir "$T/ref" > "$T/ref.log" 2>&1 || bad "reference run: $(tail -2 "$T/ref.log")"
# MPI cases when mpirun exists and dod-train has MPI (one process with backend mpi initialises it)
have_mpi=0
if command -v mpirun > /dev/null; then
    if "$TRAIN" "${TOY[@]}" --set train.steps=1 --set dist.backend=mpi --run-dir "$T/probe" > "$T/probe.log" 2>&1; then have_mpi=1
    elif grep -q "this build has no MPI" "$T/probe.log"; then echo "SKIP: dod-train built without MPI: the mpi cases"
    else bad "backend mpi, one process: $(tail -2 "$T/probe.log")"; fi
else
    echo "SKIP: mpirun not found (scripts/setup.sh installs openmpi-bin): the mpi cases"
fi

# ---- mpirun -np 2 ---------------------------------------------------------------------------------
if [ $have_mpi = 1 ]; then
    "${MPIRUN[@]}" "$TRAIN" "${TOY[@]}" --set optim.grad_accum=1 --run-dir "$T/mpi" > "$T/mpi.log" 2>&1 ||
        bad "mpirun -np 2: $(tail -3 "$T/mpi.log")"
    same_run "$T/ref" "$T/mpi" 4
    same_run "$T/ref" "$T/mpi" 2
    if grep -q "data parallel: rank 0 of 2 (local rank 0), device cpu, backend mpi, launcher OpenMPI (mpirun)" "$T/mpi.log"; then ok
    else bad "mpi: start-up line: $(grep 'data parallel' "$T/mpi.log")"; fi
    if [ "$(grep -c '"loss"' "$T/mpi/metrics.jsonl")" = 4 ]; then ok; else bad "mpi: metrics lines: $(grep -c '"loss"' "$T/mpi/metrics.jsonl")"; fi
    # buckets of 0.0005 MiB: one for each of the toy's 4 trainable tensors; step 4 sends some during its backward
    if grep -Eq "gradient all-reduce: 0.00 MiB a step in 4 buckets; the last step started [1-4] of them during its backward" "$T/mpi.log"; then ok
    else bad "mpi: bucket report: $(grep 'gradient all-reduce' "$T/mpi.log")"; fi
    if grep -q '"world_size":"2"' "$(ck "$T/mpi" 4)"; then ok; else bad "mpi: checkpoint metadata lacks world_size 2"; fi
fi

# ---- torchrun's environment, TCP on loopback ----------------------------------------------------------
if tcp2 "$T/tcp" "${TOY[@]}" --set optim.grad_accum=1 --run-dir "$T/tcp"; then ok; else bad "tcp run: $(tail -3 "$T/tcp.0.log")"; fi
same_run "$T/ref" "$T/tcp" 4
if grep -q "data parallel: rank 0 of 2 (local rank 0), device cpu, backend tcp, tcp 127.0.0.1:$PORT, launcher torchrun" "$T/tcp.0.log"; then ok
else bad "tcp: start-up line: $(grep 'data parallel' "$T/tcp.0.log")"; fi
if [ ! -s "$T/tcp.1.log" ]; then ok; else bad "tcp: rank 1 printed: $(head -2 "$T/tcp.1.log")"; fi
# 3 processes over tcp sum in rank order: bit-identical to 1 process with grad_accum 3 as well
"$TRAIN" "${TOY[@]}" --set optim.grad_accum=3 --set val.every=0 --run-dir "$T/ref3" > "$T/ref3.log" 2>&1 || bad "reference 3"
if tcpn 3 "$T/tcp3" "${TOY[@]}" --set optim.grad_accum=1 --set val.every=0 --run-dir "$T/tcp3"; then ok; else bad "tcp, 3 processes"; fi
same_run "$T/ref3" "$T/tcp3" 4
# torchrun's static rendezvous holds MASTER_PORT itself (TORCHELASTIC_USE_AGENT_STORE=True): MASTER_PORT + 1
export TORCHELASTIC_USE_AGENT_STORE=True
if tcp2 "$T/agent" "${TOY[@]}" --set train.steps=1 --set val.every=0 --run-dir "$T/agent" &&
   grep -q "tcp 127.0.0.1:$((PORT + 1)), launcher torchrun" "$T/agent.0.log"; then ok
else bad "tcp with torchrun's agent store: $(grep -h 'data parallel\|dod:' "$T"/agent.*.log | head -3)"; fi
unset TORCHELASTIC_USE_AGENT_STORE

# ---- the Slurm batch scripts, with a stand-in srun (2 tasks, Slurm's job-step variables) and
# scontrol, on the CPU: their launch line and bootstrap variables reach a run equal to the reference
mkdir -p "$T/bin"
cat > "$T/bin/srun" <<'SH'
#!/usr/bin/env bash
[ "$1" = --kill-on-bad-exit=1 ] && shift
pids=()
for r in 0 1; do SLURM_PROCID=$r SLURM_STEP_NUM_TASKS=2 SLURM_LOCALID=$r "$@" > "$SRUN_LOG.$r" 2>&1 & pids+=($!); done
rc=0; for p in "${pids[@]}"; do wait $p || rc=1; done; exit $rc
SH
printf '#!/bin/sh\necho 127.0.0.1\n' > "$T/bin/scontrol"
chmod +x "$T/bin/srun" "$T/bin/scontrol"
for script in train-multinode train-1node-8gpu; do
    addr=(); [ $script = train-1node-8gpu ] && addr=(MASTER_ADDR=127.0.0.1)   # not this host's name: CI may not resolve it
    env "${addr[@]}" PATH="$T/bin:$PATH" SRUN_LOG="$T/$script" SLURM_JOB_ID=$((RANDOM * 3)) SLURM_JOB_NODELIST=node1 \
        SLURM_CPUS_PER_TASK=1 DOD_TRAIN="$TRAIN" bash "$S/scripts/slurm/$script.sbatch" "${TOY[@]}" --set optim.grad_accum=1 \
        --set model.device=cpu --set dist.backend=auto --run-dir "$T/$script" > /dev/null 2>&1
    rc=$?
    if [ $rc = 0 ] && grep -q "backend tcp, tcp 127.0.0.1:[0-9]*, launcher Slurm (srun)" "$T/$script.0"; then ok
    else bad "$script.sbatch: exit $rc: $(grep -h 'dod' "$T/$script".[01] | head -3)"; fi
    same_run "$T/ref" "$T/$script" 4
done

# ---- the tiny DOD fixture: 199 trainable tensors, many of them fed by several backward nodes ----------
tiny_dod_data "$B" "$T/dod.h5"
tiny_dod_ini "$T/dod.ini" "$T/dod.h5" "$T/unused"
printf '[train]\nsteps = 3\n[checkpoint]\nkeep_last = 0\n[dist]\nbucket_mb = 0.01\n' >> "$T/dod.ini"
"$TRAIN" --config "$T/dod.ini" --set optim.grad_accum=2 --run-dir "$T/dod_ref" > "$T/dod_ref.log" 2>&1 ||
    bad "dod reference: $(tail -2 "$T/dod_ref.log")"
if [ $have_mpi = 1 ]; then
    "${MPIRUN[@]}" "$TRAIN" --config "$T/dod.ini" --run-dir "$T/dod_mpi" > "$T/dod_mpi.log" 2>&1 || bad "dod mpirun: $(tail -3 "$T/dod_mpi.log")"
    same_run "$T/dod_ref" "$T/dod_mpi" 3
    if grep -Eq "MiB a step in [0-9]+ buckets; the last step started [1-9][0-9]* of them during its backward" "$T/dod_mpi.log"; then ok
    else bad "dod mpi: bucket report: $(grep 'gradient all-reduce' "$T/dod_mpi.log")"; fi
fi
if tcp2 "$T/dod_tcp" --config "$T/dod.ini" --run-dir "$T/dod_tcp"; then ok; else bad "dod tcp: $(tail -3 "$T/dod_tcp.0.log")"; fi
same_run "$T/dod_ref" "$T/dod_tcp" 3
# One process through the bucketed path (backend tcp, world 1: what scripts/gpu-check.sh runs with
# nccl on a GPU) against the plain path: the same tensors
"$TRAIN" --config "$T/dod.ini" --run-dir "$T/dod_plain" > "$T/dod_plain.log" 2>&1 || bad "dod plain: $(tail -2 "$T/dod_plain.log")"
"$TRAIN" --config "$T/dod.ini" --set dist.backend=tcp --run-dir "$T/dod_w1" > "$T/dod_w1.log" 2>&1 || bad "dod world 1: $(tail -2 "$T/dod_w1.log")"
same_run "$T/dod_plain" "$T/dod_w1" 3
if grep -q "gradient all-reduce: .* in [0-9]* buckets" "$T/dod_w1.log"; then ok; else bad "dod world 1: not bucketed"; fi

# ---- resume across world sizes (toy; the reference's step-4 checkpoint is the uninterrupted run) ------
two() {   # two ARGS...: 2 processes, mpirun when present, else the TCP pair
    if [ $have_mpi = 1 ]; then "${MPIRUN[@]}" "$TRAIN" "$@" > "$T/two.log" 2>&1; else tcp2 "$T/two" "$@"; fi
}
two "${TOY[@]}" --set optim.grad_accum=1 --set train.steps=2 --run-dir "$T/r21" || bad "2-process part: $(tail -2 "$T/two.log")"
"$TRAIN" --resume "$T/r21" --set optim.grad_accum=1 --set train.steps=4 > "$T/r21_bad.log" 2>&1
if [ $? = 1 ] && grep -q "written with 2 micro-batches a step (2 processes x grad_accum 1); this run has 1 x 1" "$T/r21_bad.log"; then ok
else bad "resume with another processes x grad_accum: $(tail -1 "$T/r21_bad.log")"; fi
"$TRAIN" --resume "$T/r21" --set optim.grad_accum=2 --set train.steps=4 > "$T/r21.log" 2>&1 || bad "2 -> 1 resume: $(tail -2 "$T/r21.log")"
same_run "$T/ref" "$T/r21" 4
"$TRAIN" "${TOY[@]}" --set optim.grad_accum=2 --set train.steps=2 --run-dir "$T/r12" > "$T/r12a.log" 2>&1 || bad "1-process part"
two --resume "$T/r12" --set optim.grad_accum=1 --set train.steps=4 || bad "1 -> 2 resume: $(tail -2 "$T/two.log")"
same_run "$T/ref" "$T/r12" 4

# ---- failures end the job -----------------------------------------------------------------------------
LONG=("${TOY[@]}" --set optim.grad_accum=1 --set train.steps=100000000 --set checkpoint.every=100000000 --set val.every=0
      --set log.every=100000 --set dist.timeout=3)
# wait_steps LOG: until LOG shows training steps (at most 20 s)
wait_steps() { for _ in $(seq 1 200); do grep -q "^step" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
# ended_within NAME START LIMIT RC: the job ended non-zero (RC) no later than LIMIT s after START
ended_within() {
    local took=$((SECONDS - $2))
    if [ "$4" != 0 ] && [ $took -le "$3" ]; then ok; else bad "$1: exit $4 after ${took} s (limit $3 s)"; fi
}
if [ $have_mpi = 1 ]; then
    for sig in KILL STOP; do
        "${MPIRUN[@]}" "$TRAIN" "${LONG[@]}" --run-dir "$T/mpi_$sig" > "$T/mpi_$sig.log" 2>&1 &
        mp=$!
        wait_steps "$T/mpi_$sig.log" || bad "mpi $sig: no steps: $(tail -2 "$T/mpi_$sig.log")"
        victim=$(ps -o pid= --ppid $mp | tail -1)
        t0=$SECONDS
        kill -$sig $victim
        wait $mp; rc=$?
        ended_within "mpirun, rank 1 got SIG$sig" $t0 10 $rc
        kill -9 $victim 2>/dev/null
    done
    if grep -q "rank 0 of 2 (backend mpi): .*did not complete within 3 s" "$T/mpi_STOP.log"; then ok
    else bad "mpi STOP: message: $(grep 'dod: dist' "$T/mpi_STOP.log")"; fi
fi
for sig in KILL STOP; do
    PORT=$((20000 + RANDOM % 40000))
    pids=()
    for r in 0 1; do
        RANK=$r WORLD_SIZE=2 MASTER_ADDR=localhost MASTER_PORT=$PORT "$TRAIN" "${LONG[@]}" --run-dir "$T/tcp_$sig" > "$T/tcp_$sig.$r.log" 2>&1 &
        pids+=($!)
    done
    wait_steps "$T/tcp_$sig.0.log" || bad "tcp $sig: no steps: $(tail -2 "$T/tcp_$sig.0.log")"
    t0=$SECONDS
    kill -$sig "${pids[1]}"
    wait "${pids[0]}"; rc=$?
    ended_within "tcp, rank 1 got SIG$sig" $t0 8 $rc
    kill -9 "${pids[1]}" 2>/dev/null; wait "${pids[1]}" 2>/dev/null
done
if grep -q "rank 0 of 2 (backend tcp): .*rank 1 closed its connection (it exited or was killed)" "$T/tcp_KILL.0.log"; then ok
else bad "tcp KILL: message: $(grep 'dod: dist' "$T/tcp_KILL.0.log")"; fi
if grep -q "rank 0 of 2 (backend tcp): .*rank 1 did not answer within 3 s" "$T/tcp_STOP.0.log"; then ok
else bad "tcp STOP: message: $(grep 'dod: dist' "$T/tcp_STOP.0.log")"; fi

# ---- a non-finite step and a stop: every process agrees --------------------------------------------------
# A huge first-layer bias makes step 3's loss and gradients overflow on both processes: each names the step and the tensor
# and exits 1 at once, without aborting the job (no "ending the job" line); nothing of step 3 is saved.
two "${TOY[@]}" --set optim.grad_accum=1 --set train.steps=2 --set val.every=0 --run-dir "$T/nf" || bad "non-finite: the 2-step run"
"$B/tests/dod-make-hostile" set "$(ck "$T/nf" 2)" conv_in.bias 3e38
t0=$SECONDS
two --resume "$T/nf" --set train.steps=4 --set dist.timeout=60; rc=$?
cat "$T"/two*.log > "$T/nf.log"
if [ $rc != 0 ] && [ $((SECONDS - t0)) -le 30 ] && [ "$(grep -c "of 2: step 3: the loss is inf on micro-batch" "$T/nf.log")" = 2 ] &&
   [ "$(grep -Ec "the gradient of conv_out.weight holds -?(inf|nan) at element 0; stopping without saving" "$T/nf.log")" = 2 ] &&
   ! grep -q "ending the job\|MPI_ABORT" "$T/nf.log" && [ ! -e "$(ck "$T/nf" 3)" ]; then ok
else bad "non-finite step, 2 processes: exit $rc after $((SECONDS - t0)) s: $(grep -h 'dod' "$T/nf.log" | head -4)"; fi
# SIGINT to rank 1 alone, inside a step of 64 micro-batches: the stop is agreed at the end of the step
# (not at the next micro-batch, as with one process); rank 0 saves; both exit 130.
PORT=$((20000 + RANDOM % 40000))
pids=()
for r in 0 1; do
    RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT "$TRAIN" "${LONG[@]}" --set optim.grad_accum=64 \
        --set dist.timeout=60 --run-dir "$T/tcp_INT" > "$T/tcp_INT.$r.log" 2>&1 &
    pids+=($!)
done
wait_steps "$T/tcp_INT.0.log" || bad "tcp INT: no steps: $(tail -2 "$T/tcp_INT.0.log")"
t0=$SECONDS
kill -INT "${pids[1]}"
wait "${pids[0]}"; rc0=$?
wait "${pids[1]}"; rc1=$?
saved=$(sed -n 's/.*interrupted after step \([0-9]*\); checkpoint .*/\1/p' "$T/tcp_INT.0.log")
if [ $rc0 = 130 ] && [ $rc1 = 130 ] && [ $((SECONDS - t0)) -le 10 ] && [ -n "$saved" ] && [ -f "$(ck "$T/tcp_INT" "$saved")" ]; then ok
else bad "tcp, SIGINT to rank 1: exits $rc0 / $rc1 after $((SECONDS - t0)) s: $(tail -1 "$T/tcp_INT.0.log")"; fi

# ---- start-up errors --------------------------------------------------------------------------------------
PORT=$((20000 + RANDOM % 40000))
t0=$SECONDS
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT "$TRAIN" "${LONG[@]}" --set dist.timeout=2 --run-dir "$T/e1" > "$T/e1.log" 2>&1
rc=$?
if [ $rc = 1 ] && [ $((SECONDS - t0)) -le 8 ] && grep -q "rank 1: cannot reach rank 0 at 127.0.0.1:$PORT within 2 s" "$T/e1.log"; then ok
else bad "unreachable rank 0: exit $rc: $(tail -1 "$T/e1.log")"; fi
RANK=0 WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT "$TRAIN" "${LONG[@]}" --set dist.timeout=1 --run-dir "$T/e2" > "$T/e2.log" 2>&1
if [ $? = 1 ] && grep -q "rank 0: 1 of 3 ranks connected to port $PORT within 1 s (missing: 1 2)" "$T/e2.log"; then ok
else bad "missing ranks: $(tail -1 "$T/e2.log")"; fi
OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=2 "$TRAIN" "${LONG[@]}" --set dist.backend=none --run-dir "$T/e3" > "$T/e3.log" 2>&1
if [ $? = 1 ] && grep -q "OpenMPI (mpirun) started 2 processes but \[dist\] backend = none" "$T/e3.log"; then ok
else bad "backend none under 2 processes: $(tail -1 "$T/e3.log")"; fi
"$TRAIN" "${LONG[@]}" --set dist.backend=nccl --run-dir "$T/e4" > "$T/e4.log" 2>&1
if [ $? = 1 ] && grep -q "backend = nccl reduces GPU gradients: it needs \[model\] device = cuda" "$T/e4.log"; then ok
else bad "nccl on the CPU: $(tail -1 "$T/e4.log")"; fi
RANK=2 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT "$TRAIN" "${LONG[@]}" --run-dir "$T/e5" > "$T/e5.log" 2>&1
if [ $? = 1 ] && grep -q "environment: RANK=2 is not below WORLD_SIZE=2" "$T/e5.log"; then ok
else bad "RANK >= WORLD_SIZE: $(tail -1 "$T/e5.log")"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
