# Sourced by the CLI tests (cli_train_dod.sh, cli_train_dod_vae.sh, cli_eval_run.sh, cli_data.sh,
# cli_device.sh, cli_device_audit.sh, cli_parity.sh, cli_dist.sh) and scripts/gpu-check.sh:
#   . "$S/tests/shell_lib.sh"
# a pass/fail counter, the tiny DOD training configuration the DOD tests start from, and a
# bitwise comparison of checkpoints' tensors.

CLI_LIB_TESTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pass=0 fail=0
# check NAME CONDITION: evaluates CONDITION (a shell command line); counts a pass, or a failure named NAME.
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi; }
# ok: count a pass; bad MESSAGE: count a failure and say so on stderr (for tests that branch themselves).
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# tiny_dod_data BUILD FILE writes (=) FILE: the noise/rain/haze set (seed 1) from tests/fixtures/data
# that tiny_dod_ini's tasks read, made with BUILD's dod-data.
tiny_dod_data() {
    "$1/bin/dod-data" synth --clean "$CLI_LIB_TESTS/fixtures/data" --tasks noise,rain,haze --out "$2" --seed 1 --quiet
}

# tiny_dod_ini FILE DATA RUN_DIR writes (=) FILE with the keys the DOD CLI tests share: DOD stage 1 on
# the tiny SD fixture (tests/fixtures/sd/sd2_tiny), trained on the dehaze, derain and denoise tasks of
# DATA (a `dod-data synth` file) at crop 32 with 2 loader threads, lr 1e-3, loss 2 * MSE, seed 7, in
# RUN_DIR, a checkpoint every 2 steps. Each test appends its own keys (steps, frozen_dtype, logging,
# validation, ...) after it: a section may be opened again, a key may not be given twice.
tiny_dod_ini() {
    cat > "$1" <<INI
[model]
kind = dod
base = $CLI_LIB_TESTS/fixtures/sd/sd2_tiny/model
[stage]
stage = 1
[data]
train = $2
tasks = dehaze:1,derain:1,denoise:1
crop = 32
threads = 2
[optim]
lr = 1e-3
[loss]
mse = 2
[train]
seed = 7
run_dir = $3
[checkpoint]
every = 2
INI
}

# same_tensors BUILD A B: whether safetensors files A and B hold the same tensors (names, dtypes,
# shapes in file order, from BUILD's dod-sd-inspect --header) with bit-identical data; their JSON
# headers' metadata may differ (checkpoints of differently configured runs).
same_tensors() {
    local ha hb
    ha=$(od -An -t u8 -N8 "$2" | tr -d ' ') && hb=$(od -An -t u8 -N8 "$3" | tr -d ' ') || return 1
    cmp -s <("$1/bin/dod-sd-inspect" --header "$2") <("$1/bin/dod-sd-inspect" --header "$3") &&
        cmp -s <(tail -c +$((9 + ha)) "$2") <(tail -c +$((9 + hb)) "$3")
}
