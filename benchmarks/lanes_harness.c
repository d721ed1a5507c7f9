/* The lanes kernel alone, on one core, against the core's FMA throughput.
 *
 * benchmarks/kernel.py compiles this file with the kernel's own flags and -DKERNEL="path to
 * prtm_jax/csrc/lanes.c", which it includes, so it times the shipped train_block() itself:
 * one block of 16 seeds on the reference workload (MLP 10 -> 64 -> 32 -> 10, 2,000 rows,
 * batches of 32 in order, summed loss, lr 0.005), from a fixed pseudo-random start.
 *
 *   lanes_harness EPOCHS REPEATS [DUMP]
 *
 * prints `key value` lines: the best of REPEATS trainings in us per seed-step, the FLOP rate
 * that gives (3 x the forward products' FLOPs, as benchmarks/run.py counts them), and the
 * rate of a loop of 24 independent FMAs on the same vectors. With DUMP, it writes lane 0's
 * data, initial and trained parameters there (float32; labels int32), for a test to retrain
 * in float64.
 */
#include KERNEL

#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint32_t rng_state;
static float uniform(void) { /* [0, 1), 24 bits of a 32-bit LCG */
  rng_state = rng_state * 1103515245u + 12345u;
  return (float)(rng_state >> 8) / (float)(1 << 24);
}

#define FMA_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) \
  X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)

/* 24 independent chains of a = a * m + c: enough in flight for any core's FMA latency. */
static double fma_gflops(void) {
#define DECL(i) vf a##i = splat((float)(i));
#define STEP(i) a##i = a##i * m + c;
#define SUM(i) s += a##i;
  const long n = 20000000;
  double best = 1e30;
  vf s = {0};
  for (int rep = 0; rep < 3; rep++) {
    FMA_CHAINS(DECL)
    vf m = splat(0.999999f), c = splat(1e-7f);
    double t = now();
    for (long it = 0; it < n; it++) {
      FMA_CHAINS(STEP)
    }
    t = now() - t;
    FMA_CHAINS(SUM)
    if (t < best) best = t;
  }
  if (s[0] == 12345.0f) puts("");  /* keep the chains alive */
  return n * 24.0 * 2 * LANES / best / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s EPOCHS REPEATS [DUMP]\n", argv[0]);
    return 2;
  }
  const int E = atoi(argv[1]), repeats = atoi(argv[2]);
  const int d[4] = {10, 64, 32, 10};
  Net net;
  net.L = 3;
  net.N = 2000;
  net.batch = 32;
  net.mean_loss = 0;
  net.E = E;
  size_t n_par = 0, n_act = 0;
  for (int l = 0; l <= 3; l++) {
    net.d[l] = d[l];
    net.ld[l] = l > 0 ? d[l] | 1 : d[l]; /* as prtm_sgd_lanes lays them out */
    if (l < 3) n_par += (size_t)d[l] * d[l + 1] + d[l + 1];
    if (l > 0) n_act += 2 * (size_t)net.batch * net.ld[l];
  }
  size_t n_vf = (size_t)net.N * d[0] + n_par + n_act + E;
  vf *mem = aligned_alloc(64, n_vf * sizeof(vf) + net.N * sizeof(vi)), *p = mem;
  if (!mem) {
    fprintf(stderr, "lanes_harness: out of memory\n");
    return 1;
  }
  net.x = p, p += (size_t)net.N * d[0];
  for (int l = 0; l < 3; l++) {
    net.w[l] = p, p += d[l] * d[l + 1];
    net.b[l] = p, p += d[l + 1];
  }
  for (int l = 1; l <= 3; l++) {
    net.act[l] = p, p += net.batch * net.ld[l];
    net.delta[l] = p, p += net.batch * net.ld[l];
  }
  net.loss_E = p, p += E;
  net.y = (vi *)p;
  net.lr = splat(0.005f);

  FILE *dump = argc > 3 ? fopen(argv[3], "wb") : NULL;
  if (argc > 3 && !dump) {
    fprintf(stderr, "lanes_harness: cannot write %s\n", argv[3]);
    return 1;
  }
  double best = 1e30;
  for (int rep = 0; rep < repeats; rep++) {
    rng_state = 12345u; /* every repeat trains the same problem */
    for (size_t i = 0; i < (size_t)net.N * d[0]; i++)
      for (int k = 0; k < LANES; k++) net.x[i][k] = 2 * uniform() - 1;
    for (int i = 0; i < net.N; i++)
      for (int k = 0; k < LANES; k++) net.y[i][k] = (int)(uniform() * 10) % 10;
    for (int l = 0; l < 3; l++) {
      for (int i = 0; i < d[l] * d[l + 1]; i++)
        for (int k = 0; k < LANES; k++) net.w[l][i][k] = 0.3f * (2 * uniform() - 1);
      for (int i = 0; i < d[l + 1]; i++) net.b[l][i] = splat(0.0f);
    }
    if (dump && rep == 0) {
      for (size_t i = 0; i < (size_t)net.N * d[0]; i++) fwrite(&net.x[i][0], 4, 1, dump);
      for (int i = 0; i < net.N; i++) fwrite(&net.y[i][0], 4, 1, dump);
      for (int l = 0; l < 3; l++) {
        for (int i = 0; i < d[l] * d[l + 1]; i++) fwrite(&net.w[l][i][0], 4, 1, dump);
        for (int i = 0; i < d[l + 1]; i++) fwrite(&net.b[l][i][0], 4, 1, dump);
      }
    }
    double t = now();
    train_block(&net);
    t = now() - t;
    if (t < best) best = t;
  }
  if (dump) {
    for (int l = 0; l < 3; l++) {
      for (int i = 0; i < d[l] * d[l + 1]; i++) fwrite(&net.w[l][i][0], 4, 1, dump);
      for (int i = 0; i < d[l + 1]; i++) fwrite(&net.b[l][i][0], 4, 1, dump);
    }
    fclose(dump);
  }
  const double seed_steps = (double)E * ((net.N + net.batch - 1) / net.batch) * LANES;
  double flop = 0;
  for (int l = 0; l < 3; l++) flop += 3.0 * 2 * net.batch * d[l] * d[l + 1];
  printf("kernel_us_per_seed_step %.4f\n", best / seed_steps * 1e6);
  printf("kernel_gflops %.2f\n", flop * seed_steps / best / 1e9);
  printf("fma_gflops %.2f\n", fma_gflops());
  free(mem);
  return 0;
}
