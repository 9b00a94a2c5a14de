// Validated HDF5 attribute reading (see data/h5_attr.h).
#include "data/h5_attr.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/base.h"

// Opens attribute name of obj and checks its dataspace holds 1..cap elements in at most one
// dimension. Returns the attribute (and *n) or -1 with the reason; 0 in *absent when it is absent.
static hid_t open_checked(hid_t obj, const char *name, int cap, hssize_t *n, int *absent, char *why, size_t whylen) {
    *absent = 0;
    htri_t exists = H5Aexists(obj, name);
    if (exists == 0) {
        *absent = 1;
        return -1;
    }
    hid_t attr = exists > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : -1;
    if (attr < 0) {
        H5Eclear2(H5E_DEFAULT);
        snprintf(why, whylen, "attribute %s cannot be opened", name);
        return -1;
    }
    hid_t space = H5Aget_space(attr);
    H5S_class_t cls = space < 0 ? H5S_NO_CLASS : H5Sget_simple_extent_type(space);
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    *n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    if (space >= 0) H5Sclose(space);
    if (!((cls == H5S_SCALAR) || (cls == H5S_SIMPLE && rank == 1)) || *n < 1 || *n > cap) {
        H5Eclear2(H5E_DEFAULT);
        if (cap == 1)
            snprintf(why, whylen, "attribute %s holds %lld values in %d dimensions (expected one value)", name,
                     (long long)*n, rank);
        else
            snprintf(why, whylen, "attribute %s holds %lld values in %d dimensions (expected a list of 1..%d)", name,
                     (long long)*n, rank, cap);
        H5Aclose(attr);
        return -1;
    }
    return attr;
}

int h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t len, char *why, size_t whylen) {
    buf[0] = 0;
    hssize_t n;
    int absent;
    hid_t attr = open_checked(obj, name, 1, &n, &absent, why, whylen);
    if (attr < 0) return absent ? 1 : -1;
    hid_t ftype = H5Aget_type(attr);
    int rc = -1;
    if (ftype < 0 || H5Tget_class(ftype) != H5T_STRING) {
        snprintf(why, whylen, "attribute %s is not a string", name);
    } else if (H5Tis_variable_str(ftype) > 0) {
        char *s = NULL;   // one element (checked above): H5Aread writes one pointer
        hid_t mtype = H5Tcopy(H5T_C_S1);
        H5Tset_size(mtype, H5T_VARIABLE);
        if (H5Aread(attr, mtype, &s) >= 0) {
            if (s && strlen(s) <= H5_ATTR_MAX_STRING) {
                snprintf(buf, len, "%s", s);
                rc = 0;
            } else {
                snprintf(why, whylen, "attribute %s is %s", name, s ? "longer than 65536 bytes" : "a null string");
            }
            if (s) H5free_memory(s);
        } else {
            snprintf(why, whylen, "attribute %s cannot be read as a string", name);
        }
        H5Tclose(mtype);
    } else {
        size_t size = H5Tget_size(ftype);
        if (size == 0 || size > H5_ATTR_MAX_STRING) {
            snprintf(why, whylen, "attribute %s is a string of %zu bytes (1..%d accepted)", name, size,
                     H5_ATTR_MAX_STRING);
        } else {
            // Read as a C string of the stored size: the memory type, not the file's, says how many
            // bytes land in tmp (one element of `size` bytes), and tmp[size] stays 0.
            hid_t mtype = H5Tcopy(H5T_C_S1);
            H5Tset_size(mtype, size);
            H5Tset_strpad(mtype, H5T_STR_NULLPAD);
            char *tmp = dod_calloc(size + 1, "string attribute");
            if (H5Aread(attr, mtype, tmp) >= 0) {
                snprintf(buf, len, "%s", tmp);
                rc = 0;
            } else {
                snprintf(why, whylen, "attribute %s cannot be read as a string", name);
            }
            free(tmp);
            H5Tclose(mtype);
        }
    }
    if (ftype >= 0) H5Tclose(ftype);
    H5Aclose(attr);
    H5Eclear2(H5E_DEFAULT);
    if (rc) buf[0] = 0;
    return rc;
}

int h5_attr_read_num(hid_t obj, const char *name, H5AttrKind kind, hid_t mtype, void *values, int cap, char *why,
                     size_t whylen) {
    hssize_t n;
    int absent;
    hid_t attr = open_checked(obj, name, cap, &n, &absent, why, whylen);
    if (attr < 0) return absent ? 0 : -1;
    hid_t ftype = H5Aget_type(attr);
    H5T_class_t cls = ftype < 0 ? H5T_NO_CLASS : H5Tget_class(ftype);
    if (ftype >= 0) H5Tclose(ftype);
    int rc = -1;
    if (!(cls == H5T_INTEGER || (kind == H5_ATTR_FLOAT && cls == H5T_FLOAT))) {
        snprintf(why, whylen, "attribute %s is not %s", name, kind == H5_ATTR_INT ? "an integer" : "a number");
    } else if (H5Aread(attr, mtype, values) < 0) {
        snprintf(why, whylen, "attribute %s cannot be read as %s", name, kind == H5_ATTR_INT ? "an integer" : "a number");
    } else {
        rc = (int)n;
        if (H5Tget_class(mtype) == H5T_FLOAT && H5Tget_size(mtype) == sizeof(double))
            for (int i = 0; i < (int)n && rc > 0; i++)
                if (!isfinite(((const double *)values)[i])) {
                    snprintf(why, whylen, "attribute %s: value %d is %g (must be finite)", name, i,
                             ((const double *)values)[i]);
                    rc = -1;
                }
    }
    H5Aclose(attr);
    H5Eclear2(H5E_DEFAULT);
    return rc;
}
