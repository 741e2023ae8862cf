#!/usr/bin/env bash
# Run the cgroup v2 tests (pytest -m cgroup_v2) on a real cgroup v2 kernel.
#
# On a cgroup v2 host they already run on the host with `make test`: nothing to do here. Otherwise
# they run inside the throwaway VM of ../shared/tools/cgroup2-vm (beside the project checkout, as
# in CI). When the tool or the VM is not available this prints SKIP and the reason, and exits 0;
# a test failure (or a VM that starts but hangs) exits non-zero.
#
#   scripts/test-cgroup2-vm.sh [extra pytest args]
set -uo pipefail

project="$(cd "$(dirname "$0")/.." && pwd)"
vm="$(dirname "$project")/shared/tools/cgroup2-vm"
python="$project/.venv/bin/python"
timeout="${CGROUP2_VM_TIMEOUT:-1200}"

skip() { echo "SKIP: cgroup v2 tests in a VM: $*"; exit 0; }

if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = "cgroup2fs" ]; then
    echo "cgroup v2 host: the cgroup v2 tests run on the host (make test); no VM needed"
    exit 0
fi
[ -x "$vm" ] || skip "$vm not found (it comes with the shared/ directory beside the checkout)"
[ -x "$python" ] || skip "$python not found (run make setup first)"
[ "$(uname -m)" = "x86_64" ] || skip "the VM needs an x86_64 host, this is $(uname -m)"

echo "cgroup v2 tests in a VM ($vm); about a minute under emulation (TCG), less with KVM"
start=$(date +%s)
cd "$project"
# A lean pytest: no plugin autoload (each import costs seconds under emulation), only trio's plugin,
# only the real-kernel tests, no cache writes.
"$vm" --timeout "$timeout" -- env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONDONTWRITEBYTECODE=1 \
    "$python" -m pytest -p pytest_trio.plugin -p no:cacheprovider -q -m cgroup_v2 \
    tests/cgroups/integration "$@"
status=$?
echo "cgroup v2 VM run: exit $status after $(( $(date +%s) - start )) s"
case $status in
    125) skip "the VM did not start (cgroup2-vm exit 125; see its messages above)" ;;
    124) echo "FAIL: the VM run timed out after ${timeout} s"; exit 1 ;;
    5) echo "FAIL: no cgroup v2 test was collected"; exit 1 ;;
    *) exit $status ;;
esac
