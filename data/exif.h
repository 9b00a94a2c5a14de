// The EXIF orientation tag of a JPEG file, for restoring photos upright (dod-restore).
//
// A small parser of just that tag (ours, rather than libexif: one SHORT in IFD0 is all we read, and a
// parser that follows no offsets beyond it has far less to get wrong on hostile files than a library
// that decodes every IFD and maker note; tests/fuzz/fuzz_photo.c fuzzes it). It walks the JPEG markers from
// SOI up to SOS, finds the APP1 segment that starts with "Exif\0\0", and reads tag 0x0112 of the
// TIFF header's first IFD in either byte order. Every offset is checked against the segment.
#pragma once
#include <stddef.h>
#include <stdint.h>

// The orientation (1..8; TIFF meaning: 1 upright, 2 mirrored, 3 rotated 180, 4 flipped, 5 transposed,
// 6 rotated 90 clockwise to view, 7 transversed, 8 rotated 270 clockwise to view) recorded in the
// JPEG bytes buf[0..n); 1 when there is none or the data is not a well-formed JPEG / EXIF block.
int exif_jpeg_orientation(const uint8_t *buf, size_t n);

// Reorients an HWC image of c bytes-per-pixel channels (each `elem` bytes) as a viewer would show it
// (=): out has the upright size (*ow x *oh: w x h, or h x w for orientations 5..8). out must hold
// w * h * c * elem bytes.
void exif_apply_orientation(int orientation, const void *in, int w, int h, int c, int elem, void *out, int *ow,
                            int *oh);
