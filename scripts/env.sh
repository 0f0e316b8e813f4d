# Sourced by the scripts: where LLVM 19 lives (Debian's layout unless already set).
export LLVM_SYS_191_PREFIX="${LLVM_SYS_191_PREFIX:-/usr/lib/llvm-19}"
