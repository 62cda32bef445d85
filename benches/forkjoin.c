// What one fork-join costs on two cores: the floor under every multithreaded firing by parts.
// A firing of a one-row plan is 1-5 us of work; handing half of it to another core and
// waiting for that half takes two cache-line transfers (the job published, the half done)
// whatever the pool's bookkeeping. This times a chain of one-row depthwise-like firings
// (PLANES planes of one output row, 3x3 taps, rings of 3 rows, as a 6-layer chain by parts
// would make them; every thread keeps its own planes, so no data crosses cores) on one
// thread, and on two threads pinned to cores 0 and 1 with the smallest protocol there is: a
// sequence number published, a done counter awaited, both spinning.
//
//   cc -O2 -mavx2 -mfma -pthread benches/forkjoin.c -o /tmp/forkjoin
//   for p in 32 64 128 256; do /tmp/forkjoin $p; done
//
// Prints, per firing: one thread's time, two threads' time, each thread's own half, and the
// rest (the fork-join: publishing, the worker noticing, the caller noticing it done). On the
// 2-core AMD EPYC (Zen 4) VM of the README's runs M12-M16, six runs each: 64 planes 4.0-5.5 us
// on one thread, 2.4-3.6 us on two; 256 planes 16.0-17.7 us, 9.9-13.0 us on two. The fork-join
// itself is 0.2-0.7 us; what costs more is that the halves are not half: core 1's half often
// took 1.2-1.4x core 0's on the same work (256 planes: 11.4-12.2 us against 8.2-8.8), and
// the caller waits for it. A firing split in two on this machine gains 1.1-1.8x, not 2x.
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { W = 64, RING = 3, LAYERS = 6, FIRINGS = 300000 };

static int planes;
static float *rings;  // LAYERS + 1 rings of `planes` x RING x W floats
static _Alignas(64) atomic_long job;
static _Alignas(64) atomic_long done;
static double worker_spent;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int core) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(core, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

// Firing `f` of the chain (layer f % LAYERS, row f / LAYERS), planes [p0, p1).
static void fire(long f, int p0, int p1) {
    int layer = (int)(f % LAYERS), row = (int)(f / LAYERS);
    size_t ring = (size_t)planes * RING * W;
    const float *in = rings + layer * ring;
    float *out = rings + (layer + 1) * ring;
    __m256 w = _mm256_set1_ps(0.1f);
    for (int p = p0; p < p1; p++) {
        float *o = out + ((size_t)p * RING + row % RING) * W;
        for (int x = 0; x < W; x += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int ky = 0; ky < 3; ky++) {
                const float *r = in + ((size_t)p * RING + (row + ky) % RING) * W;
                for (int kx = 0; kx < 3; kx++) {
                    int c = x + kx > W - 8 ? W - 8 : x + kx;
                    acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(r + c), acc);
                }
            }
            _mm256_storeu_ps(o + x, acc);
        }
    }
}

static void *worker(void *arg) {
    (void)arg;
    pin(1);
    for (long seen = 0;;) {
        long f;
        while ((f = atomic_load_explicit(&job, memory_order_acquire)) == seen) _mm_pause();
        if (f < 0) return NULL;
        seen = f;
        double t0 = now();
        fire(f, planes / 2, planes);
        worker_spent += now() - t0;
        atomic_store_explicit(&done, f, memory_order_release);
    }
}

int main(int argc, char **argv) {
    planes = argc > 1 ? atoi(argv[1]) : 64;
    if (planes < 2) {
        fprintf(stderr, "usage: %s PLANES (at least 2)\n", argv[0]);
        return 2;
    }
    size_t n = (size_t)(LAYERS + 1) * planes * RING * W;
    rings = aligned_alloc(64, n * sizeof(float));
    for (size_t i = 0; i < n; i++) rings[i] = 1e-3f * (float)(i % 97);
    pin(0);
    double t0 = now();
    for (long f = 1; f <= FIRINGS; f++) fire(f, 0, planes);
    double one = (now() - t0) / FIRINGS;
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    double caller_spent = 0;
    t0 = now();
    for (long f = 1; f <= FIRINGS; f++) {
        atomic_store_explicit(&job, f, memory_order_release);
        double c0 = now();
        fire(f, 0, planes / 2);
        caller_spent += now() - c0;
        while (atomic_load_explicit(&done, memory_order_acquire) < f) _mm_pause();
    }
    double two = (now() - t0) / FIRINGS;
    atomic_store(&job, -1);
    pthread_join(t, NULL);
    double half = (caller_spent > worker_spent ? caller_spent : worker_spent) / FIRINGS;
    printf("planes %d: 1 thread %.2f us, 2 threads %.2f us (%.2fx); halves %.2f / %.2f us, "
           "fork-join %.2f us\n",
           planes, one * 1e6, two * 1e6, one / two, caller_spent / FIRINGS * 1e6,
           worker_spent / FIRINGS * 1e6, (two - half) * 1e6);
    return 0;
}
