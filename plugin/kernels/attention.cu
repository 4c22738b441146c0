// attention.cu - fused softmax(q k^T * scale) v, one kernel per call, FP32 softmax and accumulation.
//
// Two families, both flash-style (online softmax over key chunks, so any sequence length works and the N x N
// score matrix never reaches memory):
//  * attnTcKernel<D, WQ, WK, KT, KS> (FP16, any head dim 1..128, sm_80+): D is the head dim rounded up to a
//    tensor-core class (16, 32, 48, 64, 96, 128). The columns [head_dim, D) of the shared-memory tiles are zeroed
//    once per block and never loaded, so padding costs MMA work but no global traffic. A block owns 16*WQ query
//    rows of one (batch, head). Each chunk of KT*WK keys of K and V is copied to shared memory with cp.async
//    (16-, 8- or 4-byte pieces, the widest that the head dim, row stride and pointers allow; 2-byte plain loads
//    for odd head dims or 2-byte-aligned pointers); warp (wq, wk) multiplies its 16 query rows with its KT keys
//    of the chunk on the tensor cores (mma.sync m16n8k16, operands through ldmatrix), keeps the running max / sum
//    in registers, and accumulates P V on the tensor cores again (P converted to FP16 in registers,
//    FlashAttention-2 style). With WK > 1 the key range is split across warps and the partial (max, sum, O) of
//    the WK warps are merged through shared memory at the end.
//  * attnSimtKernel<T, DMAX, KW> (FP32 or FP16, head_dim <= 128, any alignment): CUDA cores, FP32 FMA (no TF32,
//    so FP32 results keep FP32 accuracy). A block of KW warps owns 16 query rows; each warp takes every KW-th
//    tile of 32 keys into its own shared-memory slice (no block barriers in the key loop), one key per lane for
//    the scores and one head-dim column per lane for P V, all 16 rows at once; the KW partial results are merged
//    through shared memory at the end.
#include "common.cuh"
#include "mvt_kernels.h"

#include <atomic>
#include <initializer_list>
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
    int vw;          // tensor-core path: halves per global load piece (8, 4, 2 or 1)
    int outVec;      // tensor-core path: 1 = output rows take half2 stores
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

// Shared memory of one tiling (bytes); the same formula as TcConfig, usable without its static_asserts.
constexpr int tcSmemBytes(int d, int wq, int wk, int kt)
{
    return (16 * wq * (d + 8) * 2)
        + ((2 * kt * wk * (d + 8) * 2) > (wk > 1 ? (wq * wk * 16 * (d + 4) * 4 + 2 * wq * wk * 16 * 4) : 0)
                ? (2 * kt * wk * (d + 8) * 2)
                : (wk > 1 ? (wq * wk * 16 * (d + 4) * 4 + 2 * wq * wk * 16 * 4) : 0));
}

// Whether a tiling is built for head-dim class D: static shared memory <= 48 KiB, and the score tile (KS keys)
// plus the O accumulator fit in registers without spilling (D * KS <= 64 * 64, measured with -Xptxas -v).
constexpr bool tcFits(int d, int wq, int wk, int kt, int ks)
{
    return tcSmemBytes(d, wq, wk, kt) <= 48 * 1024 && d * ks <= 64 * 64 && 32 * wq * wk <= 512;
}

template <int D, int WQ, int WK, int KT, int KS>
struct TcConfig
{
    static_assert(D % 16 == 0 && D <= 128, "head-dim class must be a multiple of 16");
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
    static_assert(kSmemBytes == tcSmemBytes(D, WQ, WK, KT), "tcSmemBytes out of date");
    static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
};

__device__ __forceinline__ uint32_t smemAddr(void const* p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// cp.async of BYTES (16, 8 or 4) bytes; srcBytes < BYTES zero-fills the rest (0: no global read at all).
template <int BYTES>
__device__ __forceinline__ void cpAsync(void* dst, void const* src, int srcBytes)
{
#if __CUDA_ARCH__ >= 800
    if (BYTES == 16)
    {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smemAddr(dst)), "l"(src),
                     "r"(srcBytes)
                     : "memory");
    }
    else
    {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smemAddr(dst)), "l"(src), "n"(BYTES),
                     "r"(srcBytes)
                     : "memory");
    }
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

// Copy rows of `d` halves from global memory to shared-memory rows of LD halves, in pieces of VW halves
// (VW divides d, the row stride and the pointers' alignment). Row r of the copy: shared row rowMap(r) within
// `dst`, global row `first + rowMap(r)` of `src`; rows at or past `limit` are zero-filled without a global read.
// Columns d .. D-1 are never written here (zeroed once per block).
struct RowsAll
{
    __device__ __forceinline__ int operator()(int r) const
    {
        return r;
    }
};
template <int KT, int KS>
struct RowsSubTile // sub-tile t of every key warp: KS rows at w * KT + t * KS for w = 0 .. WK-1
{
    int t;
    __device__ __forceinline__ int operator()(int r) const
    {
        return (r / KS) * KT + t * KS + (r % KS);
    }
};

template <int D, int LD, int VW, int ROWS, int THREADS, typename Map>
__device__ __forceinline__ void loadRows(
    __half* dst, __half const* src, int64_t stride, int first, int limit, int d, int tid, Map map)
{
    constexpr int kPpr = D / VW; // pieces per padded row (those at column >= d are skipped)
#pragma unroll 1
    for (int i = tid; i < ROWS * kPpr; i += THREADS)
    {
        int const r = i / kPpr;
        int const c = (i - r * kPpr) * VW;
        if (c < d)
        {
            int const row = map(r);
            int const g = first + row;
            bool const ok = g < limit;
            __half* s = dst + row * LD + c;
            __half const* gp = src + (ok ? g : 0) * stride + c;
            if (VW == 1)
            {
                *s = ok ? *gp : __float2half_rn(0.f);
            }
            else
            {
                cpAsync<VW * 2>(s, gp, ok ? VW * 2 : 0);
            }
        }
    }
}

template <int D, int LD, int ROWS, int THREADS, typename Map>
__device__ __forceinline__ void loadRowsAny(
    int vw, __half* dst, __half const* src, int64_t stride, int first, int limit, int d, int tid, Map map)
{
    if (vw == 8)
    {
        loadRows<D, LD, 8, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
    }
    else if (vw == 4)
    {
        loadRows<D, LD, 4, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
    }
    else if (vw == 2)
    {
        loadRows<D, LD, 2, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
    }
    else
    {
        loadRows<D, LD, 1, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
    }
}

// Zero columns d .. D-1 of `rows` shared rows of LD halves (the padding of the head dim up to its class).
template <int D, int LD, int THREADS>
__device__ __forceinline__ void zeroPadColumns(__half* base, int rows, int d, int tid)
{
    int const firstPiece = d / 8; // the first 8-column piece that holds padding
    int const pieces = D / 8 - firstPiece;
    if (pieces <= 0)
    {
        return;
    }
    for (int i = tid; i < rows * pieces; i += THREADS)
    {
        int const r = i / pieces;
        int const c = (firstPiece + (i - r * pieces)) * 8;
        __half* s = base + r * LD + c;
        if (c >= d)
        {
            *reinterpret_cast<uint4*>(s) = make_uint4(0u, 0u, 0u, 0u);
        }
        else
        {
            for (int j = d - c; j < 8; ++j)
            {
                s[j] = __float2half_rn(0.f);
            }
        }
    }
}

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

// Store output columns c and c+1 (c even) of one row: half2 when the row allows it, else element by element.
__device__ __forceinline__ void storeOut2(__half* row, int c, int d, bool vec, float a, float b)
{
    if (c >= d)
    {
        return;
    }
    if (vec)
    {
        *reinterpret_cast<__half2*>(row + c) = __floats2half2_rn(a, b);
    }
    else
    {
        row[c] = __float2half_rn(a);
        if (c + 1 < d)
        {
            row[c + 1] = __float2half_rn(b);
        }
    }
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
    int const d = p.d;
    int const vw = p.vw;
    BlockCoord const bc = decodeBlock(p, C::kRowsQ);
    int64_t const base = bc.b * n * p.inStride + static_cast<int64_t>(bc.h) * d;
    __half const* qg = static_cast<__half const*>(p.q) + base;
    __half const* kg = static_cast<__half const*>(p.k) + base;
    __half const* vg = static_cast<__half const*>(p.v) + base;

    // Head-dim padding: columns d .. D-1 of Q, K and V stay zero for the whole block (loads never touch them).
    if (d < D)
    {
        zeroPadColumns<D, C::kLd, C::kThreads>(qs, C::kRowsQ, d, tid);
        zeroPadColumns<D, C::kLd, C::kThreads>(ks, 2 * C::kChunk, d, tid); // K and V rows are contiguous
    }
    loadRowsAny<D, C::kLd, C::kRowsQ, C::kThreads>(vw, qs, qg, p.inStride, bc.q0, n, d, tid, RowsAll());

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
#pragma unroll
        for (int t = 0; t < C::kSub; ++t)
        {
            RowsSubTile<KT, KS> const map{t};
            loadRowsAny<D, C::kLd, WK * KS, C::kThreads>(vw, ks, kg, p.inStride, c0, n, d, tid, map);
            cpAsyncCommit();
            loadRowsAny<D, C::kLd, WK * KS, C::kThreads>(vw, vs, vg, p.inStride, c0, n, d, tid, map);
            cpAsyncCommit();
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
    bool const vec = p.outVec != 0;
    __half* og = static_cast<__half*>(p.out) + bc.b * n * p.outStride + static_cast<int64_t>(bc.h) * d;

    if (WK == 1)
    {
#pragma unroll
        for (int r = 0; r < 2; ++r)
        {
            int const row = bc.q0 + wq * 16 + g + 8 * r;
            if (row < n)
            {
                float const inv = 1.f / l[r];
                __half* orow = og + row * p.outStride;
#pragma unroll
                for (int t = 0; t < D / 8; ++t)
                {
                    storeOut2(orow, t * 8 + col, d, vec, o[t][2 * r] * inv, o[t][2 * r + 1] * inv);
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
    int const pairs = (d + 1) / 2; // column pairs that reach the output
    for (int i = tid; i < WQ * 16 * (D / 2); i += C::kThreads)
    {
        int const pr = i % (D / 2);
        int const rr = i / (D / 2); // 0 .. 16*WQ-1
        int const q = rr / 16;
        int const row = rr % 16;
        int const grow = bc.q0 + rr;
        if (grow >= n || pr >= pairs)
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
        storeOut2(og + grow * p.outStride, 2 * pr, d, vec, a0, a1);
    }
#else
    __trap(); // the host never launches this below sm_80 (checked through cudaFuncGetAttributes)
#endif
}

// ------------------------------------------------------------------------------------------------------------
// SIMT kernel (FP32 / FP16, any head dim up to DMAX)
// ------------------------------------------------------------------------------------------------------------

constexpr int kSimtBQ = 16; // query rows per block (every warp of the block works on all of them)
constexpr int kSimtBK = 32; // keys per warp tile (one per lane)

template <int DMAX, int KW>
struct SimtConfig
{
    static constexpr int kThreads = 32 * KW;
    static constexpr int kDpl = DMAX / 32;       // head-dim columns per lane in P V
    static constexpr int kKLd = DMAX + 4;        // K rows padded: the 8 lanes of a 16-byte phase hit distinct banks
    static constexpr int kWarpFloats = kSimtBK * kKLd + kSimtBK * DMAX + kSimtBQ * kSimtBK; // K, V, P of one warp
    static constexpr int kQFloats = kSimtBQ * DMAX;
    static constexpr int kMergeFloats = KW * kSimtBQ * DMAX + 2 * KW * kSimtBQ;
    static constexpr int kFloats
        = kQFloats + (KW * kWarpFloats > kMergeFloats ? KW * kWarpFloats : kMergeFloats);
    static_assert(kFloats * 4 <= 48 * 1024, "static shared memory limit");
};

template <typename T>
__device__ __forceinline__ float loadGlobal(T const* p)
{
    return toFloat(__ldg(p));
}

template <typename T, int DMAX, int KW>
__global__ void __launch_bounds__(32 * KW, 1) attnSimtKernel(AttnParams p)
{
    using C = SimtConfig<DMAX, KW>;
    constexpr int kDpl = C::kDpl;
    __shared__ __align__(16) float smem[C::kFloats];
    float* qs = smem;                                     // [16][DMAX], pre-scaled by scale * log2(e)
    int const tid = threadIdx.x;
    int const warp = tid / 32;
    int const lane = tid % 32;
    float* ks = smem + C::kQFloats + warp * C::kWarpFloats; // [32][kKLd]  this warp's slice
    float* vs = ks + kSimtBK * C::kKLd;                     // [32][DMAX]
    float* ps = vs + kSimtBK * DMAX;                        // [16][32]
    int const n = p.n;
    int const d = p.d;
    BlockCoord const bc = decodeBlock(p, kSimtBQ);
    int64_t const base = bc.b * n * p.inStride + static_cast<int64_t>(bc.h) * d;
    T const* qg = static_cast<T const*>(p.q) + base;
    T const* kg = static_cast<T const*>(p.k) + base;
    T const* vg = static_cast<T const*>(p.v) + base;

    for (int i = tid; i < kSimtBQ * DMAX; i += C::kThreads)
    {
        int const r = i / DMAX;
        int const c = i % DMAX;
        int const row = bc.q0 + r;
        qs[i] = (row < n && c < d) ? loadGlobal(qg + row * p.inStride + c) * p.scaleLog2 : 0.f;
    }
    __syncthreads();

    float const kNegInf = -INFINITY;
    float m[kSimtBQ], l[kSimtBQ], acc[kSimtBQ][kDpl];
#pragma unroll
    for (int r = 0; r < kSimtBQ; ++r)
    {
        m[r] = kNegInf;
        l[r] = 0.f; // this lane's part of the row sum (its keys); summed over the warp at the end
#pragma unroll
        for (int i = 0; i < kDpl; ++i)
        {
            acc[r][i] = 0.f;
        }
    }

    for (int k0 = warp * kSimtBK; k0 < n; k0 += KW * kSimtBK)
    {
        // this warp's tile of 32 keys, lane = column (rows past the end and columns past d are zero)
#pragma unroll 8
        for (int j = 0; j < kSimtBK; ++j)
        {
            int const key = k0 + j;
            T const* kr = kg + static_cast<int64_t>(key < n ? key : 0) * p.inStride;
            T const* vr = vg + static_cast<int64_t>(key < n ? key : 0) * p.inStride;
#pragma unroll
            for (int i = 0; i < kDpl; ++i)
            {
                int const c = lane + 32 * i;
                bool const ok = key < n && c < d;
                ks[j * C::kKLd + c] = ok ? loadGlobal(kr + c) : 0.f;
                vs[j * DMAX + c] = ok ? loadGlobal(vr + c) : 0.f;
            }
        }
        __syncwarp();

        float s[kSimtBQ];
#pragma unroll
        for (int r = 0; r < kSimtBQ; ++r)
        {
            s[r] = 0.f;
        }
        // columns d .. DMAX-1 of qs and ks are zero, so rounding d up to a multiple of 4 adds nothing
        for (int c = 0; c < d; c += 4)
        {
            float4 const kv = *reinterpret_cast<float4 const*>(ks + lane * C::kKLd + c);
#pragma unroll
            for (int r = 0; r < kSimtBQ; ++r)
            {
                float4 const qv = *reinterpret_cast<float4 const*>(qs + r * DMAX + c);
                s[r] = fmaf(qv.x, kv.x, s[r]);
                s[r] = fmaf(qv.y, kv.y, s[r]);
                s[r] = fmaf(qv.z, kv.z, s[r]);
                s[r] = fmaf(qv.w, kv.w, s[r]);
            }
        }
        bool const keyOk = k0 + lane < n;
#pragma unroll
        for (int r = 0; r < kSimtBQ; ++r)
        {
            float const sv = keyOk ? s[r] : kNegInf;
            float const mNew = fmaxf(m[r], groupMax<32>(sv));
            float const mUse = (mNew == kNegInf) ? 0.f : mNew;
            float const pr = exp2f(sv - mUse);
            float const corr = exp2f(m[r] - mUse);
            l[r] = l[r] * corr + pr;
            m[r] = mNew;
            ps[r * kSimtBK + lane] = pr;
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
            float v[4][kDpl];
#pragma unroll
            for (int u = 0; u < 4; ++u)
            {
#pragma unroll
                for (int i = 0; i < kDpl; ++i)
                {
                    v[u][i] = vs[(j + u) * DMAX + lane + 32 * i];
                }
            }
#pragma unroll
            for (int r = 0; r < kSimtBQ; ++r)
            {
                float4 const pr = *reinterpret_cast<float4 const*>(ps + r * kSimtBK + j);
#pragma unroll
                for (int i = 0; i < kDpl; ++i)
                {
                    acc[r][i] = fmaf(pr.x, v[0][i], acc[r][i]);
                    acc[r][i] = fmaf(pr.y, v[1][i], acc[r][i]);
                    acc[r][i] = fmaf(pr.z, v[2][i], acc[r][i]);
                    acc[r][i] = fmaf(pr.w, v[3][i], acc[r][i]);
                }
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < kSimtBQ; ++r)
    {
        l[r] = groupSum<32>(l[r]);
    }

    T* og = static_cast<T*>(p.out) + bc.b * n * p.outStride + static_cast<int64_t>(bc.h) * d;
    if (KW == 1)
    {
#pragma unroll
        for (int r = 0; r < kSimtBQ; ++r)
        {
            int const row = bc.q0 + r;
            if (row < n)
            {
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
        return;
    }

    // Merge the KW partial results (max, sum, O) of each row through shared memory (reuses the warp slices).
    __syncthreads();
    float* os = smem + C::kQFloats;           // [KW][16][DMAX]
    float* ms = os + KW * kSimtBQ * DMAX;     // [KW][16]
    float* ls = ms + KW * kSimtBQ;            // [KW][16]
#pragma unroll
    for (int r = 0; r < kSimtBQ; ++r)
    {
#pragma unroll
        for (int i = 0; i < kDpl; ++i)
        {
            os[(warp * kSimtBQ + r) * DMAX + lane + 32 * i] = acc[r][i];
        }
    }
    if (lane < kSimtBQ)
    {
        // lane r publishes row r (register arrays need compile-time indices: select through the unrolled loop)
        float mr = 0.f, lr = 0.f;
#pragma unroll
        for (int r = 0; r < kSimtBQ; ++r)
        {
            if (r == lane)
            {
                mr = m[r];
                lr = l[r];
            }
        }
        ms[warp * kSimtBQ + lane] = mr;
        ls[warp * kSimtBQ + lane] = lr;
    }
    __syncthreads();
    for (int i = tid; i < kSimtBQ * DMAX; i += C::kThreads)
    {
        int const r = i / DMAX;
        int const c = i % DMAX;
        int const row = bc.q0 + r;
        if (row >= n || c >= d)
        {
            continue;
        }
        float mAll = kNegInf;
#pragma unroll
        for (int w = 0; w < KW; ++w)
        {
            mAll = fmaxf(mAll, ms[w * kSimtBQ + r]);
        }
        float num = 0.f, den = 0.f;
#pragma unroll
        for (int w = 0; w < KW; ++w)
        {
            float const f = exp2f(ms[w * kSimtBQ + r] - mAll); // a warp without keys: exp2(-inf) = 0
            num += os[(w * kSimtBQ + r) * DMAX + c] * f;
            den += ls[w * kSimtBQ + r] * f;
        }
        og[row * p.outStride + c] = fromFloat<T>(num / den);
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

// Halves per global load piece of the tensor-core path: the widest of 8 / 4 / 2 that divides the head dim and the
// row stride and matches the alignment of q, k and v; else 1 (plain 2-byte loads).
int tcLoadWidth(AttnCall const& c)
{
    for (int vw = 8; vw >= 2; vw /= 2)
    {
        size_t const bytes = static_cast<size_t>(vw) * 2;
        if (c.d % vw == 0 && c.inStride % vw == 0 && isAligned(c.q, bytes) && isAligned(c.k, bytes)
            && isAligned(c.v, bytes))
        {
            return vw;
        }
    }
    return 1;
}

template <int D, int WQ, int WK, int KT, int KS>
cudaError_t launchTc(AttnCall const& c, cudaStream_t stream)
{
    using C = TcConfig<D, WQ, WK, KT, KS>;
    bool const outVec = c.d % 2 == 0 && c.outStride % 2 == 0 && isAligned(c.out, 4);
    AttnParams p{c.q, c.k, c.v, c.out, c.inStride, c.outStride, static_cast<int>(c.n), c.heads, c.d,
        static_cast<int>((c.n + C::kRowsQ - 1) / C::kRowsQ), c.scale * kLog2e, tcLoadWidth(c), outVec ? 1 : 0};
    int64_t const blocks = static_cast<int64_t>(p.qTiles) * c.batch * c.heads;
    if (blocks > 0x7fffffff)
    {
        return cudaErrorInvalidConfiguration;
    }
    attnTcKernel<D, WQ, WK, KT, KS><<<static_cast<unsigned>(blocks), C::kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

template <typename T, int DMAX, int KW>
cudaError_t launchSimt(AttnCall const& c, cudaStream_t stream)
{
    AttnParams p{c.q, c.k, c.v, c.out, c.inStride, c.outStride, static_cast<int>(c.n), c.heads, c.d,
        static_cast<int>((c.n + kSimtBQ - 1) / kSimtBQ), c.scale * kLog2e, 1, 0};
    int64_t const blocks = static_cast<int64_t>(p.qTiles) * c.batch * c.heads;
    if (blocks > 0x7fffffff)
    {
        return cudaErrorInvalidConfiguration;
    }
    attnSimtKernel<T, DMAX, KW><<<static_cast<unsigned>(blocks), SimtConfig<DMAX, KW>::kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

// Key warps per block: up to 4 for head dims <= 32, 2 for <= 64, 1 above (shared memory: one K/V/P slice per warp),
// and no more than there are 32-key tiles (an idle warp would only add to the merge).
template <typename T>
cudaError_t launchSimtT(AttnCall const& c, cudaStream_t stream)
{
    int64_t const tiles = (c.n + kSimtBK - 1) / kSimtBK;
    if (c.d <= 32)
    {
        return tiles >= 4 ? launchSimt<T, 32, 4>(c, stream)
                          : (tiles >= 2 ? launchSimt<T, 32, 2>(c, stream) : launchSimt<T, 32, 1>(c, stream));
    }
    if (c.d <= 64)
    {
        return tiles >= 2 ? launchSimt<T, 64, 2>(c, stream) : launchSimt<T, 64, 1>(c, stream);
    }
    return launchSimt<T, 128, 1>(c, stream);
}

using TcLauncher = cudaError_t (*)(AttnCall const&, cudaStream_t);

// Head-dim classes of the tensor-core path: a head dim d runs in the smallest class >= d (zero-padded columns).
constexpr int kTcDims[] = {16, 32, 48, 64, 96, 128};
constexpr int kNumDims = static_cast<int>(sizeof(kTcDims) / sizeof(kTcDims[0]));

int tcDimClass(int d)
{
    for (int i = 0; i < kNumDims; ++i)
    {
        if (d <= kTcDims[i])
        {
            return i;
        }
    }
    return -1;
}

template <bool FITS, int D, int WQ, int WK, int KT, int KS>
struct TcPick
{
    static TcLauncher get()
    {
        return launchTc<D, WQ, WK, KT, KS>;
    }
};
template <int D, int WQ, int WK, int KT, int KS>
struct TcPick<false, D, WQ, WK, KT, KS>
{
    static TcLauncher get()
    {
        return nullptr;
    }
};

template <int D, int WQ, int WK, int KT, int KS>
TcLauncher tcLauncher(int maxDim)
{
    return D <= maxDim ? TcPick<tcFits(D, WQ, WK, KT, KS), D, WQ, WK, KT, KS>::get() : nullptr;
}

struct TcImpl
{
    char const* name;
    TcLauncher byDim[kNumDims]; // nullptr: not built for that head-dim class
};

// Every class for which the tiling fits (tcFits) up to head dim maxDim.
template <int WQ, int WK, int KT, int KS = KT>
TcImpl tcImpl(char const* name, int maxDim = 128)
{
    return TcImpl{name,
        {tcLauncher<16, WQ, WK, KT, KS>(maxDim), tcLauncher<32, WQ, WK, KT, KS>(maxDim),
            tcLauncher<48, WQ, WK, KT, KS>(maxDim), tcLauncher<64, WQ, WK, KT, KS>(maxDim),
            tcLauncher<96, WQ, WK, KT, KS>(maxDim), tcLauncher<128, WQ, WK, KT, KS>(maxDim)}};
}

// Implementation ids 2.. (MVT_ATTN_TC_FIRST + index). Name: q<query rows per block>_k<key warps>x<keys per warp and
// chunk>[s<keys per register sub-tile>]; a block holds <key warps> * <keys per warp> keys in shared memory at a time.
// Each tiling is built for the head-dim classes where it fits; plugin/README.md has the sweep behind the choice.
TcImpl const kTcImpls[] = {
    tcImpl<1, 1, 16>("tc_q16_k1x16"),
    tcImpl<1, 4, 16>("tc_q16_k4x16"),
    tcImpl<1, 1, 64>("tc_q16_k1x64", 64),
    tcImpl<2, 1, 64>("tc_q32_k1x64", 64),
    tcImpl<4, 1, 64>("tc_q64_k1x64", 64),
    tcImpl<4, 1, 32>("tc_q64_k1x32"),
    tcImpl<8, 1, 64>("tc_q128_k1x64", 64),
    tcImpl<2, 2, 32>("tc_q32_k2x32"),
    tcImpl<1, 4, 32>("tc_q16_k4x32"),
    tcImpl<2, 4, 32>("tc_q32_k4x32", 64),
    tcImpl<1, 4, 64>("tc_q16_k4x64", 64),
    tcImpl<2, 4, 64>("tc_q32_k4x64", 64),
    tcImpl<4, 2, 128, 64>("tc_q64_k2x128s64", 64),
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

TcLauncher tcLauncherFor(AttnCall const& c, TcImpl const& impl)
{
    int const cls = tcDimClass(c.d);
    return cls < 0 ? nullptr : impl.byDim[cls];
}

// FP16, a head-dim class this tiling is built for. Any alignment: the load width follows the pointers (tcLoadWidth).
bool tcShapeOk(AttnCall const& c, TcImpl const& impl)
{
    return c.dtype == MVT_DTYPE_FLOAT16 && c.n <= 0x7fffffff && tcLauncherFor(c, impl) != nullptr;
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
    return -1;
}

// The first of `names` built for this head dim (-1: none).
int firstBuilt(AttnCall const& c, std::initializer_list<char const*> names)
{
    for (char const* name : names)
    {
        int const i = tcIndex(name);
        if (i >= 0 && tcShapeOk(c, kTcImpls[i]))
        {
            return i;
        }
    }
    return -1;
}

// Tiling rules, from the benchmark/bench_plugins.py sweep on an H200 (plugin/README.md has the table). The paths are
// latency-bound at these sizes; what decides is how many threads issue the loads and how often K/V are re-read:
//  * N <= 16: one 16-query warp per (batch, head) for head dims <= 32 with 16-byte loads; with narrower loads or
//    wider heads a 4-warp block (q64_k1x32) whose idle query warps still share the loads is faster.
//  * N <= 128: 64 queries per block with all keys in one warp each; with narrower than 16-byte loads (head dims
//    20, 30, ...) 128 queries per block (more threads per load).
//  * longer: 128 queries per block once that still fills ~0.9 of the SMs (K/V read once per 128 queries), else 32 or
//    16 queries per block with the keys split over 4 warps (more blocks, shorter chains per warp).
int autoTcIndex(AttnCall const& c, int smCount)
{
    int64_t const seqs = c.batch * c.heads;
    int64_t const sms = smCount;
    int const cls = kTcDims[tcDimClass(c.d)];
    bool const narrow = tcLoadWidth(c) < 8;
    if (cls > 64) // classes 96 / 128: 32-key register tiles only
    {
        if (c.n <= 16)
        {
            return firstBuilt(c, {"tc_q16_k1x16"});
        }
        if ((c.n + 63) / 64 * seqs >= (sms * 3) / 4)
        {
            return firstBuilt(c, {"tc_q64_k1x32"});
        }
        return firstBuilt(c, {"tc_q32_k2x32", "tc_q16_k4x16"});
    }
    if (c.n <= 16)
    {
        return (cls <= 32 && !narrow) ? firstBuilt(c, {"tc_q16_k1x16"}) : firstBuilt(c, {"tc_q64_k1x32"});
    }
    if (c.n <= 128)
    {
        return narrow ? firstBuilt(c, {"tc_q128_k1x64", "tc_q64_k1x64"}) : firstBuilt(c, {"tc_q64_k1x64"});
    }
    if ((c.n + 127) / 128 * seqs >= (sms * 9) / 10)
    {
        return firstBuilt(c, {"tc_q128_k1x64", "tc_q64_k1x64"});
    }
    if ((c.n + 31) / 32 * seqs >= (sms * 3) / 4)
    {
        return firstBuilt(c, {"tc_q32_k4x64", "tc_q32_k4x32", "tc_q32_k2x32"});
    }
    return firstBuilt(c, {"tc_q16_k4x64", "tc_q16_k4x32", "tc_q16_k4x16"});
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
        int const t = (tcOk && c.dtype == MVT_DTYPE_FLOAT16) ? autoTcIndex(c, dev.smCount) : -1;
        if (t >= 0)
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
    return tcLauncherFor(c, kTcImpls[chosen - MVT_ATTN_TC_FIRST])(c, stream);
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
