/*
 * The XLA FFI handlers of xla_ffi.c, declared without XLA's headers so that the
 * CPython binding can hand them to JAX as PyCapsules. Each has XLA's handler
 * signature `XLA_FFI_Error *(XLA_FFI_CallFrame *)`.
 */
#ifndef SKIT_XLA_FFI_H
#define SKIT_XLA_FFI_H

struct XLA_FFI_Error;
struct XLA_FFI_CallFrame;

struct XLA_FFI_Error *skit_xla_softmax(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_logsumexp(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_vjp(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_cross_entropy(struct XLA_FFI_CallFrame *cf);
struct XLA_FFI_Error *skit_xla_sigmoid(struct XLA_FFI_CallFrame *cf);

#endif
