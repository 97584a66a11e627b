#!/usr/bin/env bash
# The test suite on every Keras backend: the full suite on TensorFlow, then
# the backend-neutral suites (the Distiller, the losses, the recipes and the
# schedules, written against keras.ops and tests/backend_utils.py) on JAX and
# on PyTorch. Keras picks its backend once per process, hence one pytest run
# per backend. Every run goes ahead; the exit status is non-zero if any failed.
#
# Usage: bash tests/run_all_backends.sh [extra pytest arguments]
# KERAS_KD_TEST_BACKENDS="jax torch" limits the runs to those backends.
set -uo pipefail
cd "$(dirname "$0")/.."

BACKEND_NEUTRAL=(
    tests/losses
    tests/test_distiller.py
    tests/test_recipes.py
    tests/test_multi_teacher.py
    tests/test_function_matching.py
    tests/test_schedules.py
    tests/test_teacher_cache.py
    tests/test_sample_index.py
    tests/test_privileged.py
    tests/test_hint_stage.py
    tests/test_early_stopping.py
)

failed=()
summary=()

run() {
    local backend=$1
    shift
    echo "=== KERAS_BACKEND=$backend: python -m pytest -q $*"
    local start=$SECONDS
    if KERAS_BACKEND=$backend python -m pytest -q "$@"; then
        summary+=("$backend: passed in $((SECONDS - start)) s")
    else
        failed+=("$backend")
        summary+=("$backend: FAILED in $((SECONDS - start)) s")
    fi
}

for backend in ${KERAS_KD_TEST_BACKENDS:-tensorflow jax torch}; do
    case $backend in
        tensorflow) run tensorflow "$@" ;;
        jax | torch) run "$backend" "${BACKEND_NEUTRAL[@]}" "$@" ;;
        *) echo "unknown backend '$backend' in KERAS_KD_TEST_BACKENDS (expected tensorflow, jax, torch)" >&2; exit 2 ;;
    esac
done

printf '%s\n' "=== summary" "${summary[@]}"
if ((${#failed[@]})); then
    echo "failed on: ${failed[*]}"
    exit 1
fi
