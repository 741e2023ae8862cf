#!/usr/bin/env bash
# Run the cgroup v2 tests (pytest -m cgroup_v2) on a real cgroup v2 kernel.
#
# On a cgroup v2 host they already run on the host with `make test`: nothing to do here. Otherwise
# they run inside the throwaway VM of ../shared/tools/cgroup2-vm (beside the project checkout, as
# in CI). When the tool or the VM is not available this prints SKIP and the reason, and exits 0;
# a test failure or a test that hangs exits non-zero.
#
#   scripts/test-cgroup2-vm.sh [extra pytest args]
#
# How a hang is told apart from a stalled emulator:
# - each test has its own timeout inside the VM (pytest-timeout, CGROUP2_VM_TEST_TIMEOUT, 120 s;
#   the slowest test takes ~4 s under emulation): a test of ours that hangs prints every thread's
#   stack and fails the run;
# - the whole VM has CGROUP2_VM_TIMEOUT (240 s; the run takes ~20 s here, ~30 s with both host
#   cores busy). Running out of it with no test timed out means the emulator itself stalled: the
#   run is tried once more, and fails if it stalls again.
# The VM gets one vCPU (CG2VM_CPUS to change): as fast here as two, and a vCPU thread that the host
# descheduled cannot stall the other one on a kernel spinlock (lock-holder preemption under TCG).
set -uo pipefail

project="$(cd "$(dirname "$0")/.." && pwd)"
vm="$(dirname "$project")/shared/tools/cgroup2-vm"
python="$project/.venv/bin/python"
timeout="${CGROUP2_VM_TIMEOUT:-240}"
test_timeout="${CGROUP2_VM_TEST_TIMEOUT:-120}"
export CG2VM_CPUS="${CG2VM_CPUS:-1}"

skip() { echo "SKIP: cgroup v2 tests in a VM: $*"; exit 0; }

if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = "cgroup2fs" ]; then
    echo "cgroup v2 host: the cgroup v2 tests run on the host (make test); no VM needed"
    exit 0
fi
[ -x "$vm" ] || skip "$vm not found (it comes with the shared/ directory beside the checkout)"
[ -x "$python" ] || skip "$python not found (run make setup first)"
[ "$(uname -m)" = "x86_64" ] || skip "the VM needs an x86_64 host, this is $(uname -m)"

accel="${CG2VM_ACCEL:-auto}"
if [ "$accel" = auto ]; then
    accel=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; fi
fi
echo "cgroup v2 tests in a VM ($vm): $accel, $CG2VM_CPUS vCPU; host: $(nproc) CPUs," \
     "$(awk '/MemAvailable/ {printf "%d MB available", $2 / 1024}' /proc/meminfo)," \
     "load $(cut -d' ' -f1-3 /proc/loadavg); about 20 s under emulation (TCG)"
cd "$project"

run_once() {
    local start status
    start=$(date +%s)
    # A lean pytest: no plugin autoload (each import costs seconds under emulation), only trio's
    # and the timeout plugin, only the real-kernel tests, no cache writes; unbuffered and verbose,
    # so that the log shows how far it got whatever happens.
    "$vm" --timeout "$timeout" -- env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONDONTWRITEBYTECODE=1 \
        PYTHONUNBUFFERED=1 "$python" -m pytest -p pytest_trio.plugin -p pytest_timeout \
        -p no:cacheprovider -v --timeout "$test_timeout" -m cgroup_v2 tests/cgroups/integration "$@"
    status=$?
    echo "cgroup v2 VM run: exit $status after $(( $(date +%s) - start )) s"
    return $status
}

run_once "$@"
status=$?
retried=no
if [ $status -eq 124 ]; then
    echo "the VM made no progress in ${timeout} s (no test timed out inside it): trying once more"
    retried=yes
    run_once "$@"
    status=$?
fi
case $status in
    125) [ $retried = no ] || { echo "FAIL: the VM stalled, then did not start again"; exit 1; }
         skip "the VM did not start (cgroup2-vm exit 125; see its messages above)" ;;
    124) echo "FAIL: the VM run timed out twice after ${timeout} s"; exit 1 ;;
    5) echo "FAIL: no cgroup v2 test was collected"; exit 1 ;;
    *) exit $status ;;
esac
