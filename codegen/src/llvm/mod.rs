//! LLVM backend (in progress).
