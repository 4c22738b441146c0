// layernorm.cu - LayerNorm over the last dimension, FP32/FP16 I/O, FP32 statistics, gamma/beta FP32.
//
// Paths (picked per call by launchLayerNorm):
//  * register path: a group of TPR lanes (4..32, inside one warp) owns one row; the row is read once with
//    16-byte loads into registers (NV vectors per lane), mean and variance are two passes over the registers
//    (corrected two-pass formula, no E[x^2]-E[x]^2 cancellation), then the row is written once. One read and one
//    write of x: the memory-bound minimum. Used when cols is a multiple of the vector width and the pointers
//    are 16-byte aligned, up to cols = 32 lanes * 8 vectors * vector width (1024 FP32, 2048 FP16).
//  * scalar register path: the same with 1-element loads, one warp per row, cols <= 1024 (odd sizes).
//  * block path: one 256-thread block per row, three passes over global memory (L1/L2 cached); any cols.
#include "common.cuh"
#include "mvt_kernels.h"

namespace mvt
{
namespace
{

constexpr int kRegBlock = 128;   // threads per block of the register paths
constexpr int kMaxNV = 8;        // most vectors per lane on the vector path
constexpr int kBlockThreads = 256;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack
{
    T v[VEC];
};

// Load VEC consecutive floats from p (16-byte aligned when VEC >= 4).
template <int VEC>
__device__ __forceinline__ void loadFloats(float const* __restrict__ p, float (&out)[VEC])
{
    if (VEC >= 4)
    {
#pragma unroll
        for (int i = 0; i < VEC / 4; ++i)
        {
            float4 const f = __ldg(reinterpret_cast<float4 const*>(p) + i);
            out[4 * i + 0] = f.x;
            out[4 * i + 1] = f.y;
            out[4 * i + 2] = f.z;
            out[4 * i + 3] = f.w;
        }
    }
    else
    {
#pragma unroll
        for (int i = 0; i < VEC; ++i)
        {
            out[i] = __ldg(p + i);
        }
    }
}

template <typename T, int VEC, int TPR, int NV>
__global__ void __launch_bounds__(kRegBlock) layerNormRegKernel(T const* __restrict__ x,
    float const* __restrict__ gamma, float const* __restrict__ beta, T* __restrict__ y, int64_t rows, int cols,
    float invCols, float eps)
{
    constexpr int kRowsPerBlock = kRegBlock / TPR;
    int const lane = threadIdx.x % TPR;
    int64_t const row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
    bool const active = row < rows;
    int const nvec = cols / VEC;
    T const* xr = x + (active ? row : 0) * static_cast<int64_t>(cols);

    float v[NV][VEC];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i)
    {
        int const idx = i * TPR + lane;
        if (active && idx < nvec)
        {
            Pack<T, VEC> const p = *reinterpret_cast<Pack<T, VEC> const*>(xr + idx * VEC);
#pragma unroll
            for (int e = 0; e < VEC; ++e)
            {
                v[i][e] = toFloat(p.v[e]);
                sum += v[i][e];
            }
        }
        else
        {
#pragma unroll
            for (int e = 0; e < VEC; ++e)
            {
                v[i][e] = 0.f;
            }
        }
    }
    float const mean0 = groupSum<TPR>(sum) * invCols;
    // corrected two-pass: sum of deviations refines the mean (rounding of the first sum), both in one reduction
    float dev = 0.f;
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i)
    {
        if (i * TPR + lane < nvec)
        {
#pragma unroll
            for (int e = 0; e < VEC; ++e)
            {
                float const d = v[i][e] - mean0;
                dev += d;
                sq += d * d;
            }
        }
    }
    dev = groupSum<TPR>(dev) * invCols;
    sq = groupSum<TPR>(sq) * invCols;
    // normalise with (x - mean0) - dev: x - mean0 is exact for x near mean0, and mean0 + dev is never rounded
    float const rstd = rsqrtf(fmaxf(sq - dev * dev, 0.f) + eps);
    if (!active)
    {
        return;
    }
    T* yr = y + row * static_cast<int64_t>(cols);
#pragma unroll
    for (int i = 0; i < NV; ++i)
    {
        int const idx = i * TPR + lane;
        if (idx < nvec)
        {
            float g[VEC], b[VEC];
            loadFloats<VEC>(gamma + idx * VEC, g);
            loadFloats<VEC>(beta + idx * VEC, b);
            Pack<T, VEC> p;
#pragma unroll
            for (int e = 0; e < VEC; ++e)
            {
                p.v[e] = fromFloat<T>(((v[i][e] - mean0) - dev) * rstd * g[e] + b[e]);
            }
            *reinterpret_cast<Pack<T, VEC>*>(yr + idx * VEC) = p;
        }
    }
}

__device__ __forceinline__ float blockSum(float v, float* scratch)
{
    v = groupSum<32>(v);
    int const warp = threadIdx.x / 32;
    int const lane = threadIdx.x % 32;
    if (lane == 0)
    {
        scratch[warp] = v;
    }
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kBlockThreads / 32; ++w)
    {
        total += scratch[w];
    }
    __syncthreads(); // scratch is reused by the next call
    return total;
}

template <typename T>
__global__ void __launch_bounds__(kBlockThreads) layerNormBlockKernel(T const* __restrict__ x,
    float const* __restrict__ gamma, float const* __restrict__ beta, T* __restrict__ y, int64_t rows, int cols,
    float invCols, float eps)
{
    __shared__ float scratch[kBlockThreads / 32];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x)
    {
        T const* xr = x + row * static_cast<int64_t>(cols);
        float s = 0.f;
        for (int c = threadIdx.x; c < cols; c += kBlockThreads)
        {
            s += toFloat(xr[c]);
        }
        float const mean0 = blockSum(s, scratch) * invCols;
        float dev = 0.f;
        float sq = 0.f;
        for (int c = threadIdx.x; c < cols; c += kBlockThreads)
        {
            float const d = toFloat(xr[c]) - mean0;
            dev += d;
            sq += d * d;
        }
        dev = blockSum(dev, scratch) * invCols;
        sq = blockSum(sq, scratch) * invCols;
        float const rstd = rsqrtf(fmaxf(sq - dev * dev, 0.f) + eps);
        T* yr = y + row * static_cast<int64_t>(cols);
        for (int c = threadIdx.x; c < cols; c += kBlockThreads)
        {
            yr[c] = fromFloat<T>(((toFloat(xr[c]) - mean0) - dev) * rstd * gamma[c] + beta[c]);
        }
    }
}

struct LnArgs
{
    void const* x;
    float const* gamma;
    float const* beta;
    void* y;
    int64_t rows;
    int cols;
    float eps;
    cudaStream_t stream;
};

template <typename T, int VEC, int TPR, int NV>
cudaError_t launchReg(LnArgs const& a)
{
    constexpr int kRowsPerBlock = kRegBlock / TPR;
    int64_t const blocks = (a.rows + kRowsPerBlock - 1) / kRowsPerBlock;
    if (blocks > 0x7fffffff)
    {
        return cudaErrorInvalidConfiguration;
    }
    layerNormRegKernel<T, VEC, TPR, NV><<<static_cast<unsigned>(blocks), kRegBlock, 0, a.stream>>>(
        static_cast<T const*>(a.x), a.gamma, a.beta, static_cast<T*>(a.y), a.rows, a.cols, 1.f / a.cols, a.eps);
    return cudaGetLastError();
}

template <typename T, int VEC, int TPR>
cudaError_t launchRegNV(LnArgs const& a, int nv)
{
    switch (nv)
    {
    case 1: return launchReg<T, VEC, TPR, 1>(a);
    case 2: return launchReg<T, VEC, TPR, 2>(a);
    case 3: return launchReg<T, VEC, TPR, 3>(a);
    case 4: return launchReg<T, VEC, TPR, 4>(a);
    case 5: return launchReg<T, VEC, TPR, 5>(a);
    case 6: return launchReg<T, VEC, TPR, 6>(a);
    case 7: return launchReg<T, VEC, TPR, 7>(a);
    case 8: return launchReg<T, VEC, TPR, 8>(a);
    default: return cudaErrorInvalidValue;
    }
}

template <typename T, int VEC>
cudaError_t launchRegVec(LnArgs const& a, int tpr, int nv)
{
    switch (tpr)
    {
    case 4: return launchRegNV<T, VEC, 4>(a, nv);
    case 8: return launchRegNV<T, VEC, 8>(a, nv);
    case 16: return launchRegNV<T, VEC, 16>(a, nv);
    case 32: return launchRegNV<T, VEC, 32>(a, nv);
    default: return cudaErrorInvalidValue;
    }
}

// Scalar (VEC = 1) path, one warp per row; nv is a power of two <= 32.
template <typename T>
cudaError_t launchScalar(LnArgs const& a, int nv)
{
    switch (nv)
    {
    case 1: return launchReg<T, 1, 32, 1>(a);
    case 2: return launchReg<T, 1, 32, 2>(a);
    case 4: return launchReg<T, 1, 32, 4>(a);
    case 8: return launchReg<T, 1, 32, 8>(a);
    case 16: return launchReg<T, 1, 32, 16>(a);
    case 32: return launchReg<T, 1, 32, 32>(a);
    default: return cudaErrorInvalidValue;
    }
}

template <typename T>
cudaError_t launchBlock(LnArgs const& a, int smCount)
{
    int64_t const maxBlocks = static_cast<int64_t>(smCount) * 32;
    int64_t const blocks = a.rows < maxBlocks ? a.rows : maxBlocks;
    layerNormBlockKernel<T><<<static_cast<unsigned>(blocks), kBlockThreads, 0, a.stream>>>(
        static_cast<T const*>(a.x), a.gamma, a.beta, static_cast<T*>(a.y), a.rows, a.cols, 1.f / a.cols, a.eps);
    return cudaGetLastError();
}

// Threads per row for the vector path: the least padding (idle lane slots) among the choices that give at least
// `target` threads in flight; when rows are too few for that, the widest group (most parallelism per row).
int chooseThreadsPerRow(int64_t rows, int nvec, int64_t target)
{
    static int const kChoices[] = {32, 16, 8, 4};
    int best = 0;
    int bestWaste = 0;
    for (int tpr : kChoices)
    {
        int const nv = (nvec + tpr - 1) / tpr;
        if (nv > kMaxNV || rows * tpr < target)
        {
            continue;
        }
        int const waste = tpr * nv - nvec;
        if (best == 0 || waste < bestWaste)
        {
            best = tpr;
            bestWaste = waste;
        }
    }
    if (best == 0)
    {
        best = 32; // few rows: widest group
    }
    return best;
}

template <typename T>
cudaError_t launchLayerNorm(LnArgs const& a, int forcedTpr)
{
    DeviceInfo dev;
    cudaError_t err = currentDeviceInfo(dev);
    if (err != cudaSuccess)
    {
        return err;
    }
    constexpr int kVec = 16 / sizeof(T);
    bool const vectorOk = (a.cols % kVec == 0) && isAligned(a.x, 16) && isAligned(a.y, 16)
        && isAligned(a.gamma, 16) && isAligned(a.beta, 16);
    if (vectorOk && a.cols <= 32 * kMaxNV * kVec)
    {
        int const nvec = a.cols / kVec;
        int tpr = forcedTpr;
        if (tpr == 0)
        {
            // ~8 resident 128-thread blocks per SM keep enough loads in flight
            tpr = chooseThreadsPerRow(a.rows, nvec, static_cast<int64_t>(dev.smCount) * 1024);
        }
        int const nv = (nvec + tpr - 1) / tpr;
        if (nv <= kMaxNV)
        {
            return launchRegVec<T, kVec>(a, tpr, nv);
        }
        // a forced group too narrow for this row: fall through to the scalar / block paths
    }
    if (a.cols <= 32 * 32)
    {
        int nv = 1;
        while (nv * 32 < a.cols)
        {
            nv *= 2;
        }
        return launchScalar<T>(a, nv);
    }
    return launchBlock<T>(a, dev.smCount);
}

} // namespace
} // namespace mvt

extern "C" int32_t mvt_layernorm_ex(void const* x, float const* gamma, float const* beta, void* y, int64_t rows,
    int64_t cols, float epsilon, int32_t dtype, int32_t threads_per_row, cudaStream_t stream)
{
    if (rows < 0 || cols < 1 || cols > 0x7fffffff
        || (threads_per_row != 0 && threads_per_row != 4 && threads_per_row != 8 && threads_per_row != 16
            && threads_per_row != 32))
    {
        return cudaErrorInvalidValue;
    }
    if (rows == 0)
    {
        return cudaSuccess;
    }
    if (x == nullptr || gamma == nullptr || beta == nullptr || y == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    mvt::LnArgs const a{x, gamma, beta, y, rows, static_cast<int>(cols), epsilon, stream};
    switch (dtype)
    {
    case MVT_DTYPE_FLOAT32: return mvt::launchLayerNorm<float>(a, threads_per_row);
    case MVT_DTYPE_FLOAT16: return mvt::launchLayerNorm<__half>(a, threads_per_row);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" int32_t mvt_layernorm(void const* x, float const* gamma, float const* beta, void* y, int64_t rows,
    int64_t cols, float epsilon, int32_t dtype, cudaStream_t stream)
{
    return mvt_layernorm_ex(x, gamma, beta, y, rows, cols, epsilon, dtype, 0, stream);
}
