/* SGD training of many small ReLU MLPs at once, one seed per SIMD lane.
 *
 * prtm_jax/native.py builds this file (at install, or else at first use) and registers
 * `prtm_sgd_lanes` as an XLA FFI target on the CPU; prtm_jax/train.py calls it through jax.ffi.ffi_call. It trains exactly
 * what train.py's XLA trainer trains for its supported specs (ReLU hidden layers, softmax
 * cross-entropy summed or averaged over the batch, plain SGD, batches in order, the last one
 * partial), with float32 arithmetic summed in a different order.
 *
 * Why lanes: a seed's products are at most 32x64x32, too small for a matrix library to run at
 * speed, and every seed runs the same program on its own numbers. Here a `vf` holds one number
 * of LANES seeds, so every multiply-add of every product, whatever its shape or transposition,
 * is one full-width vector instruction with no shuffles, and a whole SGD step (forward,
 * softmax, backward, updates) is one pass over a block of LANES seeds that stays in L2
 * (docs/performance.md).
 *
 * Call frame (all buffers row-major, any number of leading "seed" axes, flattened to S):
 *   args: x f32 [S, N, D], y s32 [S, N], lr f32 [S], opts s32 [S, 2] = (batch, mean_loss),
 *         then w_1 f32 [S, d_0, d_1], b_1 f32 [S, d_1], ..., w_L, b_L (initial parameters)
 *   rets: the trained w_1, b_1, ..., w_L, b_L (same shapes), loss f32 [S, E]: the mean
 *         cross-entropy of the training rows in each of the E epochs, as seen during it.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ffi.h"

#define LANES 16
typedef float vf __attribute__((vector_size(LANES * 4)));
typedef int32_t vi __attribute__((vector_size(LANES * 4)));

#define MAX_LAYERS 16

static inline vf splat(float a) { return (vf){0} + a; }
static inline vf where_gt0(vf m, vf x) { return (vf)((vi)x & (vi)(m > 0)); }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }

/* exp(x) for x <= 0 (softmax after subtracting the max): 2^n * p(r), |r| <= ln2/2, relative
 * error ~2e-7; underflows to 0 below -87.3. NaN in, NaN out. */
static inline vf vexp(vf x) {
  const float lo = -87.33654f;
  vi under = x < lo;
  vf t = x * 1.44269504088896341f;
  vf n = t + splat(12582912.0f) - splat(12582912.0f); /* round to nearest */
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf y = p * (vf)vsel(under, (vf){0}, (vf)e);
  return y;
}

/* log(x) for x >= 1 (a softmax denominator): frexp, then a polynomial (Cephes' logf). */
static inline vf vlog(vf x) {
  vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xff) - 126;
  vf m = (vf)((bits & 0x007fffff) | 0x3f000000); /* in [0.5, 1) */
  vi small = m < 0.70710678f;
  vf ef = __builtin_convertvector(e, vf) - vsel(small, splat(1.0f), (vf){0});
  m = m + vsel(small, m, (vf){0}) - 1.0f;
  vf z = m * m;
  vf p = splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  vf y = p * m * z - 2.12194440e-4f * ef - 0.5f * z + m + 0.693359375f * ef;
  return vsel(x == x, y, x); /* NaN stays NaN */
}

/* What a product does with each result P[i, j] as it leaves the registers (its "epilogue"):
 * store it; add alpha * P to C (an SGD update); keep P where mask[i, j] > 0 (ReLU's
 * derivative); add bias[j]; add bias[j], then ReLU; the SGD update of C and also of the bias
 * by B's column sums (its gradient, EPI_UPDATE_BIAS). Fused here, they cost no extra pass over
 * memory, and each is the same arithmetic, in the same order, as a separate loop. */
enum { EPI_STORE, EPI_UPDATE, EPI_MASK, EPI_BIAS, EPI_BIAS_RELU, EPI_UPDATE_BIAS };

/* P[i, j] = sum_k A[i*sai + k*sak] * B[k*sbk + j*sbj] for i in [i0, i1), j in [j0, j1), in
 * register tiles of TM x TN, then the epilogue into C[i*sci + j]. Every operand is a vf, so
 * the strides choose NN, TN or NT layouts at no cost. The k loop is unrolled twice: on AMD
 * Zen 4 the rolled loop ran at 65 % of the FMA throughput, unrolled at 91 % (the same sums
 * in the same order; docs/performance.md, optimisation 37). */
#define DEFINE_TILE(TM, TN)                                                                  \
  static inline __attribute__((always_inline)) void tile_##TM##x##TN(                        \
      int i0, int i1, int j0, int j1, int K, const vf *A, int sai, int sak, const vf *B,      \
      int sbk, int sbj, vf *C, int sci, vf alpha, int epi, vf *bias, const vf *mask) {        \
    for (int i = i0; i < i1; i += TM)                                                         \
      for (int j = j0; j < j1; j += TN) {                                                     \
        vf acc[TM][TN], s[TN];                                                                \
        /* EPI_UPDATE_BIAS: also bias[j] += alpha * sum_k B[k, j], summed from the B loads  \
         * of the first row of tiles (once per column) rather than in another pass over B. */ \
        int colsum = epi == EPI_UPDATE_BIAS && i == 0;                                        \
        _Pragma("GCC unroll 8") for (int b = 0; b < TN; b++) s[b] = (vf){0};                  \
        _Pragma("GCC unroll 8") for (int a = 0; a < TM; a++)                                  \
          _Pragma("GCC unroll 8") for (int b = 0; b < TN; b++) acc[a][b] = (vf){0};          \
        _Pragma("GCC unroll 2") for (int k = 0; k < K; k++) {                                \
          vf av[TM], bv[TN];                                                                  \
          _Pragma("GCC unroll 8") for (int a = 0; a < TM; a++) av[a] = A[(i + a) * sai + k * sak]; \
          _Pragma("GCC unroll 8") for (int b = 0; b < TN; b++) bv[b] = B[k * sbk + (j + b) * sbj]; \
          _Pragma("GCC unroll 8") for (int a = 0; a < TM; a++)                                \
            _Pragma("GCC unroll 8") for (int b = 0; b < TN; b++) acc[a][b] += av[a] * bv[b];  \
          if (colsum)                                                                         \
            _Pragma("GCC unroll 8") for (int b = 0; b < TN; b++) s[b] += bv[b];               \
        }                                                                                     \
        if (colsum)                                                                           \
          _Pragma("GCC unroll 8") for (int b = 0; b < TN; b++) bias[j + b] += alpha * s[b];   \
        _Pragma("GCC unroll 8") for (int a = 0; a < TM; a++)                                  \
          _Pragma("GCC unroll 8") for (int b = 0; b < TN; b++) {                              \
            int o = (i + a) * sci + j + b;                                                    \
            vf v = acc[a][b];                                                                 \
            if (epi == EPI_UPDATE || epi == EPI_UPDATE_BIAS) v = C[o] + alpha * v;            \
            else if (epi == EPI_BIAS || epi == EPI_BIAS_RELU) v += bias[j + b];               \
            if (epi == EPI_BIAS_RELU) v = vsel(v <= 0, (vf){0}, v);                           \
            if (epi == EPI_MASK) v = where_gt0(mask[o], v);                                   \
            C[o] = v;                                                                         \
          }                                                                                   \
      }                                                                                       \
  }
DEFINE_TILE(4, 4)
DEFINE_TILE(4, 5)
DEFINE_TILE(4, 1)
DEFINE_TILE(5, 4)
DEFINE_TILE(5, 1)
DEFINE_TILE(1, 4)
DEFINE_TILE(1, 5)
DEFINE_TILE(1, 1)

/* Inlined, with its tiles, at each call site: the strides that are 1 and the epilogue become
 * constants there, so each tile's k loop is compiled for its layout (GCC spilled the generic
 * loop's strides to the stack) and the fused bias gradient (EPI_UPDATE_BIAS) costs nothing
 * elsewhere. Same arithmetic: 5.42 -> 5.2-5.3 us per seed-step on the EPYC. */
static inline __attribute__((always_inline)) void gemm(int M, int N, int K, const vf *A,
                                                       int sai, int sak, const vf *B, int sbk,
                                                       int sbj, vf *C, int sci, vf alpha,
                                                       int epi, vf *bias, const vf *mask) {
  /* Register tiles of 4 x 4; 4 x 5 for widths such as 10 and 5 x 4 for heights such as 10.
   * The rest of the rows and columns in tiles 1 high or 1 wide. */
  int tn = N % 4 == 0 ? 4 : N % 5 == 0 ? 5 : 4;
  int tm = M % 4 && M % 5 == 0 && tn == 4 ? 5 : 4;
  int n_main = N - N % tn, m_main = M - M % tm;
#define ARGS K, A, sai, sak, B, sbk, sbj, C, sci, alpha, epi, bias, mask
  if (m_main && n_main) {
    if (tm == 5) tile_5x4(0, m_main, 0, n_main, ARGS);
    else if (tn == 5) tile_4x5(0, m_main, 0, n_main, ARGS);
    else tile_4x4(0, m_main, 0, n_main, ARGS);
  }
  if (m_main && N > n_main) {
    if (tm == 5) tile_5x1(0, m_main, n_main, N, ARGS);
    else tile_4x1(0, m_main, n_main, N, ARGS);
  }
  if (M > m_main && n_main) {
    if (tn == 5) tile_1x5(m_main, M, 0, n_main, ARGS);
    else tile_1x4(m_main, M, 0, n_main, ARGS);
  }
  if (M > m_main && N > n_main) tile_1x1(m_main, M, n_main, N, ARGS);
#undef ARGS
}

typedef struct {
  int L;               /* layers */
  int d[MAX_LAYERS + 1]; /* widths d_0 .. d_L */
  int ld[MAX_LAYERS + 1]; /* row strides of act[l] and delta[l]: d_l, made odd for l > 0 */
  int N, E, batch, mean_loss;
  vf *w[MAX_LAYERS], *b[MAX_LAYERS]; /* [d_{l} x d_{l+1}], [d_{l+1}] */
  vf *act[MAX_LAYERS + 1];           /* act[0] is the batch's input rows; act[L] logits */
  vf *delta[MAX_LAYERS + 1];
  vf *x;      /* [N x d_0] */
  vi *y;      /* [N] */
  vf *loss_E; /* [E] */
  vf lr;
} Net;

/* One SGD step on rows [r0, r0 + B) for every lane; returns the rows' summed cross-entropy. */
static vf sgd_step(Net *n, int r0, int B) {
  const int L = n->L;
  const vf zero = {0};
  n->act[0] = n->x + (size_t)r0 * n->d[0];
  for (int l = 0; l < L; l++) {
    int di = n->d[l], dout = n->d[l + 1];
    vf *out = n->act[l + 1];
    /* ReLU as jax.nn.relu: NaN stays NaN, so a diverging seed is seen as one. */
    int epi = l + 1 < L ? EPI_BIAS_RELU : EPI_BIAS;
    gemm(B, dout, di, n->act[l], n->ld[l], 1, n->w[l], dout, 1, out, n->ld[l + 1], zero, epi,
         n->b[l], NULL);
  }
  /* Softmax cross-entropy: delta_L = scale * (softmax - onehot), loss += logsumexp - logit_y. */
  const int C = n->d[L], ldC = n->ld[L];
  vf scale = splat(n->mean_loss ? 1.0f / B : 1.0f);
  vf *logits = n->act[L], *dL = n->delta[L], loss = zero;
  for (int r = 0; r < B; r++) {
    vf *z = &logits[r * ldC], *dz = &dL[r * ldC];
    vi y = n->y[r0 + r];
    vf m = z[0];
    for (int c = 1; c < C; c++) m = vsel(z[c] > m, z[c], m);
    m = vsel(m == m, m, zero); /* a NaN row stays NaN through z - m */
    vf sum = zero, zy = zero;
    for (int c = 0; c < C; c++) {
      dz[c] = vexp(z[c] - m);
      sum += dz[c];
      zy += vsel(y == c, z[c], zero);
    }
    loss += vlog(sum) + m - zy;
    vf inv = scale / sum;
    for (int c = 0; c < C; c++) dz[c] = dz[c] * inv - vsel(y == c, scale, zero);
  }
  /* Backward, layer by layer: the input gradient uses w before w is updated. */
  vf nlr = -n->lr;
  for (int l = L - 1; l >= 0; l--) {
    int di = n->d[l], dout = n->d[l + 1];
    vf *g = n->delta[l + 1], *a = n->act[l];
    if (l > 0) {
      vf *ga = n->delta[l];
      gemm(B, di, dout, g, n->ld[l + 1], 1, n->w[l], 1, dout, ga, n->ld[l], zero, EPI_MASK, NULL, a);
    }
    /* w -= lr * a^T g;  b -= lr * sum_rows g */
    gemm(di, dout, B, a, 1, n->ld[l], g, n->ld[l + 1], 1, n->w[l], dout, nlr, EPI_UPDATE_BIAS,
         n->b[l], NULL);
  }
  return loss;
}

static void train_block(Net *n) {
  const vf zero = {0};
  for (int e = 0; e < n->E; e++) {
    vf loss = zero;
    for (int r0 = 0; r0 < n->N; r0 += n->batch) {
      int B = n->N - r0 < n->batch ? n->N - r0 : n->batch;
      loss += sgd_step(n, r0, B);
    }
    n->loss_E[e] = loss / (float)n->N;
  }
}

static int64_t elems(const XLA_FFI_Buffer *buf, int from) {
  int64_t n = 1;
  for (int64_t i = from; i < buf->rank; i++) n *= buf->dims[i];
  return n;
}

XLA_FFI_Error *prtm_sgd_lanes(XLA_FFI_CallFrame *frame) {
  if (prtm_ffi_not_executing(frame)) return NULL;
  const int64_t n_args = frame->args.size, n_rets = frame->rets.size;
  const int L = (int)(n_args - 4) / 2;
  if (n_args < 6 || n_args % 2 || n_rets != 2 * L + 1 || L > MAX_LAYERS)
    return prtm_ffi_fail(frame, "prtm_sgd_lanes: expected x, y, lr, opts and (w, b) per layer");
  XLA_FFI_Buffer **arg = (XLA_FFI_Buffer **)frame->args.args;
  XLA_FFI_Buffer **ret = (XLA_FFI_Buffer **)frame->rets.rets;
  const XLA_FFI_Buffer *xb = arg[0];
  const int64_t S = elems(xb, 0) / elems(xb, xb->rank - 2);
  Net net;
  net.L = L;
  net.N = (int)xb->dims[xb->rank - 2];
  net.d[0] = (int)xb->dims[xb->rank - 1];
  for (int l = 0; l < L; l++) net.d[l + 1] = (int)arg[4 + 2 * l + 1]->dims[arg[4 + 2 * l + 1]->rank - 1];
  const int32_t *opts = (const int32_t *)arg[3]->data;
  net.batch = opts[0];
  net.mean_loss = opts[1];
  const XLA_FFI_Buffer *lossb = ret[2 * L];
  net.E = (int)lossb->dims[lossb->rank - 1];
  if (net.batch < 1 || net.batch > net.N)
    return prtm_ffi_fail(frame, "prtm_sgd_lanes: bad batch size");

  /* One allocation per call: lane-major data, parameters, activations and errors. */
  size_t n_par = 0, n_act = 0;
  for (int l = 0; l <= L; l++) {
    /* An odd row stride: rows 2^k vectors apart would share L1 sets, and the weight gradient
     * reads activations and errors down their columns. */
    net.ld[l] = l > 0 ? net.d[l] | 1 : net.d[l];
    if (l < L) n_par += (size_t)net.d[l] * net.d[l + 1] + net.d[l + 1];
    if (l > 0) n_act += 2 * (size_t)net.batch * net.ld[l];
  }
  size_t n_vf = (size_t)net.N * net.d[0] + n_par + n_act + net.E;
  vf *mem = aligned_alloc(64, n_vf * sizeof(vf) + net.N * sizeof(vi));
  if (!mem) return prtm_ffi_fail(frame, "prtm_sgd_lanes: out of memory");
  vf *p = mem;
  net.x = p, p += (size_t)net.N * net.d[0];
  for (int l = 0; l < L; l++) {
    net.w[l] = p, p += (size_t)net.d[l] * net.d[l + 1];
    net.b[l] = p, p += net.d[l + 1];
  }
  for (int l = 1; l <= L; l++) {
    net.act[l] = p, p += (size_t)net.batch * net.ld[l];
    net.delta[l] = p, p += (size_t)net.batch * net.ld[l];
  }
  net.loss_E = p, p += net.E;
  net.y = (vi *)p;

  const float *x = xb->data, *lr = arg[2]->data;
  const int32_t *y = arg[1]->data;
  float *loss = lossb->data;
  const int64_t row = (int64_t)net.N * net.d[0];
  for (int64_t s0 = 0; s0 < S; s0 += LANES) {
    /* Lanes past the last seed repeat it, and are not written back. */
    int64_t src[LANES];
    for (int k = 0; k < LANES; k++) src[k] = s0 + k < S ? s0 + k : S - 1;
    for (int64_t i = 0; i < row; i++)
      for (int k = 0; k < LANES; k++) net.x[i][k] = x[src[k] * row + i];
    for (int i = 0; i < net.N; i++)
      for (int k = 0; k < LANES; k++) net.y[i][k] = y[src[k] * net.N + i];
    for (int k = 0; k < LANES; k++) net.lr[k] = lr[src[k]];
    for (int l = 0; l < L; l++) {
      const float *w = arg[4 + 2 * l]->data, *b = arg[5 + 2 * l]->data;
      int64_t nw = (int64_t)net.d[l] * net.d[l + 1], nb = net.d[l + 1];
      for (int64_t i = 0; i < nw; i++)
        for (int k = 0; k < LANES; k++) net.w[l][i][k] = w[src[k] * nw + i];
      for (int64_t i = 0; i < nb; i++)
        for (int k = 0; k < LANES; k++) net.b[l][i][k] = b[src[k] * nb + i];
    }
    train_block(&net);
    int live = S - s0 < LANES ? (int)(S - s0) : LANES;
    for (int l = 0; l < L; l++) {
      float *w = ret[2 * l]->data, *b = ret[2 * l + 1]->data;
      int64_t nw = (int64_t)net.d[l] * net.d[l + 1], nb = net.d[l + 1];
      for (int k = 0; k < live; k++) {
        for (int64_t i = 0; i < nw; i++) w[(s0 + k) * nw + i] = net.w[l][i][k];
        for (int64_t i = 0; i < nb; i++) b[(s0 + k) * nb + i] = net.b[l][i][k];
      }
    }
    for (int k = 0; k < live; k++)
      for (int e = 0; e < net.E; e++) loss[(s0 + k) * net.E + e] = net.loss_E[e][k];
  }
  free(mem);
  return NULL;
}
