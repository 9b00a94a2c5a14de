// Checking how an image dataset is stored, and decoding its chunks (see data/h5_image.h).
#include "data/h5_image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "autograd/base.h"

static const char *filter_name(H5Z_filter_t id) {
    switch (id) {
    case H5Z_FILTER_FLETCHER32: return "fletcher32";
    case H5Z_FILTER_SZIP: return "szip";
    case H5Z_FILTER_NBIT: return "nbit";
    case H5Z_FILTER_SCALEOFFSET: return "scaleoffset";
    default: return NULL;
    }
}

// Contiguous or compact storage: allocated, and exactly the image's bytes.
static int check_unchunked(hid_t ds, int h, int w, const char *kind, char *why, size_t whylen) {
    H5D_space_status_t status = H5D_SPACE_STATUS_ERROR;
    hsize_t want = (hsize_t)h * (hsize_t)w * 3u, have = 0;
    if (H5Dget_space_status(ds, &status) < 0 || status != H5D_SPACE_STATUS_ALLOCATED) {
        snprintf(why, whylen, "%s storage was never written", kind);
        return -1;
    }
    have = H5Dget_storage_size(ds);
    if (have != want) {
        snprintf(why, whylen, "%s storage holds %llu bytes, the image needs %llu", kind, (unsigned long long)have,
                 (unsigned long long)want);
        return -1;
    }
    return 0;
}

int h5_image_layout(hid_t ds, int h, int w, H5ImageLayout *lay, char *why, size_t whylen) {
    memset(lay, 0, sizeof *lay);
    hid_t dcpl = H5Dget_create_plist(ds);
    if (dcpl < 0) {
        H5Eclear2(H5E_DEFAULT);
        snprintf(why, whylen, "cannot read how the dataset is stored");
        return -1;
    }
    H5D_layout_t layout = H5Pget_layout(dcpl);
    int nf = H5Pget_nfilters(dcpl), rc = 0;
    if (layout == H5D_CHUNKED) {
        hsize_t *c = lay->cdims;
        if (H5Pget_chunk(dcpl, 3, c) != 3 || c[0] < 1 || c[1] < 1 || c[2] < 1 || c[0] > (hsize_t)h ||
            c[1] > (hsize_t)w || c[2] > 3) {
            snprintf(why, whylen, "chunk shape %llux%llux%llu does not fit inside the %dx%dx3 image",
                     (unsigned long long)c[0], (unsigned long long)c[1], (unsigned long long)c[2], h, w);
            rc = -1;
        } else if (nf < 0 || nf > (int)(sizeof lay->filter_deflate / sizeof lay->filter_deflate[0])) {
            snprintf(why, whylen, "a pipeline of %d filters", nf);
            rc = -1;
        }
        for (int k = 0; rc == 0 && k < nf; k++) {
            unsigned flags = 0, cd[8] = {0}, config = 0;
            size_t ncd = 8;
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)k, &flags, &ncd, cd, 0, NULL, &config);
            if (id == H5Z_FILTER_DEFLATE) {
                lay->filter_deflate[k] = 1;
            } else if (id == H5Z_FILTER_SHUFFLE && (ncd == 0 || cd[0] == 1)) {
                lay->filter_deflate[k] = 0;   // byte shuffle of 1-byte elements: nothing to undo
            } else {
                const char *name = filter_name(id);
                char idbuf[32];
                if (!name) snprintf(idbuf, sizeof idbuf, "id %d", (int)id), name = idbuf;
                snprintf(why, whylen,
                         "stored with the %s filter, which dod does not read (it reads deflate and shuffle; "
                         "repack with `h5repack -f GZIP=4` or `dod-data pack`)",
                         id == H5Z_FILTER_SHUFFLE ? "shuffle (element size not 1)" : name);
                rc = -1;
            }
        }
        lay->n_filters = nf;
        lay->chunked = 1;
    } else if (layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) {
        rc = check_unchunked(ds, h, w, layout == H5D_CONTIGUOUS ? "contiguous" : "compact", why, whylen);
    } else {
        snprintf(why, whylen, "stored with a layout dod does not read (%s)", layout == H5D_VIRTUAL ? "virtual" : "unknown");
        rc = -1;
    }
    H5Pclose(dcpl);
    H5Eclear2(H5E_DEFAULT);
    return rc;
}

// Undoes the filter pipeline of one chunk (filters in reverse order, skipping those the chunk's
// filter_mask marks as not applied). *cur holds len bytes; a is *cur's buffer or b, both of
// capacity cap. On success *cur points at the decoded bytes and the size is returned; -1 on error.
static long decode_chunk(const H5ImageLayout *lay, uint32_t mask, uint8_t **cur, size_t len, uint8_t *a, uint8_t *b,
                         size_t cap, char *why, size_t whylen) {
    for (int k = lay->n_filters - 1; k >= 0; k--) {
        if ((mask >> k) & 1u || !lay->filter_deflate[k]) continue;
        uint8_t *out = *cur == a ? b : a;
        uLongf out_len = cap;
        int z = uncompress(out, &out_len, *cur, len);
        if (z != Z_OK) {
            snprintf(why, whylen, "inflate failed: %s", zError(z));
            return -1;
        }
        *cur = out;
        len = out_len;
    }
    return (long)len;
}

int h5_image_read_chunks(hid_t ds, const H5ImageLayout *lay, int y, int x, int ch, int cw, uint8_t *dst, char *why,
                         size_t whylen) {
    const hsize_t *c = lay->cdims;
    size_t chunk_bytes = (size_t)(c[0] * c[1] * c[2]);   // <= the image's bytes (h5_image_layout)
    size_t cap = chunk_bytes;   // the most a stored chunk can hold: each deflate may grow its input a little
    for (int k = 0; k < lay->n_filters; k++)
        if (lay->filter_deflate[k]) cap = compressBound(cap);
    uint8_t *a = dod_malloc(cap, "chunk buffer"), *b = dod_malloc(cap, "chunk buffer");
    int rc = 0;
    for (hsize_t cy = (hsize_t)y / c[0] * c[0]; rc == 0 && cy < (hsize_t)(y + ch); cy += c[0])
        for (hsize_t cx = (hsize_t)x / c[1] * c[1]; rc == 0 && cx < (hsize_t)(x + cw); cx += c[1])
            for (hsize_t cz = 0; rc == 0 && cz < 3; cz += c[2]) {
                // The size H5Dread_chunk will copy is the index entry's: H5Dget_chunk_storage_size
                // reports the nominal size for unfiltered datasets, whatever the entry holds.
                hsize_t offset[3] = {cy, cx, cz}, stored = 0;
                haddr_t addr = HADDR_UNDEF;
                unsigned info_mask = 0;
                uint32_t mask = 0;
                if (H5Dget_chunk_info_by_coord(ds, offset, &info_mask, &addr, &stored) < 0 || addr == HADDR_UNDEF ||
                    stored == 0 || stored > cap) {
                    H5Eclear2(H5E_DEFAULT);
                    if (stored > cap)
                        snprintf(why, whylen, "chunk at (%llu, %llu, %llu) declares %llu bytes, more than the %zu a "
                                 "%llux%llux%llu chunk can take", (unsigned long long)cy, (unsigned long long)cx,
                                 (unsigned long long)cz, (unsigned long long)stored, cap, (unsigned long long)c[0],
                                 (unsigned long long)c[1], (unsigned long long)c[2]);
                    else
                        snprintf(why, whylen, "chunk at (%llu, %llu, %llu) was never written", (unsigned long long)cy,
                                 (unsigned long long)cx, (unsigned long long)cz);
                    rc = -1;
                    break;
                }
                if (H5Dread_chunk(ds, H5P_DEFAULT, offset, &mask, a) < 0) {
                    H5Eclear2(H5E_DEFAULT);
                    snprintf(why, whylen, "chunk at (%llu, %llu, %llu) cannot be read", (unsigned long long)cy,
                             (unsigned long long)cx, (unsigned long long)cz);
                    rc = -1;
                    break;
                }
                uint8_t *cur = a;
                long len = decode_chunk(lay, mask, &cur, (size_t)stored, a, b, cap, why, whylen);
                if (len != (long)chunk_bytes) {
                    if (len >= 0)
                        snprintf(why, whylen, "chunk at (%llu, %llu, %llu) decodes to %ld bytes, expected %zu",
                                 (unsigned long long)cy, (unsigned long long)cx, (unsigned long long)cz, len,
                                 chunk_bytes);
                    rc = -1;
                    break;
                }
                // The part of this chunk inside the crop: rows [y0, y1), columns [x0, x1), channels [cz, z1).
                int y0 = (int)cy > y ? (int)cy : y, y1 = (int)(cy + c[0]) < y + ch ? (int)(cy + c[0]) : y + ch;
                int x0 = (int)cx > x ? (int)cx : x, x1 = (int)(cx + c[1]) < x + cw ? (int)(cx + c[1]) : x + cw;
                int z1 = (int)(cz + c[2]) < 3 ? (int)(cz + c[2]) : 3;
                for (int r = y0; r < y1; r++) {
                    uint8_t *drow = dst + ((size_t)(r - y) * cw + (size_t)(x0 - x)) * 3;
                    const uint8_t *crow = cur + ((size_t)(r - cy) * c[1] + (size_t)(x0 - cx)) * c[2];
                    if (c[2] == 3) {
                        memcpy(drow, crow, (size_t)(x1 - x0) * 3);
                        continue;
                    }
                    for (int px = 0; px < x1 - x0; px++)
                        for (int k = (int)cz; k < z1; k++) drow[(size_t)px * 3 + k] = crow[(size_t)px * c[2] + (k - cz)];
                }
            }
    free(a);
    free(b);
    return rc;
}
