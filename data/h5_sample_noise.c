// Reading a sample's stored-noise attributes (see data/sample_noise.h).
#include "data/sample_noise.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>

#include "data/h5_attr.h"

int h5_sample_noise(const char *path, const char *task, int64_t i, double *sigma, uint64_t *seed, char *err,
                    size_t errlen) {
    H5dont_atexit();   // as data/h5_dataset.c: no libhdf5 exit handler
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        H5Eclear2(H5E_DEFAULT);
        snprintf(err, errlen, "%s: cannot open as HDF5", path);
        return -1;
    }
    char group[512], why[256];
    snprintf(group, sizeof group, "/tasks/%s/%08" PRId64, task, i);
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        snprintf(err, errlen, "%s: sample group %s is missing", path, group);
        H5Fclose(file);
        return -1;
    }
    unsigned long long s = 0;
    int has_sigma = h5_attr_read_num(g, "noise_sigma", H5_ATTR_FLOAT, H5T_NATIVE_DOUBLE, sigma, 1, why, sizeof why);
    int has_seed = has_sigma < 0 ? 0 : h5_attr_read_num(g, "noise_seed", H5_ATTR_INT, H5T_NATIVE_ULLONG, &s, 1, why,
                                                        sizeof why);
    int rc = has_sigma == 1 && has_seed == 1;
    if (has_sigma < 0 || has_seed < 0) {
        snprintf(err, errlen, "%s: sample %s: %s", path, group, why);
        rc = -2;
    } else if (rc && !(*sigma > 0 && *sigma <= 255)) {
        snprintf(err, errlen, "%s: sample %s: attribute noise_sigma is %g (must be in (0, 255])", path, group, *sigma);
        rc = -2;
    }
    if (rc == 1) *seed = (uint64_t)s;
    H5Gclose(g);
    H5Fclose(file);
    return rc;
}
