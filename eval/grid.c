// Comparison grids (see eval/grid.h).
#include "eval/grid.h"

#include <string.h>

Image grid_make(const Image *const *cells, int rows, int cols) {
    int gw = 0, gh = 0;
    for (int r = 0; r < rows; r++) {
        int rw = 0, rh = 0;
        for (int c = 0; c < cols; c++) {
            const Image *im = cells[r * cols + c];
            rw += im->w;
            if (im->h > rh) rh = im->h;
        }
        if (rw > gw) gw = rw;
        gh += rh;
    }
    Image grid = image_alloc(gw > 0 ? gw : 1, gh > 0 ? gh : 1, 3);
    for (int r = 0, y0 = 0; r < rows; r++) {
        int rh = 0;
        for (int c = 0, x0 = 0; c < cols; c++) {
            const Image *im = cells[r * cols + c];
            for (int y = 0; y < im->h; y++)
                memcpy(grid.pix + ((size_t)(y0 + y) * grid.w + x0) * 3, im->pix + (size_t)y * im->w * 3, (size_t)im->w * 3);
            x0 += im->w;
            if (im->h > rh) rh = im->h;
        }
        y0 += rh;
    }
    return grid;
}
