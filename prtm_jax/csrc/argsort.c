/* A stable argsort of 32-bit integer keys along the last axis, as an XLA FFI target.
 *
 * prtm_jax/native.py builds this file with lanes.c and calls it, on the CPU, where prtm_jax
 * sorts integer keys: random permutations (`native.permutation`, jax.random.permutation's
 * algorithm) and cmi_null's shuffles within class. A stable sort's result is unique, so this
 * returns exactly what `jnp.argsort(keys, stable=True)` returns; XLA's CPU sort calls a
 * compiled comparator per comparison, this is an LSD radix sort (8-bit digits, a digit that
 * every key shares is skipped).
 *
 * Call frame: args keys u32 or s32 [..., n]; rets indices s32 [..., n].
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ffi.h"

/* Sort row `key` (n keys, sign bit flipped by `flip` so signed keys order as unsigned),
 * writing the stable order to `out`. `k`, `k2`, `i2` are scratch of n entries each. */
static void argsort_row(const uint32_t *key, uint32_t flip, int64_t n, int32_t *out,
                        uint32_t *k, uint32_t *k2, int32_t *i2) {
  int64_t count[4][256];
  memset(count, 0, sizeof count);
  for (int64_t i = 0; i < n; i++) {
    uint32_t v = key[i] ^ flip;
    k[i] = v, out[i] = (int32_t)i;
    for (int d = 0; d < 4; d++) count[d][(v >> (8 * d)) & 255]++;
  }
  uint32_t *src_k = k, *dst_k = k2;
  int32_t *src_i = out, *dst_i = i2;
  for (int d = 0; d < 4; d++) {
    int64_t *c = count[d], sum = 0;
    if (n && c[(src_k[0] >> (8 * d)) & 255] == n) continue; /* every key has this digit */
    for (int b = 0; b < 256; b++) {
      int64_t here = c[b];
      c[b] = sum, sum += here;
    }
    for (int64_t i = 0; i < n; i++) {
      int64_t at = c[(src_k[i] >> (8 * d)) & 255]++;
      dst_k[at] = src_k[i], dst_i[at] = src_i[i];
    }
    uint32_t *tk = src_k;
    int32_t *ti = src_i;
    src_k = dst_k, dst_k = tk, src_i = dst_i, dst_i = ti;
  }
  if (src_i != out) memcpy(out, src_i, (size_t)n * sizeof *out);
}

XLA_FFI_Error *prtm_argsort_stable(XLA_FFI_CallFrame *frame) {
  if (prtm_ffi_not_executing(frame)) return NULL;
  if (frame->args.size != 1 || frame->rets.size != 1)
    return prtm_ffi_fail(frame, "prtm_argsort_stable: expected one argument (keys) and one result");
  const XLA_FFI_Buffer *keys = ((XLA_FFI_Buffer **)frame->args.args)[0];
  const XLA_FFI_Buffer *idx = ((XLA_FFI_Buffer **)frame->rets.rets)[0];
  if (keys->dtype != XLA_FFI_DataType_U32 && keys->dtype != XLA_FFI_DataType_S32)
    return prtm_ffi_fail(frame, "prtm_argsort_stable: keys must be u32 or s32");
  if (keys->rank < 1) return prtm_ffi_fail(frame, "prtm_argsort_stable: keys must have an axis");
  if (idx->dtype != XLA_FFI_DataType_S32 || idx->rank != keys->rank)
    return prtm_ffi_fail(frame, "prtm_argsort_stable: indices must be s32 of the keys' shape");
  for (int64_t d = 0; d < keys->rank; d++)
    if (idx->dims[d] != keys->dims[d])
      return prtm_ffi_fail(frame, "prtm_argsort_stable: indices must be s32 of the keys' shape");
  const int64_t n = keys->dims[keys->rank - 1];
  if (n > INT32_MAX)
    return prtm_ffi_fail(frame, "prtm_argsort_stable: more than 2^31 - 1 keys per row");
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < keys->rank; d++) rows *= keys->dims[d];
  if (rows == 0 || n == 0) return NULL;
  const uint32_t flip = keys->dtype == XLA_FFI_DataType_S32 ? 0x80000000u : 0;
  uint32_t *scratch = malloc((size_t)n * 3 * sizeof(uint32_t));
  if (!scratch) return prtm_ffi_fail(frame, "prtm_argsort_stable: out of memory");
  for (int64_t r = 0; r < rows; r++)
    argsort_row((const uint32_t *)keys->data + r * n, flip, n, (int32_t *)idx->data + r * n,
                scratch, scratch + n, (int32_t *)(scratch + 2 * n));
  free(scratch);
  return NULL;
}
