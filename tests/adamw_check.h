// The check of parameters after one AdamW step against a PyTorch reference that took the same step
// (tests/test_dod_model.c, tests/test_dod_vsd.c). Include after tests/check.h.
//
// Adam's first update is lr * g / (|g| + eps) (bias-corrected m = g, sqrt(v) = |g|) plus the weight
// decay, so it is ~lr per element and the tolerance must be far below that: 1e-7 plus 2e-7 * |p| (f32
// rounding of p and of the decay). Where the reference gradient g (after clipping) is not much larger
// than our gradient's tolerance gtol = grad_rel * max|ref grad| * clip, the sign of g and thus the update
// is not determined by the comparison of gradients: such an element may differ by up to
// lr * max |g/(|g|+eps) - g'/(|g'|+eps)| over |g' - g| <= gtol (up to 2 lr when gtol >= |g|).
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>

// Elements of p (after our step) outside that tolerance of ref (after the reference's step); before:
// the values before the step, ref_grad the reference's unclipped gradient, grad ours (printed with the
// first mismatches). *floor_elems (+=) counts the elements that needed the gradient-noise allowance.
static inline int adamw_after_mismatches(const char *name, const float *p, const float *ref, const float *before,
                                         const float *ref_grad, const float *grad, int64_t numel, double grad_rel,
                                         double clip, float lr, int *floor_elems) {
    const float eps = 1e-8f;
    double gscale = 0;
    for (int64_t j = 0; j < numel; j++) gscale = fmax(gscale, fabs((double)ref_grad[j]));
    double gtol = grad_rel * gscale * clip;
    int bad = 0;
    for (int64_t j = 0; j < numel; j++) {
        double g = fabs((double)ref_grad[j]) * clip, lo = g - gtol;
        double sens = lo <= 0 ? 2.0 : fmin(2.0, eps * gtol / ((lo + eps) * (g + eps)));
        double tol = 1e-7 + 2e-7 * fabs(before[j]) + lr * sens, err = fabs((double)p[j] - ref[j]);
        if (err > 1e-7 + 2e-7 * fabs(before[j])) (*floor_elems)++;
        if (err > tol && bad++ < 5)
            printf("after %s[%ld]: %.9g vs %.9g, grad %.4g vs ref %.4g\n", name, (long)j, p[j], ref[j],
                   grad ? grad[j] : NAN, ref_grad[j]);
    }
    return bad;
}
