// Small filesystem helpers shared by the tools: `mkdir -p`, and writing a text file atomically
// (path.tmp.<pid>, fsync, rename), so a failed run never leaves a half-written file.
#pragma once
#include <stddef.h>

// Creates dir and its missing parents. 0, or -1 with "<dir>: cannot create directory: <reason>".
int fs_mkdirs(const char *dir, char *err, size_t errlen);
// Writes (=) text to path atomically. 0, or -1 with "<path>: cannot write: <reason>" (temp file removed).
int fs_write_text_atomic(const char *path, const char *text, char *err, size_t errlen);
