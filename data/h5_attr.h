// Validated reading of HDF5 attributes: every attribute a dod tool reads from a user's file goes
// through these, which check the attribute's dataspace (a scalar or a 1-D list of at most `cap`
// elements), its class (string, integer or float) and its size before a byte is read, so an
// attribute of another shape or type is refused with a reason instead of overflowing a buffer.
// HDF5-only (included by data/h5_*.c, which are compiled only when HDF5 is found).
#pragma once
#include <hdf5.h>
#include <stddef.h>

// Longest string attribute accepted (bytes); provenance strings are a few hundred bytes.
#define H5_ATTR_MAX_STRING 65536

typedef enum { H5_ATTR_INT, H5_ATTR_FLOAT } H5AttrKind;

// String attribute `name` of obj (a fixed- or variable-length string holding one element: a
// scalar or a list of length 1) into buf (=, truncated to len - 1 bytes, always terminated).
// Returns 0 when read, 1 when absent (buf = ""), -1 when present but not a single string or
// unreadable, with the reason in why (buf = "").
int h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t len, char *why, size_t whylen);

// Numeric attribute `name` of obj (scalar or 1-D, 1..cap elements) read as mtype into values (=).
// kind says what the stored class must be: H5_ATTR_INT accepts integers only (counts, seeds: a
// float would be rounded silently), H5_ATTR_FLOAT accepts floats and integers; float values must
// be finite. Returns the number of elements read, 0 when absent, -1 with the reason in why.
int h5_attr_read_num(hid_t obj, const char *name, H5AttrKind kind, hid_t mtype, void *values, int cap, char *why,
                     size_t whylen);
