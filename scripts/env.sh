# Sourced by the scripts: where LLVM 19 lives (Debian's layout unless already set).
export LLVM_SYS_191_PREFIX="${LLVM_SYS_191_PREFIX:-/usr/lib/llvm-19}"
# The Python that has the reference packages (scripts/install-deps.sh makes it).
KILN_PYTHON="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/pyref/bin/python"
export KILN_PYTHON
