#!/usr/bin/env bash
# The test command (the README's and .ci/run's): install adcore into a fresh
# virtual environment, not editable, and run the test suite from a temporary
# folder, so the tests import the installed package and never the source tree.
#
#   bash tools/test.sh                          # this checkout, default python3
#   bash tools/test.sh --python python3.12      # another interpreter
#   bash tools/test.sh --install dist/adcore-0.1.0.tar.gz   # a built sdist or wheel
#   bash tools/test.sh --tests /some/tests      # another copy of the tests
#   bash tools/test.sh --env LD_PRELOAD=...     # set only for the pytest process
#   bash tools/test.sh -- -x -k dual            # anything after -- goes to pytest
#   bash tools/test.sh -- tests/test_package.py # only these tests
#
# Exit status: pytest's, except that "no tests collected" (5) is reported and
# counts as success while the suite is still being written.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
INSTALL=""
TESTS="$ROOT/tests"
PYTEST_ENV=()
PYTEST_ARGS=()

die() { echo "tools/test.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --python)  [[ $# -ge 2 ]] || die "--python needs an interpreter"; PY="$2"; shift 2 ;;
        --install) [[ $# -ge 2 ]] || die "--install needs a wheel, sdist or folder"; INSTALL="$2"; shift 2 ;;
        --tests)   [[ $# -ge 2 ]] || die "--tests needs a folder"; TESTS="$2"; shift 2 ;;
        --env)     [[ $# -ge 2 && "$2" == *=* ]] || die "--env needs NAME=VALUE"; PYTEST_ENV+=("$2"); shift 2 ;;
        --)        shift; PYTEST_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *)         die "unknown option '$1' (pytest arguments go after --)" ;;
    esac
done

if [[ -z "$PY" ]]; then
    for cand in python3 python; do
        if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
    done
fi
[[ -n "$PY" ]] || die "no python3 found; pass --python"
command -v "$PY" >/dev/null 2>&1 || [[ -x "$PY" ]] || die "interpreter '$PY' not found"
[[ -d "$TESTS" ]] || die "test folder '$TESTS' does not exist"
TESTS="$(cd "$TESTS" && pwd)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/adcore-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [[ -z "$INSTALL" ]]; then
    # Build from a copy of the checkout: tracked files plus new, not-ignored
    # ones.  A stale build/ or generated .c in the tree can then never leak into
    # the wheel, and nothing is written into a tree others may be editing.
    INSTALL="$WORK/src"
    "$PY" - "$ROOT" "$INSTALL" <<'PYCOPY'
import os, shutil, subprocess, sys
root, dest = sys.argv[1], sys.argv[2]
try:
    out = subprocess.run(["git", "-C", root, "ls-files", "-z", "-co", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode()
    files = [f for f in out.split("\0") if f]
except (OSError, subprocess.CalledProcessError):
    files = None  # not a git checkout (an unpacked sdist): copy it whole
if files is None:
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
else:
    for f in files:
        src = os.path.join(root, f)
        if os.path.isfile(src):  # skip files deleted in the work tree
            os.makedirs(os.path.dirname(os.path.join(dest, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, f))
PYCOPY
elif [[ -e "$INSTALL" ]]; then
    INSTALL="$(cd "$(dirname "$INSTALL")" && pwd)/$(basename "$INSTALL")"
else
    die "'$INSTALL' does not exist"
fi

# pip on some machines warns once per line about index folders it cannot
# read; drop just that noise so real errors stand out.
pip_q() { "$VPY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

"$PY" -m venv "$WORK/venv"
if [[ -x "$WORK/venv/bin/python" ]]; then VPY="$WORK/venv/bin/python"; else VPY="$WORK/venv/Scripts/python.exe"; fi

echo "tools/test.sh: installing ${INSTALL}[test] with $("$VPY" -c 'import sys; print(sys.version.split()[0])')"
pip_q install -q --upgrade pip
pip_q install -q "${INSTALL}[test]"

mkdir "$WORK/run"
cp -R "$TESTS" "$WORK/run/tests"
# The docs beside the tests, for the tests that check the docs against the code.
if [[ -d "$(dirname "$TESTS")/docs" ]]; then cp -R "$(dirname "$TESTS")/docs" "$WORK/run/docs"; fi
# The examples too, for the tests that run them at a small size.
if [[ -d "$(dirname "$TESTS")/examples" ]]; then cp -R "$(dirname "$TESTS")/examples" "$WORK/run/examples"; fi
cd "$WORK/run"
# The suite must exercise the installed copy: refuse to run against anything else.
env ${PYTEST_ENV[@]+"${PYTEST_ENV[@]}"} "$VPY" - "$WORK/venv" <<'PYCHECK'
import os, sys
import adcore, numpy
venv = os.path.normcase(os.path.realpath(sys.argv[1]))
where = os.path.normcase(os.path.realpath(adcore.__file__))
if not where.startswith(venv + os.sep):
    sys.exit(f"tools/test.sh: adcore imported from {where}, not from the fresh venv {venv}")
print(f"tools/test.sh: adcore {adcore.__version__} from {os.path.dirname(where)}; numpy {numpy.__version__}")
PYCHECK

# Paths given after -- (tests/test_x.py, tests/test_x.py::name) replace the default "tests".
TARGET=(tests)
for a in ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}; do
    if [[ "$a" == tests || "$a" == tests/* ]]; then TARGET=(); break; fi
done

set +e
env ${PYTEST_ENV[@]+"${PYTEST_ENV[@]}"} "$VPY" -m pytest -p no:cacheprovider -ra ${TARGET[@]+"${TARGET[@]}"} ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "tools/test.sh: pytest collected no tests (exit 5); nothing failed"
    rc=0
fi
exit $rc
