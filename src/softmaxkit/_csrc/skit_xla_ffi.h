/*
 * The XLA FFI handlers of xla_ffi.c, declared without XLA's headers so that the
 * CPython binding can hand them to JAX as PyCapsules. Each has XLA's handler
 * signature `XLA_FFI_Error *(XLA_FFI_CallFrame *)`.
 */
#ifndef SKIT_XLA_FFI_H
#define SKIT_XLA_FFI_H

#include <stddef.h>

struct XLA_FFI_Error;
struct XLA_FFI_CallFrame;

struct XLA_FFI_Error *skit_xla_softmax(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_logsumexp(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_vjp(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_cross_entropy(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_sigmoid(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_prob_ce(struct XLA_FFI_CallFrame *cf);

/* Register the handlers above, under their "softmaxkit_*" names, with the XLA
 * whose FFI API table is `api` (an `XLA_FFI_Api *` found at run time, e.g.
 * TensorFlow's) for `platform` ("Host"). Returns 0, or -1 with XLA's reason in
 * `msg`. Registering twice is an error reported by XLA. */
int skit_xla_register(const void *api, const char *platform, char *msg, size_t msglen);

#endif
