// The build's identity, for every tool's `--version`: the project version (CMakeLists.txt
// project(dod VERSION ...)), the git revision it was built from (`git describe --always --dirty` at
// build time; "unknown" outside a git checkout), the build type and compiler, and the dependencies
// configure found (the same lines it prints).
#pragma once
#include <stdbool.h>
#include <stdio.h>

// The version text to f:
//   dod-train 0.1.0 (git b23b01f-dirty), Release build, GNU 12.2.0
//   dependencies:
//     OpenMP ... found
//     ...
void dod_print_version(FILE *f, const char *tool);
// When argv[1] is "--version": prints the version text of `tool` to stdout and returns true (the
// tool then exits 0). Every tool's main starts with it.
bool dod_version_requested(int argc, char **argv, const char *tool);
// "0.1.0" and "b23b01f-dirty" (or "unknown").
const char *dod_version(void);
const char *dod_git_revision(void);
