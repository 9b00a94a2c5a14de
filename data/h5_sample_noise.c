// Reading a sample's stored-noise attributes (see data/sample_noise.h).
#include "data/sample_noise.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>

int h5_sample_noise(const char *path, const char *task, int64_t i, double *sigma, uint64_t *seed, char *err,
                    size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        snprintf(err, errlen, "%s: cannot open as HDF5", path);
        return -1;
    }
    char group[512];
    snprintf(group, sizeof group, "/tasks/%s/%08" PRId64, task, i);
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g < 0) {
        snprintf(err, errlen, "%s: sample group %s is missing", path, group);
        H5Fclose(file);
        return -1;
    }
    int found = 0;
    if (H5Aexists(g, "noise_sigma") > 0 && H5Aexists(g, "noise_seed") > 0) {
        hid_t a = H5Aopen(g, "noise_sigma", H5P_DEFAULT), b = H5Aopen(g, "noise_seed", H5P_DEFAULT);
        unsigned long long s = 0;
        found = a >= 0 && b >= 0 && H5Aread(a, H5T_NATIVE_DOUBLE, sigma) >= 0 && H5Aread(b, H5T_NATIVE_ULLONG, &s) >= 0;
        if (a >= 0) H5Aclose(a);
        if (b >= 0) H5Aclose(b);
        if (!found) {
            snprintf(err, errlen, "%s: sample %s: unreadable noise_sigma / noise_seed attributes", path, group);
            H5Gclose(g);
            H5Fclose(file);
            return -1;
        }
        *seed = (uint64_t)s;
    }
    H5Gclose(g);
    H5Fclose(file);
    return found;
}
