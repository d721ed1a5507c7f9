/* What every XLA FFI target in this directory does first, and how it fails. */
#ifndef PRTM_FFI_H
#define PRTM_FFI_H

#include "xla/ffi/api/c_api.h"

/* Answers XLA's metadata query (the API version this file was built against, no traits) and
 * skips every stage but execution: returns 1 when the target should return NULL at once. */
static inline int prtm_ffi_not_executing(XLA_FFI_CallFrame *frame) {
  if (frame->extension_start && frame->extension_start->type == XLA_FFI_Extension_Metadata) {
    XLA_FFI_Metadata_Extension *ext = (XLA_FFI_Metadata_Extension *)frame->extension_start;
    ext->metadata->api_version = (XLA_FFI_Api_Version){XLA_FFI_Api_Version_STRUCT_SIZE, NULL,
                                                       XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR};
    ext->metadata->traits = 0;
    return 1;
  }
  return frame->stage != XLA_FFI_ExecutionStage_EXECUTE;
}

/* An INVALID_ARGUMENT error with `msg`, which XLA raises in Python as a JaxRuntimeError. */
static inline XLA_FFI_Error *prtm_ffi_fail(const XLA_FFI_CallFrame *frame, const char *msg) {
  XLA_FFI_Error_Create_Args args = {XLA_FFI_Error_Create_Args_STRUCT_SIZE, NULL, msg,
                                    XLA_FFI_Error_Code_INVALID_ARGUMENT};
  return frame->api->XLA_FFI_Error_Create(&args);
}

#endif
