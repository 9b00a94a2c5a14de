// Writing attributes of any type and shape onto HDF5 objects, for the tests and generators that
// make malformed dataset files (tests/test_h5_hostile.c, tests/hostile/make_hostile_inputs.c).
// Header-only.
#pragma once
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

// Replaces attribute name of obj by one of type `type` holding n elements (0: a scalar) from v.
// 0, or -1 when HDF5 refuses.
static inline int h5t_attr(hid_t obj, const char *name, hid_t type, hsize_t n, const void *v) {
    hid_t space = n ? H5Screate_simple(1, &n, NULL) : H5Screate(H5S_SCALAR);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, type, v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc;
}

// n fixed-length strings (0: a scalar) of size bytes each, filled by repeating fill.
static inline int h5t_fixed_strings(hid_t obj, const char *name, hsize_t n, size_t size, const char *fill) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, size);
    size_t total = size * (size_t)(n ? n : 1);
    char *buf = malloc(total);
    for (size_t k = 0; k < total; k++) buf[k] = fill[k % strlen(fill)];
    int rc = h5t_attr(obj, name, type, n, buf);
    free(buf);
    H5Tclose(type);
    return rc;
}

// n variable-length strings (0: a scalar).
static inline int h5t_vlen_strings(hid_t obj, const char *name, hsize_t n) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    const char *v[8] = {"dod-degradation-dataset", "stored", "gaussian_noise", "x", "y", "z", "w", "v"};
    int rc = n <= 8 ? h5t_attr(obj, name, type, n, v) : -1;
    H5Tclose(type);
    return rc;
}
