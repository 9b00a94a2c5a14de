// Temporary files left behind by a killed process. Every atomic write of this program goes through
// "<final name>.tmp.<pid>" renamed into place (data/fileio.h, safetensors_save, image_save_png,
// h5ds_begin_write); a kill -9 or power loss in between leaves that file forever. The run or tool
// that owns a directory removes, at start-up, those whose process is gone.
#pragma once
#include <stddef.h>

// Removes the files of dir named "<base>.tmp.<pid>" where <base> matches one of the n_patterns
// fnmatch patterns and no process <pid> exists (a live one, ours included, keeps its file: it may
// be writing it). Each removal is reported on stderr as "<who>: removed stale temporary file PATH
// (left by process PID)". Returns how many were removed; a missing dir removes none.
int fs_remove_stale_tmp(const char *dir, const char *const *patterns, int n_patterns, const char *who);
