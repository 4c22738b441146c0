// attention.cu - fused softmax(q k^T * scale) v, one kernel per call, FP32 softmax and accumulation.
//
// Two families, both flash-style (online softmax over key chunks, so any sequence length works and the N x N
// score matrix never reaches memory):
//  * attnTcKernel<D, WQ, WK, KT> (FP16, head_dim 32 or 64, sm_80+): a block owns 16*WQ query rows of one
//    (batch, head). Each chunk of KT*WK keys of K and V is copied to shared memory with cp.async; warp (wq, wk)
//    multiplies its 16 query rows with its KT keys of the chunk on the tensor cores (mma.sync m16n8k16, operands
//    through ldmatrix), keeps the running max / sum in registers, and accumulates P V on the tensor cores again
//    (P converted to FP16 in registers, FlashAttention-2 style). With WK > 1 the key range is split across warps
//    and the partial (max, sum, O) of the WK warps are merged through shared memory at the end.
//  * attnSimtKernel<T, DMAX> (FP32 or FP16, head_dim <= 128, any alignment): CUDA cores, 16 query rows per
//    128-thread block, 32-key tiles, one key per lane for the scores and one head-dim column per lane for P V.
//    FP32 inputs take this path so that FP32 results keep FP32 accuracy (no TF32).
#include "common.cuh"
#include "mvt_kernels.h"

#include <atomic>
#include <math.h>

namespace mvt
{
namespace
{

struct AttnParams
{
    void const* q;
    void const* k;
    void const* v;
    void* out;
    int64_t inStride;
    int64_t outStride;
    int n;
    int heads;
    int d;
    int qTiles;
    float scaleLog2; // scale * log2(e): the softmax is computed with exp2
};

struct BlockCoord
{
    int64_t b;
    int h;
    int q0;
};

// 32-bit unsigned divisions (the grid has < 2^31 blocks): a 64-bit division is a long emulated sequence that
// adds measurable latency to these microsecond kernels.
__device__ __forceinline__ BlockCoord decodeBlock(AttnParams const& p, int rowsPerTile)
{
    unsigned const bx = blockIdx.x;
    unsigned const qTiles = static_cast<unsigned>(p.qTiles);
    unsigned const bh = bx / qTiles;
    unsigned const heads = static_cast<unsigned>(p.heads);
    unsigned const b = heads == 1 ? bh : bh / heads;
    BlockCoord c;
    c.q0 = static_cast<int>(bx - bh * qTiles) * rowsPerTile;
    c.b = b;
    c.h = static_cast<int>(bh - b * heads);
    return c;
}

// ------------------------------------------------------------------------------------------------------------
// Tensor-core kernel (FP16)
// ------------------------------------------------------------------------------------------------------------

template <int D, int WQ, int WK, int KT, int KS>
struct TcConfig
{
    static_assert(D % 16 == 0 && D <= 128, "head dim must be a multiple of 16");
    static_assert(KS % 16 == 0 && KT % KS == 0, "keys per warp: whole sub-tiles of a multiple of 16");
    static constexpr int kThreads = 32 * WQ * WK;
    static constexpr int kRowsQ = 16 * WQ;
    static constexpr int kChunk = KT * WK;  // keys in shared memory at a time
    static constexpr int kSub = KT / KS;    // register sub-tiles per warp per chunk (one cp.async group each)
    static_assert(kSub <= 4, "at most 8 cp.async groups in flight");
    static constexpr int kLd = D + 8;  // halves per shared row: 16-byte aligned, conflict-free ldmatrix
    static constexpr int kOLd = D + 4; // floats per row of the merge buffer
    static constexpr int kQBytes = kRowsQ * kLd * 2;
    static constexpr int kKVBytes = 2 * kChunk * kLd * 2;
    static constexpr int kMergeBytes = WK > 1 ? (WQ * WK * 16 * kOLd * 4 + 2 * WQ * WK * 16 * 4) : 0;
    static constexpr int kSmemBytes = kQBytes + (kKVBytes > kMergeBytes ? kKVBytes : kMergeBytes);
    static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
};

__device__ __forceinline__ uint32_t smemAddr(void const* p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cpAsync16(void* dst, void const* src, int srcBytes)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smemAddr(dst)), "l"(src), "r"(srcBytes)
                 : "memory");
#endif
}

__device__ __forceinline__ void cpAsyncCommit()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cpAsyncWait()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// cpAsyncWait<n> for an n that is a compile-time constant after loop unrolling (0 <= n <= N).
template <int N>
struct CpAsyncWaitUpTo
{
    static __device__ __forceinline__ void run(int n)
    {
        if (n >= N)
        {
            cpAsyncWait<N>();
        }
        else
        {
            CpAsyncWaitUpTo<N - 1>::run(n);
        }
    }
};
template <>
struct CpAsyncWaitUpTo<0>
{
    static __device__ __forceinline__ void run(int)
    {
        cpAsyncWait<0>();
    }
};

// 2^x with the hardware approximation (max rel. error 2^-22; 2^-inf = 0): plenty for the FP16 path.
__device__ __forceinline__ float fastExp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], void const* p)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smemAddr(p))
                 : "memory");
#endif
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], void const* p)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smemAddr(p))
                 : "memory");
#endif
}

// c += a * b for one m16n8k16 tile (FP16 operands, FP32 accumulators).
__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ uint32_t packHalf2(float lo, float hi)
{
    __half2 const h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t const*>(&h);
}

template <int D, int WQ, int WK, int KT, int KS>
__global__ void __launch_bounds__(32 * WQ * WK) attnTcKernel(AttnParams p)
{
#if __CUDA_ARCH__ >= 800
    using C = TcConfig<D, WQ, WK, KT, KS>;
    __shared__ __align__(16) unsigned char smem[C::kSmemBytes];
    __half* qs = reinterpret_cast<__half*>(smem);
    __half* ks = reinterpret_cast<__half*>(smem + C::kQBytes);
    __half* vs = ks + C::kChunk * C::kLd;

    int const tid = threadIdx.x;
    int const warp = tid / 32;
    int const lane = tid % 32;
    int const wq = warp / WK;
    int const wk = warp % WK;
    int const n = p.n;
    BlockCoord const bc = decodeBlock(p, C::kRowsQ);
    int64_t const base = bc.b * n * p.inStride + static_cast<int64_t>(bc.h) * D;
    __half const* qg = static_cast<__half const*>(p.q) + base;
    __half const* kg = static_cast<__half const*>(p.k) + base;
    __half const* vg = static_cast<__half const*>(p.v) + base;

    constexpr int kVecPerRow = D / 8; // 16-byte pieces per row
    for (int i = tid; i < C::kRowsQ * kVecPerRow; i += C::kThreads)
    {
        int const r = i / kVecPerRow;
        int const c = i % kVecPerRow;
        int const row = bc.q0 + r;
        bool const ok = row < n;
        cpAsync16(qs + r * C::kLd + c * 8, qg + (ok ? row : 0) * p.inStride + c * 8, ok ? 16 : 0);
    }

    float const kNegInf = -INFINITY;
    float m[2] = {kNegInf, kNegInf}; // running max (log2 domain) of rows g and g+8
    float l[2] = {0.f, 0.f};         // this lane's part of the running sum
    float o[D / 8][4];
#pragma unroll
    for (int t = 0; t < D / 8; ++t)
    {
#pragma unroll
        for (int e = 0; e < 4; ++e)
        {
            o[t][e] = 0.f;
        }
    }
    uint32_t qf[D / 16][4];

    for (int c0 = 0; c0 < n; c0 += C::kChunk)
    {
        if (c0 > 0)
        {
            __syncthreads(); // everyone is done with the previous chunk
        }
        // Commit groups K_0, V_0, K_1, V_1, ... (Q rides with K_0 on the first chunk): sub-tile t is computed as soon
        // as its K (then its V) has landed, while the later sub-tiles are still in flight.
        constexpr int kPieces = WK * KS * kVecPerRow; // 16-byte pieces of one sub-tile of K (or V), all warps
#pragma unroll
        for (int t = 0; t < C::kSub; ++t)
        {
#pragma unroll
            for (int which = 0; which < 2; ++which)
            {
                __half* dst = which == 0 ? ks : vs;
                __half const* src = which == 0 ? kg : vg;
                for (int i = tid; i < kPieces; i += C::kThreads)
                {
                    int const w = i / (KS * kVecPerRow);
                    int const r = (i / kVecPerRow) % KS;
                    int const c = i % kVecPerRow;
                    int const row = w * KT + t * KS + r; // row inside the chunk
                    int const key = c0 + row;
                    bool const ok = key < n;
                    cpAsync16(dst + row * C::kLd + c * 8, src + (ok ? key : 0) * p.inStride + c * 8, ok ? 16 : 0);
                }
                cpAsyncCommit();
            }
        }
#pragma unroll
        for (int t = 0; t < C::kSub; ++t)
        {
            CpAsyncWaitUpTo<2 * C::kSub - 1>::run(2 * C::kSub - 2 * t - 1); // K_t (and Q) complete
            __syncthreads();
            if (c0 == 0 && t == 0)
            {
#pragma unroll
                for (int kb = 0; kb < D / 16; ++kb)
                {
                    ldmatrixX4(qf[kb], qs + (wq * 16 + (lane % 16)) * C::kLd + kb * 16 + (lane / 16) * 8);
                }
            }
            int const tile0 = wk * KT + t * KS; // this warp's sub-tile inside the chunk
            int const keyBase = c0 + tile0;
            bool const active = keyBase < n; // warp-uniform; an inactive warp still joins every barrier
            float s[KS / 8][4];
#pragma unroll
            for (int j = 0; j < KS / 8; ++j)
            {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                {
                    s[j][e] = 0.f;
                }
            }
            if (active)
            {
#pragma unroll
                for (int j = 0; j < KS / 16; ++j)
                {
#pragma unroll
                    for (int kb = 0; kb < D / 16; ++kb)
                    {
                        uint32_t b[4];
                        ldmatrixX4(b,
                            ks + (tile0 + j * 16 + (lane % 8) + (lane / 16) * 8) * C::kLd + kb * 16
                                + ((lane / 8) % 2) * 8);
                        mma16816(s[2 * j], qf[kb], b[0], b[1]);
                        mma16816(s[2 * j + 1], qf[kb], b[2], b[3]);
                    }
                }
                bool const needMask = keyBase + KS > n;
                float mx[2] = {kNegInf, kNegInf};
#pragma unroll
                for (int j = 0; j < KS / 8; ++j)
                {
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                    {
                        float val = s[j][e] * p.scaleLog2;
                        if (needMask && keyBase + j * 8 + (lane % 4) * 2 + (e & 1) >= n)
                        {
                            val = kNegInf;
                        }
                        s[j][e] = val;
                        mx[e >> 1] = fmaxf(mx[e >> 1], val);
                    }
                }
                float mUse[2];
#pragma unroll
                for (int r = 0; r < 2; ++r)
                {
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 1));
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 2));
                    float const mNew = fmaxf(m[r], mx[r]);
                    mUse[r] = (mNew == kNegInf) ? 0.f : mNew;
                    float const corr = fastExp2(m[r] - mUse[r]);
                    m[r] = mNew;
                    l[r] *= corr;
#pragma unroll
                    for (int j = 0; j < D / 8; ++j)
                    {
                        o[j][2 * r] *= corr;
                        o[j][2 * r + 1] *= corr;
                    }
                }
#pragma unroll
                for (int j = 0; j < KS / 8; ++j)
                {
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                    {
                        float const pe = fastExp2(s[j][e] - mUse[e >> 1]);
                        s[j][e] = pe;
                        l[e >> 1] += pe;
                    }
                }
            }
            CpAsyncWaitUpTo<2 * C::kSub - 1>::run(2 * C::kSub - 2 * t - 2); // V_t complete
            __syncthreads();
            if (active)
            {
#pragma unroll
                for (int j = 0; j < KS / 16; ++j)
                {
                    uint32_t const a[4] = {packHalf2(s[2 * j][0], s[2 * j][1]), packHalf2(s[2 * j][2], s[2 * j][3]),
                        packHalf2(s[2 * j + 1][0], s[2 * j + 1][1]), packHalf2(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
                    for (int dp = 0; dp < D / 16; ++dp)
                    {
                        uint32_t b[4];
                        ldmatrixX4Trans(b,
                            vs + (tile0 + j * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * C::kLd + dp * 16
                                + (lane / 16) * 8);
                        mma16816(o[2 * dp], a, b[0], b[1]);
                        mma16816(o[2 * dp + 1], a, b[2], b[3]);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; ++r)
    {
        l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
        l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    }
    int const g = lane / 4;
    int const col = (lane % 4) * 2;
    __half* og = static_cast<__half*>(p.out) + bc.b * n * p.outStride + static_cast<int64_t>(bc.h) * D;

    if (WK == 1)
    {
#pragma unroll
        for (int r = 0; r < 2; ++r)
        {
            int const row = bc.q0 + wq * 16 + g + 8 * r;
            if (row < n)
            {
                float const inv = 1.f / l[r];
#pragma unroll
                for (int t = 0; t < D / 8; ++t)
                {
                    *reinterpret_cast<__half2*>(og + row * p.outStride + t * 8 + col)
                        = __floats2half2_rn(o[t][2 * r] * inv, o[t][2 * r + 1] * inv);
                }
            }
        }
        return;
    }

    // Merge the WK partial results of each query row through shared memory (reuses the K/V buffers).
    __syncthreads();
    float* os = reinterpret_cast<float*>(smem + C::kQBytes);
    float* ms = os + WQ * WK * 16 * C::kOLd;
    float* ls = ms + WQ * WK * 16;
    int const slot = (wq * WK + wk) * 16;
    if (lane % 4 == 0)
    {
        ms[slot + g] = m[0];
        ms[slot + g + 8] = m[1];
        ls[slot + g] = l[0];
        ls[slot + g + 8] = l[1];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < 2; ++r)
    {
        int const row = g + 8 * r;
        float mAll = kNegInf;
#pragma unroll
        for (int w = 0; w < WK; ++w)
        {
            mAll = fmaxf(mAll, ms[(wq * WK + w) * 16 + row]);
        }
        float const mRef = (mAll == kNegInf) ? 0.f : mAll;
        float lAll = 0.f;
#pragma unroll
        for (int w = 0; w < WK; ++w)
        {
            lAll += ls[(wq * WK + w) * 16 + row] * fastExp2(ms[(wq * WK + w) * 16 + row] - mRef);
        }
        float const f = lAll > 0.f ? fastExp2(m[r] - mRef) / lAll : 0.f;
#pragma unroll
        for (int t = 0; t < D / 8; ++t)
        {
            *reinterpret_cast<float2*>(os + (slot + row) * C::kOLd + t * 8 + col)
                = make_float2(o[t][2 * r] * f, o[t][2 * r + 1] * f);
        }
    }
    __syncthreads();
    for (int i = tid; i < WQ * 16 * (D / 2); i += C::kThreads)
    {
        int const pr = i % (D / 2);
        int const rr = i / (D / 2); // 0 .. 16*WQ-1
        int const q = rr / 16;
        int const row = rr % 16;
        int const grow = bc.q0 + rr;
        if (grow >= n)
        {
            continue;
        }
        float a0 = 0.f, a1 = 0.f;
#pragma unroll
        for (int w = 0; w < WK; ++w)
        {
            float2 const v2 = *reinterpret_cast<float2 const*>(os + ((q * WK + w) * 16 + row) * C::kOLd + 2 * pr);
            a0 += v2.x;
            a1 += v2.y;
        }
        *reinterpret_cast<__half2*>(og + grow * p.outStride + 2 * pr) = __floats2half2_rn(a0, a1);
    }
#else
    __trap(); // the host never launches this below sm_80 (checked through cudaFuncGetAttributes)
#endif
}

// ------------------------------------------------------------------------------------------------------------
// SIMT kernel (FP32 / FP16, any head dim up to DMAX)
// ------------------------------------------------------------------------------------------------------------

constexpr int kSimtThreads = 128;
constexpr int kSimtBQ = 16;  // query rows per block
constexpr int kSimtBK = 32;  // keys per tile
constexpr int kSimtRows = kSimtBQ / (kSimtThreads / 32); // query rows per warp

template <typename T, int DMAX>
__global__ void __launch_bounds__(kSimtThreads) attnSimtKernel(AttnParams p)
{
    constexpr int kDpl = DMAX / 32; // head-dim columns per lane
    // 16-byte rows everywhere so the inner loops read float4; K rows padded by 4 floats so the 8 lanes of each
    // quarter-warp (one 16-byte phase) hit distinct banks.
    __shared__ __align__(16) float qs[kSimtBQ][DMAX];
    __shared__ __align__(16) float ks[kSimtBK][DMAX + 4];
    __shared__ __align__(16) float vs[kSimtBK][DMAX];
    __shared__ __align__(16) float ps[kSimtThreads / 32][kSimtRows][kSimtBK];

    int const tid = threadIdx.x;
    int const warp = tid / 32;
    int const lane = tid % 32;
    int const n = p.n;
    int const d = p.d;
    BlockCoord const bc = decodeBlock(p, kSimtBQ);
    int64_t const base = bc.b * n * p.inStride + static_cast<int64_t>(bc.h) * d;
    T const* qg = static_cast<T const*>(p.q) + base;
    T const* kg = static_cast<T const*>(p.k) + base;
    T const* vg = static_cast<T const*>(p.v) + base;

    for (int i = tid; i < kSimtBQ * DMAX; i += kSimtThreads)
    {
        int const r = i / DMAX;
        int const c = i % DMAX;
        int const row = bc.q0 + r;
        qs[r][c] = (row < n && c < d) ? toFloat(qg[row * p.inStride + c]) * p.scaleLog2 : 0.f;
    }

    float const kNegInf = -INFINITY;
    float m[kSimtRows], l[kSimtRows], acc[kSimtRows][kDpl];
#pragma unroll
    for (int r = 0; r < kSimtRows; ++r)
    {
        m[r] = kNegInf;
        l[r] = 0.f;
#pragma unroll
        for (int i = 0; i < kDpl; ++i)
        {
            acc[r][i] = 0.f;
        }
    }

    for (int k0 = 0; k0 < n; k0 += kSimtBK)
    {
        __syncthreads();
        for (int i = tid; i < kSimtBK * DMAX; i += kSimtThreads)
        {
            int const j = i / DMAX;
            int const c = i % DMAX;
            int const key = k0 + j;
            bool const ok = key < n && c < d;
            int64_t const off = (ok ? key : 0) * p.inStride + (ok ? c : 0);
            ks[j][c] = ok ? toFloat(kg[off]) : 0.f;
            vs[j][c] = ok ? toFloat(vg[off]) : 0.f;
        }
        __syncthreads();

        float s[kSimtRows];
#pragma unroll
        for (int r = 0; r < kSimtRows; ++r)
        {
            s[r] = 0.f;
        }
        // columns d .. DMAX-1 of qs and ks are zero, so rounding d up to a multiple of 4 adds nothing
#pragma unroll 2
        for (int c = 0; c < d; c += 4)
        {
            float4 const kv = *reinterpret_cast<float4 const*>(&ks[lane][c]);
#pragma unroll
            for (int r = 0; r < kSimtRows; ++r)
            {
                float4 const qv = *reinterpret_cast<float4 const*>(&qs[warp * kSimtRows + r][c]);
                s[r] = fmaf(qv.x, kv.x, s[r]);
                s[r] = fmaf(qv.y, kv.y, s[r]);
                s[r] = fmaf(qv.z, kv.z, s[r]);
                s[r] = fmaf(qv.w, kv.w, s[r]);
            }
        }
        bool const keyOk = k0 + lane < n;
#pragma unroll
        for (int r = 0; r < kSimtRows; ++r)
        {
            float const sv = keyOk ? s[r] : kNegInf;
            float const mNew = fmaxf(m[r], groupMax<32>(sv));
            float const mUse = (mNew == kNegInf) ? 0.f : mNew;
            float const pr = exp2f(sv - mUse);
            float const corr = exp2f(m[r] - mUse);
            l[r] = l[r] * corr + groupSum<32>(pr);
            m[r] = mNew;
            ps[warp][r][lane] = pr;
#pragma unroll
            for (int i = 0; i < kDpl; ++i)
            {
                acc[r][i] *= corr;
            }
        }
        __syncwarp();
        // keys past the end have p = 0 and zero V rows, so rounding the count up to a multiple of 4 adds nothing
        int const jEnd = min(kSimtBK, n - k0);
        for (int j = 0; j < jEnd; j += 4)
        {
            float4 pr[kSimtRows];
#pragma unroll
            for (int r = 0; r < kSimtRows; ++r)
            {
                pr[r] = *reinterpret_cast<float4 const*>(&ps[warp][r][j]);
            }
#pragma unroll
            for (int i = 0; i < kDpl; ++i)
            {
                float const v0 = vs[j][lane + 32 * i];
                float const v1 = vs[j + 1][lane + 32 * i];
                float const v2 = vs[j + 2][lane + 32 * i];
                float const v3 = vs[j + 3][lane + 32 * i];
#pragma unroll
                for (int r = 0; r < kSimtRows; ++r)
                {
                    acc[r][i] = fmaf(pr[r].x, v0, acc[r][i]);
                    acc[r][i] = fmaf(pr[r].y, v1, acc[r][i]);
                    acc[r][i] = fmaf(pr[r].z, v2, acc[r][i]);
                    acc[r][i] = fmaf(pr[r].w, v3, acc[r][i]);
                }
            }
        }
        __syncwarp();
    }

    T* og = static_cast<T*>(p.out) + bc.b * n * p.outStride + static_cast<int64_t>(bc.h) * d;
#pragma unroll
    for (int r = 0; r < kSimtRows; ++r)
    {
        int const row = bc.q0 + warp * kSimtRows + r;
        if (row >= n)
        {
            continue;
        }
        float const inv = 1.f / l[r];
#pragma unroll
        for (int i = 0; i < kDpl; ++i)
        {
            int const c = lane + 32 * i;
            if (c < d)
            {
                og[row * p.outStride + c] = fromFloat<T>(acc[r][i] * inv);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Host side: implementation table and dispatch
// ------------------------------------------------------------------------------------------------------------

struct AttnCall
{
    void const* q;
    void const* k;
    void const* v;
    void* out;
    int64_t batch;
    int64_t n;
    int heads;
    int d;
    int64_t inStride;
    int64_t outStride;
    float scale;
    int dtype;
};

template <int D, int WQ, int WK, int KT, int KS = KT>
cudaError_t launchTc(AttnCall const& c, cudaStream_t stream)
{
    using C = TcConfig<D, WQ, WK, KT, KS>;
    AttnParams p{c.q, c.k, c.v, c.out, c.inStride, c.outStride, static_cast<int>(c.n), c.heads, c.d,
        static_cast<int>((c.n + C::kRowsQ - 1) / C::kRowsQ), c.scale * kLog2e};
    int64_t const blocks = static_cast<int64_t>(p.qTiles) * c.batch * c.heads;
    if (blocks > 0x7fffffff)
    {
        return cudaErrorInvalidConfiguration;
    }
    attnTcKernel<D, WQ, WK, KT, KS><<<static_cast<unsigned>(blocks), C::kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

template <typename T, int DMAX>
cudaError_t launchSimt(AttnCall const& c, cudaStream_t stream)
{
    AttnParams p{c.q, c.k, c.v, c.out, c.inStride, c.outStride, static_cast<int>(c.n), c.heads, c.d,
        static_cast<int>((c.n + kSimtBQ - 1) / kSimtBQ), c.scale * kLog2e};
    int64_t const blocks = static_cast<int64_t>(p.qTiles) * c.batch * c.heads;
    if (blocks > 0x7fffffff)
    {
        return cudaErrorInvalidConfiguration;
    }
    attnSimtKernel<T, DMAX><<<static_cast<unsigned>(blocks), kSimtThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

template <typename T>
cudaError_t launchSimtT(AttnCall const& c, cudaStream_t stream)
{
    if (c.d <= 32)
    {
        return launchSimt<T, 32>(c, stream);
    }
    if (c.d <= 64)
    {
        return launchSimt<T, 64>(c, stream);
    }
    return launchSimt<T, 128>(c, stream);
}

using TcLauncher = cudaError_t (*)(AttnCall const&, cudaStream_t);

struct TcImpl
{
    char const* name;
    TcLauncher d32;
    TcLauncher d64; // nullptr: not built for head dim 64
};

// Implementation ids 2.. (MVT_ATTN_TC_FIRST + index). Name: q<query rows per block>_k<key warps>x<keys per warp and
// chunk>[s<keys per register sub-tile>]; a block holds <key warps> * <keys per warp> keys in shared memory at a time.
// Kept: the tilings that were fastest for some MobileViT shape on the H100, plus a few for other head dims / lengths
// (plugin/README.md lists the timings of each).
TcImpl const kTcImpls[] = {
    {"tc_q16_k1x16", launchTc<32, 1, 1, 16>, nullptr},
    {"tc_q16_k4x16", launchTc<32, 1, 4, 16>, launchTc<64, 1, 4, 16>},
    {"tc_q16_k1x64", launchTc<32, 1, 1, 64>, nullptr},
    {"tc_q32_k1x64", launchTc<32, 2, 1, 64>, nullptr},
    {"tc_q64_k1x64", launchTc<32, 4, 1, 64>, nullptr},
    {"tc_q32_k2x32", launchTc<32, 2, 2, 32>, launchTc<64, 2, 2, 32>},
    {"tc_q16_k4x64", launchTc<32, 1, 4, 64>, nullptr},
    {"tc_q32_k4x64", launchTc<32, 2, 4, 64>, nullptr},
    {"tc_q64_k2x128s64", launchTc<32, 4, 2, 128, 64>, nullptr},
};
constexpr int kNumTc = static_cast<int>(sizeof(kTcImpls) / sizeof(kTcImpls[0]));
constexpr int kNumImpls = MVT_ATTN_TC_FIRST + kNumTc;

// Whether the tensor-core kernels in this library were compiled for an architecture >= sm_80 for the current
// device (a build for sm_75 only would JIT its PTX with the tensor-core body compiled out).
cudaError_t tensorCoresUsable(bool& usable)
{
    DeviceInfo dev;
    cudaError_t err = currentDeviceInfo(dev);
    if (err != cudaSuccess)
    {
        return err;
    }
    usable = false;
    if (dev.ccMajor < 8)
    {
        return cudaSuccess;
    }
    static std::atomic<int> cached{-1}; // one value per process: all devices share the loaded image's PTX level
    int v = cached.load(std::memory_order_relaxed);
    if (v < 0)
    {
        cudaFuncAttributes attr;
        err = cudaFuncGetAttributes(&attr, attnTcKernel<32, 1, 1, 16, 16>);
        if (err != cudaSuccess)
        {
            return err;
        }
        v = attr.ptxVersion >= 80 ? 1 : 0;
        cached.store(v, std::memory_order_relaxed);
    }
    usable = v == 1;
    return cudaSuccess;
}

bool tcShapeOk(AttnCall const& c, TcImpl const& impl)
{
    if (c.dtype != MVT_DTYPE_FLOAT16)
    {
        return false;
    }
    if (!((c.d == 32 && impl.d32 != nullptr) || (c.d == 64 && impl.d64 != nullptr)))
    {
        return false;
    }
    if (c.n > 0x7fffffff)
    {
        return false;
    }
    // 16-byte cp.async of every row piece; half2 stores of the output
    return isAligned(c.q, 16) && isAligned(c.k, 16) && isAligned(c.v, 16) && c.inStride % 8 == 0
        && isAligned(c.out, 4) && c.outStride % 2 == 0;
}

int tcIndex(char const* name)
{
    for (int i = 0; i < kNumTc; ++i)
    {
        char const* a = kTcImpls[i].name;
        char const* b = name;
        while (*a != 0 && *a == *b)
        {
            ++a;
            ++b;
        }
        if (*a == 0 && *b == 0)
        {
            return i;
        }
    }
    return 0;
}

// Tiling for the MobileViT shapes (head dim 32; sequences of 16 / 64 / 256), from benchmark/bench_plugins.py runs on
// an H100 (plugin/README.md): short sequences are latency-bound and take one block per 16 or 64 queries with all keys
// in one warp; long ones take the largest query tile that still gives ~0.75 blocks per SM (K/V are loaded once per
// block, so bigger query tiles move fewer bytes, but too few blocks leave SMs idle).
int autoTcIndex(AttnCall const& c, int smCount)
{
    if (c.d == 64)
    {
        return tcIndex(c.n <= 64 ? "tc_q16_k4x16" : "tc_q32_k2x32");
    }
    if (c.n <= 16)
    {
        return tcIndex("tc_q16_k1x16");
    }
    if (c.n <= 128)
    {
        return tcIndex("tc_q64_k1x64");
    }
    int64_t const seqs = c.batch * c.heads;
    int64_t const enough = (static_cast<int64_t>(smCount) * 3) / 4;
    if ((c.n + 63) / 64 * seqs >= enough)
    {
        return tcIndex("tc_q64_k1x64");
    }
    if ((c.n + 31) / 32 * seqs >= enough)
    {
        return tcIndex("tc_q32_k4x64");
    }
    return tcIndex("tc_q16_k4x64");
}

cudaError_t resolveImpl(AttnCall const& c, int requested, int& impl)
{
    impl = -1;
    bool tcOk = false;
    cudaError_t err = tensorCoresUsable(tcOk);
    if (err != cudaSuccess)
    {
        return err;
    }
    DeviceInfo dev;
    if ((err = currentDeviceInfo(dev)) != cudaSuccess)
    {
        return err;
    }
    if (requested == MVT_ATTN_AUTO)
    {
        int const t = autoTcIndex(c, dev.smCount);
        if (tcOk && tcShapeOk(c, kTcImpls[t]))
        {
            impl = MVT_ATTN_TC_FIRST + t;
        }
        else if (c.d <= 128)
        {
            impl = MVT_ATTN_SIMT;
        }
        return cudaSuccess;
    }
    if (requested == MVT_ATTN_SIMT)
    {
        impl = c.d <= 128 ? MVT_ATTN_SIMT : -1;
        return cudaSuccess;
    }
    if (requested >= MVT_ATTN_TC_FIRST && requested < kNumImpls && tcOk
        && tcShapeOk(c, kTcImpls[requested - MVT_ATTN_TC_FIRST]))
    {
        impl = requested;
    }
    return cudaSuccess;
}

bool argsOk(AttnCall const& c)
{
    if (c.batch < 0 || c.n < 0 || c.n > 0x7fffffff || c.heads < 1 || c.d < 1 || c.d > 128
        || (c.dtype != MVT_DTYPE_FLOAT32 && c.dtype != MVT_DTYPE_FLOAT16))
    {
        return false;
    }
    if (c.inStride < static_cast<int64_t>(c.heads) * c.d || c.outStride < static_cast<int64_t>(c.heads) * c.d)
    {
        return false;
    }
    if (c.batch > 0 && c.n > 0 && (c.q == nullptr || c.k == nullptr || c.v == nullptr || c.out == nullptr))
    {
        return false;
    }
    return true;
}

} // namespace
} // namespace mvt

extern "C" int32_t mvt_attention_ex(void const* q, void const* k, void const* v, void* out, int64_t batch,
    int64_t seq_len, int32_t num_heads, int32_t head_dim, int64_t in_row_stride, int64_t out_row_stride,
    float scale, int32_t dtype, int32_t impl, cudaStream_t stream)
{
    using namespace mvt;
    AttnCall const c{q, k, v, out, batch, seq_len, num_heads, head_dim, in_row_stride, out_row_stride, scale, dtype};
    if (!argsOk(c) || impl < 0 || impl >= kNumImpls)
    {
        return cudaErrorInvalidValue;
    }
    if (batch == 0 || seq_len == 0)
    {
        return cudaSuccess;
    }
    int chosen = -1;
    cudaError_t err = resolveImpl(c, impl, chosen);
    if (err != cudaSuccess)
    {
        return err;
    }
    if (chosen < 0)
    {
        return cudaErrorInvalidValue;
    }
    if (chosen == MVT_ATTN_SIMT)
    {
        return dtype == MVT_DTYPE_FLOAT32 ? launchSimtT<float>(c, stream) : launchSimtT<__half>(c, stream);
    }
    TcImpl const& t = kTcImpls[chosen - MVT_ATTN_TC_FIRST];
    return (head_dim == 32 ? t.d32 : t.d64)(c, stream);
}

extern "C" int32_t mvt_attention(void const* q, void const* k, void const* v, void* out, int64_t batch,
    int64_t seq_len, int32_t num_heads, int32_t head_dim, int64_t in_row_stride, int64_t out_row_stride,
    float scale, int32_t dtype, cudaStream_t stream)
{
    return mvt_attention_ex(q, k, v, out, batch, seq_len, num_heads, head_dim, in_row_stride, out_row_stride, scale,
        dtype, MVT_ATTN_AUTO, stream);
}

extern "C" int32_t mvt_attention_num_impls(void)
{
    return mvt::kNumImpls;
}

extern "C" char const* mvt_attention_impl_name(int32_t impl)
{
    if (impl == MVT_ATTN_AUTO)
    {
        return "auto";
    }
    if (impl == MVT_ATTN_SIMT)
    {
        return "simt";
    }
    if (impl >= MVT_ATTN_TC_FIRST && impl < mvt::kNumImpls)
    {
        return mvt::kTcImpls[impl - MVT_ATTN_TC_FIRST].name;
    }
    return "invalid";
}

extern "C" int32_t mvt_attention_auto_impl(void const* q, void const* k, void const* v, void* out, int64_t batch,
    int64_t seq_len, int32_t num_heads, int32_t head_dim, int64_t in_row_stride, int64_t out_row_stride,
    int32_t dtype)
{
    using namespace mvt;
    AttnCall const c{q, k, v, out, batch, seq_len, num_heads, head_dim, in_row_stride, out_row_stride, 1.f, dtype};
    if (!argsOk(c))
    {
        return -1;
    }
    int chosen = -1;
    if (resolveImpl(c, MVT_ATTN_AUTO, chosen) != cudaSuccess)
    {
        return -1;
    }
    return chosen;
}
