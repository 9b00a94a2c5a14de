// Side-by-side comparison grids (e.g. input | output | ground truth, one row per image) for a quick
// look at results. Cells may differ in size: each row is as tall as its tallest cell, cells are
// placed left to right, and the grid is as wide as its widest row; the rest is black.
#pragma once
#include "data/image.h"

// A rows x cols grid of the RGB images cells[r * cols + c] (=, allocated; image_free releases).
Image grid_make(const Image *const *cells, int rows, int cols);
