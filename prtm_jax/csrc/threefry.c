/* Threefry-2x32 (20 rounds), the hash behind JAX's default PRNG, as an XLA FFI target.
 *
 * prtm_jax/native.py builds this file with lanes.c and, on the CPU, lowers JAX's
 * `threefry2x32` primitive to `prtm_threefry2x32` instead of JAX's own lowering (a loop of
 * five unrolled round groups that XLA compiles into several kernels per call site). The bits
 * are the same, bit for bit (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011; tests compare with a NumPy implementation, the paper's known answers and JAX's own
 * lowering); what changes is that a call site costs XLA nothing to compile.
 *
 * Call frame: args k1, k2, x1, x2, all u32 of one shape (the lowering broadcasts them);
 *             rets y1, y2, u32 of that shape.
 */
#include <stdint.h>

#include "xla/ffi/api/c_api.h"

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

static XLA_FFI_Error *fail(const XLA_FFI_CallFrame *frame, const char *msg) {
  XLA_FFI_Error_Create_Args args = {XLA_FFI_Error_Create_Args_STRUCT_SIZE, NULL, msg,
                                    XLA_FFI_Error_Code_INVALID_ARGUMENT};
  return frame->api->XLA_FFI_Error_Create(&args);
}

XLA_FFI_Error *prtm_threefry2x32(XLA_FFI_CallFrame *frame) {
  if (frame->extension_start && frame->extension_start->type == XLA_FFI_Extension_Metadata) {
    XLA_FFI_Metadata_Extension *ext = (XLA_FFI_Metadata_Extension *)frame->extension_start;
    ext->metadata->api_version = (XLA_FFI_Api_Version){XLA_FFI_Api_Version_STRUCT_SIZE, NULL,
                                                       XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR};
    ext->metadata->traits = 0;
    return NULL;
  }
  if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return NULL;
  if (frame->args.size != 4 || frame->rets.size != 2)
    return fail(frame, "prtm_threefry2x32: expected args k1, k2, x1, x2 and rets y1, y2");
  XLA_FFI_Buffer **arg = (XLA_FFI_Buffer **)frame->args.args;
  XLA_FFI_Buffer **ret = (XLA_FFI_Buffer **)frame->rets.rets;
  int64_t n = 1;
  for (int64_t d = 0; d < ret[0]->rank; d++) n *= ret[0]->dims[d];
  for (int j = 0; j < 4; j++) {
    int64_t m = 1;
    for (int64_t d = 0; d < arg[j]->rank; d++) m *= arg[j]->dims[d];
    if (m != n || arg[j]->dtype != XLA_FFI_DataType_U32)
      return fail(frame, "prtm_threefry2x32: every argument must be u32 of the output's size");
  }
  threefry2x32(arg[0]->data, arg[1]->data, arg[2]->data, arg[3]->data, ret[0]->data,
               ret[1]->data, n);
  return NULL;
}
