// The staging ring of the asynchronous host-to-device copies (autograd/staging_ring.h), with a fake
// fence wait: a new region never overlaps one whose copy may still run, the ring waits for exactly the
// regions it must (the oldest ones in its way, including a skipped tail on a wrap, or the oldest when
// every slot is in flight), and regions come out aligned and inside the ring.
#include "autograd/staging_ring.h"
#include "tests/check.h"

typedef struct {
    bool in_flight[STAGING_RING_MAX_LIVE];
    StagingRegion region[STAGING_RING_MAX_LIVE];
    int waits[1024], n_waits;
} FakeFences;

static void fake_wait(void *ctx, int fence) {
    FakeFences *f = ctx;
    CHECK(fence >= 0 && fence < STAGING_RING_MAX_LIVE && f->in_flight[fence], "wait for fence %d not in flight", fence);
    f->in_flight[fence] = false;
    if (f->n_waits < 1024) f->waits[f->n_waits++] = fence;
}

// Reserves and records the region as in flight; checks it against every region still in flight.
static int reserve(StagingRing *r, FakeFences *f, size_t bytes, size_t *offset) {
    int fence = staging_ring_reserve(r, bytes, offset);
    CHECK(*offset % STAGING_RING_ALIGN == 0 && *offset + bytes <= r->size, "region %zu + %zu outside the ring of %zu",
          *offset, bytes, r->size);
    for (int i = 0; i < STAGING_RING_MAX_LIVE; i++)
        if (f->in_flight[i])
            CHECK(i != fence && (*offset >= f->region[i].offset + f->region[i].bytes || *offset + bytes <= f->region[i].offset),
                  "new region [%zu, %zu) overlaps fence %d [%zu, +%zu) still in flight", *offset, *offset + bytes, i,
                  f->region[i].offset, f->region[i].bytes);
    f->in_flight[fence] = true;
    f->region[fence] = (StagingRegion){*offset, bytes};
    return fence;
}

static void test_wrap(void) {
    FakeFences f = {0};
    StagingRing r;
    staging_ring_init(&r, 32 * STAGING_RING_ALIGN, fake_wait, &f);
    size_t off;
    size_t A = STAGING_RING_ALIGN;
    int a = reserve(&r, &f, 10 * A, &off);  // [0, 10)
    CHECK(off == 0, "first region at %zu", off);
    int b = reserve(&r, &f, 10 * A, &off);  // [10, 20)
    int c = reserve(&r, &f, 10 * A, &off);  // [20, 30)
    CHECK(off == 20 * A && f.n_waits == 0, "third region at %zu, %d waits", off / A, f.n_waits);
    reserve(&r, &f, 2 * A, &off);  // [30, 32): fits the tail, no wait
    CHECK(off == 30 * A && f.n_waits == 0, "tail region at %zu, %d waits", off / A, f.n_waits);
    int e = reserve(&r, &f, 8 * A, &off);  // wraps to [0, 8): waits for a only
    CHECK(off == 0 && f.n_waits == 1 && f.waits[0] == a, "wrap: at %zu, waits %d (first %d, want %d)", off / A,
          f.n_waits, f.n_waits ? f.waits[0] : -1, a);
    (void)b;
    (void)c;
    (void)e;
    // Now [8, 20) is needed: b [10, 20) is in the way, c is not.
    reserve(&r, &f, 12 * A, &off);
    CHECK(off == 8 * A && f.n_waits == 2 && f.waits[1] == b, "second claim: at %zu, waits %d", off / A, f.n_waits);
    // A claim that wraps past a live tail must wait for the tail's regions too: live are c [20, 30),
    // d [30, 32), e [0, 8), f [8, 20); head 20; 13 regions do not fit [20, 32): wrap to [0, 13), skipping
    // [20, 32) -> waits for c, d (the tail, oldest first), then e, f.
    reserve(&r, &f, 13 * A, &off);
    CHECK(off == 0 && f.n_waits == 6, "wrap past the tail: at %zu, %d waits", off / A, f.n_waits);
}

static void test_full_fifo(void) {
    FakeFences f = {0};
    StagingRing r;
    staging_ring_init(&r, (size_t)1 << 30, fake_wait, &f);
    size_t off;
    int first = reserve(&r, &f, 1, &off);
    for (int i = 1; i < STAGING_RING_MAX_LIVE; i++) reserve(&r, &f, 1, &off);
    CHECK(f.n_waits == 0, "%d waits before the slots ran out", f.n_waits);
    reserve(&r, &f, 1, &off);  // every slot live: the oldest is waited for, nothing else
    CHECK(f.n_waits == 1 && f.waits[0] == first, "full: %d waits (first %d)", f.n_waits, f.n_waits ? f.waits[0] : -1);
}

// Random sizes with copies finishing on their own now and then: the invariants hold throughout.
static void test_random(void) {
    FakeFences f = {0};
    StagingRing r;
    staging_ring_init(&r, 1000 * STAGING_RING_ALIGN, fake_wait, &f);
    uint64_t x = 12345;
    int reservations = 0;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t bytes = 1 + (x >> 33) % (300 * STAGING_RING_ALIGN);
        size_t off;
        f.n_waits = 0;
        reserve(&r, &f, bytes, &off);
        reservations++;
    }
    CHECK(reservations == 20000 && r.n_live >= 1 && r.n_live <= STAGING_RING_MAX_LIVE, "live %d", r.n_live);
}

int main(void) {
    test_wrap();
    test_full_fifo();
    test_random();
    return check_summary();
}
