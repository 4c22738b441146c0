/*
 * mvt_kernels.h - C ABI of the MobileViT plugin kernels (no TensorRT needed).
 *
 * Every entry point takes raw device pointers, sizes, a dtype enum and a cudaStream_t, enqueues its work on that
 * stream and returns a status: 0 (cudaSuccess) or a cudaError_t value. Invalid arguments give
 * cudaErrorInvalidValue and launch nothing. mvt_status_string() turns a status into text.
 *
 * The math follows mobilevit_trt/plugin_spec.py (the plugin-node contract):
 *   LayerNorm  y = (x - mean(x)) / sqrt(var(x) + epsilon) * gamma + beta over the last dimension, FP32 statistics.
 *   Attention  out = softmax(q k^T * scale) v per (batch index, head), FP32 softmax and accumulation.
 */
#ifndef MVT_KERNELS_H
#define MVT_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#if defined(_WIN32)
#define MVT_API __declspec(dllexport)
#else
#define MVT_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of x / y (LayerNorm) and of q, k, v, out (Attention). gamma and beta are always float32. */
enum mvt_dtype
{
    MVT_DTYPE_FLOAT32 = 0,
    MVT_DTYPE_FLOAT16 = 1
};

/* Attention implementations for mvt_attention_ex(); MVT_ATTN_AUTO picks one from the shape, dtype and device. */
enum mvt_attention_impl
{
    MVT_ATTN_AUTO = 0,
    MVT_ATTN_SIMT = 1,       /* any dtype, head_dim <= 128, any alignment (CUDA cores, online softmax) */
    MVT_ATTN_TC_FIRST = 2    /* 2 .. mvt_attention_num_impls()-1: tensor-core tilings, sm_80+, see names: "tc_*"
                                FP16, "x3_*" FP32 in 3xTF32 (FP32 accuracy, head_dim <= 64); each is built for the
                                head-dim classes where it fits (else cudaErrorInvalidValue) */
};

/* Version of this ABI; bumped when a signature changes. */
MVT_API int32_t mvt_kernels_abi_version(void);

/* Text for a status returned by the functions below. */
MVT_API char const* mvt_status_string(int32_t status);

/*
 * LayerNorm over the last dimension of a contiguous [rows, cols] tensor.
 *   x, y          device pointers, dtype `dtype` (MVT_DTYPE_FLOAT32 or MVT_DTYPE_FLOAT16); y may not alias x
 *   gamma, beta   device pointers, float32 [cols]
 *   rows >= 0, cols >= 1 (any size; cols <= 1024 stays in registers, larger rows take a block-per-row path)
 */
MVT_API int32_t mvt_layernorm(void const* x, float const* gamma, float const* beta, void* y, int64_t rows,
    int64_t cols, float epsilon, int32_t dtype, cudaStream_t stream);

/* As mvt_layernorm, with the threads per row forced (4, 8, 16 or 32; 0 = automatic). For benchmarks and tests. */
MVT_API int32_t mvt_layernorm_ex(void const* x, float const* gamma, float const* beta, void* y, int64_t rows,
    int64_t cols, float epsilon, int32_t dtype, int32_t threads_per_row, cudaStream_t stream);

/*
 * Fused attention: for each batch index b < batch and head h < num_heads,
 *   out[b, :, h] = softmax(q[b, :, h] k[b, :, h]^T * scale) v[b, :, h]
 * Row r (0 <= r < seq_len) of batch b, head h of q starts at element  q + (b * seq_len + r) * in_row_stride
 * + h * head_dim, and likewise for k and v (same strides); out row r at out + (b * seq_len + r) * out_row_stride
 * + h * head_dim. Strides are in elements.
 *   packed qkv [..., N, 3*H*D]:  q = qkv, k = qkv + H*D, v = qkv + 2*H*D, in_row_stride = 3*H*D
 *   separate q, k, v [..., N, H*D]: in_row_stride = H*D
 * head_dim 1..128, seq_len >= 0 (any length), num_heads >= 1, any strides and element-aligned pointers. FP16 runs on
 * tensor cores (sm_80+) for every head dim (padded inside the kernel to 16/32/48/64/96/128); FP32 with head_dim
 * <= 64 on tensor cores in 3xTF32 (each product split into TF32 hi/lo parts, FP32-level accuracy; never plain
 * TF32), larger head dims on CUDA cores in FP32.
 */
MVT_API int32_t mvt_attention(void const* q, void const* k, void const* v, void* out, int64_t batch,
    int64_t seq_len, int32_t num_heads, int32_t head_dim, int64_t in_row_stride, int64_t out_row_stride,
    float scale, int32_t dtype, cudaStream_t stream);

/* As mvt_attention with an explicit implementation (enum mvt_attention_impl). An implementation that cannot run
 * this shape, dtype, alignment or device returns cudaErrorInvalidValue (it never falls back silently). */
MVT_API int32_t mvt_attention_ex(void const* q, void const* k, void const* v, void* out, int64_t batch,
    int64_t seq_len, int32_t num_heads, int32_t head_dim, int64_t in_row_stride, int64_t out_row_stride,
    float scale, int32_t dtype, int32_t impl, cudaStream_t stream);

/* Number of attention implementation ids (valid ids are 0 .. n-1) and a short name for each. */
MVT_API int32_t mvt_attention_num_impls(void);
MVT_API char const* mvt_attention_impl_name(int32_t impl);

/* The implementation MVT_ATTN_AUTO would choose for these arguments on the current device (-1 if none can). */
MVT_API int32_t mvt_attention_auto_impl(void const* q, void const* k, void const* v, void* out, int64_t batch,
    int64_t seq_len, int32_t num_heads, int32_t head_dim, int64_t in_row_stride, int64_t out_row_stride,
    int32_t dtype);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MVT_KERNELS_H */
