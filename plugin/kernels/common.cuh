// common.cuh - helpers shared by the kernel sources (internal; not part of the C ABI).
#ifndef MVT_COMMON_CUH
#define MVT_COMMON_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace mvt
{

// Number of warps/threads is always a multiple of 32 here, so full-mask shuffles are safe.
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

// Sum / max over the `width` consecutive lanes that share (lane / width); width is a power of two <= 32.
template <int WIDTH>
__device__ __forceinline__ float groupSum(float v)
{
#pragma unroll
    for (int off = WIDTH / 2; off > 0; off >>= 1)
    {
        v += __shfl_xor_sync(kFullMask, v, off);
    }
    return v;
}
template <int WIDTH>
__device__ __forceinline__ float groupMax(float v)
{
#pragma unroll
    for (int off = WIDTH / 2; off > 0; off >>= 1)
    {
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, off));
    }
    return v;
}

inline bool isAligned(void const* p, size_t bytes)
{
    return (reinterpret_cast<uintptr_t>(p) % bytes) == 0;
}

// Device facts read once per device (the values never change while the process runs).
struct DeviceInfo
{
    int ccMajor;
    int ccMinor;
    int smCount;
};
// Returns cudaSuccess and fills `info` for the current device.
cudaError_t currentDeviceInfo(DeviceInfo& info);

} // namespace mvt

#endif // MVT_COMMON_CUH
