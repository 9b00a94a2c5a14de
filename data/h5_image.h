// Reading one uint8 [H, W, 3] image dataset of a dod dataset file, at the HDF5 level: the checks of
// how it is stored (layout, filters, chunk shape, every byte written) and the chunk reader that
// decodes it without libhdf5's filter pipeline. HDF5-only (included by data/h5_*.c).
//
// Accepted storage: chunked with any chunk shape inside the image and the filters deflate and/or
// shuffle (shuffle is the identity on 1-byte elements), decoded here with zlib; or contiguous /
// compact without filters, read through H5Dread. Anything else (szip, n-bit, scale-offset,
// fletcher32, plugin filters, virtual datasets, chunks larger than the image) is refused naming
// the layout or filter, so no byte of a layout we cannot check reaches a buffer. Chunks or storage
// never written (which libhdf5 would read as fill values) are errors, not zeros.
#pragma once
#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int chunked;              // 1: decoded here chunk by chunk; 0: contiguous/compact, read by H5Dread
    hsize_t cdims[3];         // chunk shape (chunked)
    int n_filters;
    int filter_deflate[8];    // per filter of the pipeline (write order): 1 deflate, 0 shuffle
} H5ImageLayout;

// Checks how dataset ds (an h x w x 3 uint8 image) is stored and fills lay (=). 0, or -1 with a
// reason naming the layout or filter.
int h5_image_layout(hid_t ds, int h, int w, H5ImageLayout *lay, char *why, size_t whylen);

// Reads the ch x cw crop at (y, x) of a chunked image into dst (=, HWC bytes), fetching only the
// chunks it touches with H5Dread_chunk and decoding them here (outside libhdf5's global lock, so
// loader threads inflate in parallel). Every stored size is checked against what a chunk of this
// shape can take before anything is allocated. 0, or -1 with the reason (a missing, oversized or
// corrupt chunk).
int h5_image_read_chunks(hid_t ds, const H5ImageLayout *lay, int y, int x, int ch, int cw, uint8_t *dst, char *why,
                         size_t whylen);

