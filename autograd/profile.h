// Per-op time profile, switched on by the environment variable DOD_PROFILE=1 (off: one branch per op).
//
// Every op announces itself when it starts (ops_device, autograd/cuda/cuda_ops.h) and every backward
// node is timed by the tape (autograd/tape.c). A forward interval runs from an op's start to the next
// profiled event (the next op, a backward node, a report), so host work between two ops is charged to
// the earlier one, and an op that calls another op internally is split between them. On CUDA each
// event synchronises the device first, so intervals measure the kernels (and the profile slows the run
// down; the totals are for finding hot spots, not for benchmarks).
//
// Each interval also charges the growth of the arenas (host + device) over it to its op: for forward
// rows, the activation memory the op holds until the step ends (output, saved state); backward rows
// show what backward adds to the arenas (scratch is given back within the op: usually 0; gradients
// are not arena memory). Recomputation and no-grad unit parking release arena memory, so under them
// the column can go negative for the op that happens to be open.
//
// The table (op, pass, calls, total ms, share, kept MiB) goes to stderr at exit, or when op_profile_report is
// called; op_profile_reset drops what was gathered (benchmarks call it after their warm-up).
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "autograd/tensor.h"

bool op_profile_enabled(void);
// A forward op starts on dev (closes the interval open before it).
void op_profile_forward(const char *op, Device dev);
// Backward of op starts / ends on dev.
void op_profile_backward_begin(const char *op, Device dev);
void op_profile_backward_end(Device dev);
// Writes the table gathered so far to f (closing the open interval); no-op when disabled.
void op_profile_report(FILE *f, const char *title);
void op_profile_reset(void);
