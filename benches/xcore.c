// Reading memory another core just wrote, against memory this core wrote: the cost that
// makes frugal's CPU threads keep to their own part of the map across layers (see
// backend-cpu/src/par.rs). Two threads pinned to cores 0 and 1 take turns; core 0 times a
// strided read (one float per 64-byte line) of a buffer that core 1 (remote = 1) or core 0
// itself (remote = 0) wrote just before.
//
//   cc -O2 -pthread benches/xcore.c -o /tmp/xcore
//   for b in 16384 65536 262144 1048576; do /tmp/xcore $b 0; /tmp/xcore $b 1; done
//
// On the 2-core Xeon VM of the README's runs: 64 KB 0.7-1.0 us local, 5.1-5.5 us remote;
// 1 MB 9.3 us against 41 us.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ITERS = 2000 };
static float *buf;
static size_t n;
static int remote;
static atomic_int phase;
static volatile float sink;

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

static void write_all(float v) {
    for (size_t i = 0; i < n; i++) buf[i] = v;
}

static float read_lines(void) {
    float a = 0;
    for (size_t i = 0; i < n; i += 16) a += buf[i];
    return a;
}

// Core 1: on its turn, writes the buffer when the run measures remote reads.
static void *other(void *arg) {
    (void)arg;
    pin(1);
    for (int it = 0; it < ITERS; it++) {
        while (atomic_load(&phase) != 2 * it + 1) {
        }
        if (remote) write_all((float)it);
        atomic_store(&phase, 2 * it + 2);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s BYTES REMOTE(0|1)\n", argv[0]);
        return 2;
    }
    n = (size_t)atol(argv[1]) / 4;
    remote = atoi(argv[2]);
    buf = aligned_alloc(64, n * 4);
    memset(buf, 0, n * 4);
    pin(0);
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    double spent = 0;
    for (int it = 0; it < ITERS; it++) {
        if (!remote) write_all((float)it);
        atomic_store(&phase, 2 * it + 1);
        while (atomic_load(&phase) != 2 * it + 2) {
        }
        double t0 = now();
        sink = read_lines();
        spent += now() - t0;
    }
    pthread_join(t, NULL);
    printf("bytes %zu remote %d read %.2f us\n", n * 4, remote, spent / ITERS * 1e6);
    return 0;
}
