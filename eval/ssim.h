// Single-channel SSIM kernels behind eval/metrics.h (use that header unless you need one plane).
// Both read contiguous row-major planes of h x w values and return the mean of the SSIM map over
// the 'valid' region as a double. They parallelise over output rows with OpenMP and sum the rows in
// order afterwards, so the result does not depend on the thread count.
#pragma once

// scikit-image 0.19 structural_similarity(x, y, data_range=1) on float32 planes, default
// parameters: scipy uniform_filter 7x7 (each 1-D pass sums in double and stores float32, rows
// first), sample covariance 49/48, C1 = (0.01)^2, C2 = (0.03)^2, every map operation in float32,
// map cropped by 3 px, mean in double. Needs h, w >= 7.
double ssim_plane_skimage_f32(const float *x, const float *y, int h, int w);

// BasicSR's _ssim on float64 planes in [0, 255]: cv2.getGaussianKernel(11, 1.5) outer product,
// correlation over the valid region ([5:-5, 5:-5]), population statistics,
// C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2. Needs h, w >= 11.
double ssim_plane_basicsr_f64(const double *x, const double *y, int h, int w);

// cv2.getGaussianKernel(n, sigma) for sigma > 0 in double: exp(-x^2 / (2 sigma^2)) for x centred,
// times 1 / (sum in order). Writes (=) n values.
void ssim_gaussian_kernel(int n, double sigma, double *out);
