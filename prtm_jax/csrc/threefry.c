/* Threefry-2x32 (20 rounds), the hash behind JAX's default PRNG, as an XLA FFI target.
 *
 * prtm_jax/native.py builds this file with lanes.c and, on the CPU, lowers JAX's
 * `threefry2x32` primitive to `prtm_threefry2x32` instead of JAX's own lowering (a loop of
 * five unrolled round groups that XLA compiles into several kernels per call site). The bits
 * are the same, bit for bit (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011; tests compare with a NumPy implementation, the paper's known answers and JAX's own
 * lowering); what changes is that a call site costs XLA nothing to compile.
 *
 * Call frame: args k1, k2, x1, x2, u32, each dimension (aligned from the last; missing ones
 *             count as 1) either the output's or 1. They are broadcast here, as lax shapes
 *             them: keys are typically one per seed and counters one per draw, so nothing is
 *             materialised in XLA.
 *             rets y1, y2, u32 of the broadcast shape.
 */
#include <stdint.h>
#include <string.h>

#include "ffi.h"

#define MAX_RANK 16
#define CHUNK 1024

static inline uint32_t rotl(uint32_t v, int r) { return (v << r) | (v >> (32 - r)); }

/* Four rounds with rotations R0..R3, then the key injection number `i` (1..5). */
#define ROUNDS(R0, R1, R2, R3)        \
  a += b, b = rotl(b, R0), b ^= a;    \
  a += b, b = rotl(b, R1), b ^= a;    \
  a += b, b = rotl(b, R2), b ^= a;    \
  a += b, b = rotl(b, R3), b ^= a;
#define INJECT(KA, KB, I) a += KA, b += KB + (uint32_t)(I);

static void threefry2x32(const uint32_t *restrict k1, const uint32_t *restrict k2,
                         const uint32_t *restrict x1, const uint32_t *restrict x2,
                         uint32_t *restrict y1, uint32_t *restrict y2, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const uint32_t ka = k1[i], kb = k2[i], kc = ka ^ kb ^ 0x1BD11BDAu;
    uint32_t a = x1[i] + ka, b = x2[i] + kb;
    ROUNDS(13, 15, 26, 6) INJECT(kb, kc, 1)
    ROUNDS(17, 29, 16, 24) INJECT(kc, ka, 2)
    ROUNDS(13, 15, 26, 6) INJECT(ka, kb, 3)
    ROUNDS(17, 29, 16, 24) INJECT(kb, kc, 4)
    ROUNDS(13, 15, 26, 6) INJECT(kc, ka, 5)
    y1[i] = a, y2[i] = b;
  }
}

XLA_FFI_Error *prtm_threefry2x32(XLA_FFI_CallFrame *frame) {
  if (prtm_ffi_not_executing(frame)) return NULL;
  if (frame->args.size != 4 || frame->rets.size != 2)
    return prtm_ffi_fail(frame, "prtm_threefry2x32: expected args k1, k2, x1, x2 and rets y1, y2");
  XLA_FFI_Buffer **arg = (XLA_FFI_Buffer **)frame->args.args;
  XLA_FFI_Buffer **ret = (XLA_FFI_Buffer **)frame->rets.rets;
  const int64_t R = ret[0]->rank, *D = ret[0]->dims;
  if (R > MAX_RANK) return prtm_ffi_fail(frame, "prtm_threefry2x32: rank above 16");
  for (int j = 0; j < 2; j++) {
    int same = ret[j]->dtype == XLA_FFI_DataType_U32 && ret[j]->rank == R;
    for (int64_t d = 0; same && d < R; d++) same = ret[j]->dims[d] == D[d];
    if (!same)
      return prtm_ffi_fail(frame, "prtm_threefry2x32: results must be two u32 of one shape");
  }
  /* Each argument's stride along each output dimension: 0 where it is broadcast. Dimensions
   * are then merged where every argument is either contiguous across them or broadcast along
   * both, so a typical call is [outer, inner] with keys varying along one of them only. */
  int64_t dims[MAX_RANK], stride[4][MAX_RANK], n = 1;
  for (int j = 0; j < 4; j++) {
    const int64_t lead = R - arg[j]->rank; /* missing leading dimensions count as 1 */
    if (arg[j]->dtype != XLA_FFI_DataType_U32 || lead < 0)
      return prtm_ffi_fail(frame,
                           "prtm_threefry2x32: arguments must be u32, of rank <= the outputs'");
    int64_t s = 1;
    for (int64_t d = R - 1; d >= 0; d--) {
      int64_t size = d < lead ? 1 : arg[j]->dims[d - lead];
      if (size != D[d] && size != 1)
        return prtm_ffi_fail(frame,
                             "prtm_threefry2x32: argument dimensions must be the output's or 1");
      stride[j][d] = size == 1 ? 0 : s;
      s *= size;
    }
  }
  int r = 0;
  for (int64_t d = 0; d < R; d++) {
    n *= D[d];
    if (D[d] == 1) continue;
    int merge = r > 0;
    for (int j = 0; j < 4 && merge; j++)
      merge = stride[j][r - 1] == stride[j][d] * D[d] || (stride[j][r - 1] | stride[j][d]) == 0;
    if (merge) {
      dims[r - 1] *= D[d];
      for (int j = 0; j < 4; j++) stride[j][r - 1] = stride[j][d];
    } else {
      dims[r] = D[d];
      for (int j = 0; j < 4; j++) stride[j][r] = stride[j][d];
      r++;
    }
  }
  if (n == 0) return NULL;
  if (r == 0) dims[0] = 1, stride[0][0] = stride[1][0] = stride[2][0] = stride[3][0] = 0, r = 1;
  /* The innermost dimension in chunks: each argument copied or repeated into a buffer, the
   * hash on whole buffers (vectorised), the outputs written in order. */
  const uint32_t *src[4];
  for (int j = 0; j < 4; j++) src[j] = arg[j]->data;
  uint32_t buf[4][CHUNK];
  uint32_t *y1 = ret[0]->data, *y2 = ret[1]->data;
  int64_t idx[MAX_RANK] = {0}, inner = dims[r - 1];
  for (int64_t done = 0; done < n; done += inner) {
    int64_t off[4] = {0};
    for (int j = 0; j < 4; j++)
      for (int d = 0; d + 1 < r; d++) off[j] += idx[d] * stride[j][d];
    for (int64_t c0 = 0; c0 < inner; c0 += CHUNK) {
      int64_t m = inner - c0 < CHUNK ? inner - c0 : CHUNK;
      for (int j = 0; j < 4; j++) {
        if (stride[j][r - 1]) memcpy(buf[j], src[j] + off[j] + c0, (size_t)m * 4);
        else for (int64_t i = 0; i < m; i++) buf[j][i] = src[j][off[j]];
      }
      threefry2x32(buf[0], buf[1], buf[2], buf[3], y1 + done + c0, y2 + done + c0, m);
    }
    for (int d = r - 2; d >= 0 && ++idx[d] == dims[d]; d--) idx[d] = 0;
  }
  return NULL;
}
