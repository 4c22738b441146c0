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

template <typename T, int D, int LD, int VW, int ROWS, int THREADS, typename Map>
__device__ __forceinline__ void loadRows(
    T* dst, T const* src, int64_t stride, int first, int limit, int d, int tid, Map map)
{
    constexpr int kPpr = D / VW; // pieces per padded row (those at column >= d are skipped)
    constexpr int kBytes = VW * static_cast<int>(sizeof(T));
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
            T* s = dst + row * LD + c;
            T const* gp = src + (ok ? g : 0) * stride + c;
            if (kBytes < 4) // single halves: plain loads (cp.async moves 4, 8 or 16 bytes)
            {
                *s = ok ? *gp : fromFloat<T>(0.f);
            }
            else
            {
                cpAsync<(kBytes < 4 ? 4 : kBytes)>(s, gp, ok ? kBytes : 0);
            }
        }
    }
}

// loadRows with the piece width chosen at run time: vw elements = 16, 8 or 4 bytes, else single elements.
template <typename T, int D, int LD, int ROWS, int THREADS, typename Map>
__device__ __forceinline__ void loadRowsAny(
    int vw, T* dst, T const* src, int64_t stride, int first, int limit, int d, int tid, Map map)
{
    constexpr int kE = static_cast<int>(sizeof(T));
    int const bytes = vw * kE;
    if (bytes == 16)
    {
        loadRows<T, D, LD, 16 / kE, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
    }
    else if (bytes == 8)
    {
        loadRows<T, D, LD, 8 / kE, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
    }
    else if (bytes == 4)
    {
        loadRows<T, D, LD, 4 / kE, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
    }
    else
    {
        loadRows<T, D, LD, 1, ROWS, THREADS>(dst, src, stride, first, limit, d, tid, map);
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

// Store output columns c and c+1 (c even) of one row: one 2-element store when the row allows it, else element by
// element.
__device__ __forceinline__ void storePair(__half* p, float a, float b)
{
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}
__device__ __forceinline__ void storePair(float* p, float a, float b)
{
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
template <typename T>
__device__ __forceinline__ void storeOut2(T* row, int c, int d, bool vec, float a, float b)
{
    if (c >= d)
    {
        return;
    }
    if (vec)
    {
        storePair(row + c, a, b);
    }
    else
    {
        row[c] = fromFloat<T>(a);
        if (c + 1 < d)
        {
            row[c + 1] = fromFloat<T>(b);
        }
    }
}

// 2^x: the hardware approximation for the FP16 path, exp2f (FP32 accuracy) for FP32.
template <bool EXACT>
__device__ __forceinline__ float exp2Of(float x)
{
    return EXACT ? exp2f(x) : fastExp2(x);
}

// Shared-memory bytes of the merge of WK partial results (WQ query warps, head-dim class D).
constexpr int mergeBytes(int d, int wq, int wk)
{
    return wk > 1 ? (wq * wk * 16 * (d + 4) * 4 + 2 * wq * wk * 16 * 4) : 0;
}

// End of both tensor-core kernels: each warp holds the running max m (log2 domain), its lanes' parts of the running
// sum l and the unnormalised O (m16n8 accumulator layout, D / 8 tiles of 8 columns) of its 16 query rows over its
// keys. WK == 1: normalise and store. WK > 1: the WK partial results of each row are merged through shared memory
// (`merge`, mergeBytes(D, WQ, WK) bytes, free to reuse after the barrier here).
template <typename T, int D, int WQ, int WK, bool EXACT>
__device__ __forceinline__ void storeAttnOutput(AttnParams const& p, BlockCoord const& bc, unsigned char* merge,
    float (&m)[2], float (&l)[2], float (&o)[D / 8][4], int tid, int wq, int wk, int lane)
{
    constexpr int kThreads = 32 * WQ * WK;
    constexpr int kOLd = D + 4; // floats per row of the merge buffer
    int const n = p.n;
    int const d = p.d;
#pragma unroll
    for (int r = 0; r < 2; ++r)
    {
        l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
        l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    }
    int const g = lane / 4;
    int const col = (lane % 4) * 2;
    bool const vec = p.outVec != 0;
    T* og = static_cast<T*>(p.out) + bc.b * n * p.outStride + static_cast<int64_t>(bc.h) * d;

    if (WK == 1)
    {
#pragma unroll
        for (int r = 0; r < 2; ++r)
        {
            int const row = bc.q0 + wq * 16 + g + 8 * r;
            if (row < n)
            {
                float const inv = 1.f / l[r];
                T* orow = og + row * p.outStride;
#pragma unroll
                for (int t = 0; t < D / 8; ++t)
                {
                    storeOut2(orow, t * 8 + col, d, vec, o[t][2 * r] * inv, o[t][2 * r + 1] * inv);
                }
            }
        }
        return;
    }

    __syncthreads();
    float* os = reinterpret_cast<float*>(merge);
    float* ms = os + WQ * WK * 16 * kOLd;
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
        float mAll = -INFINITY;
#pragma unroll
        for (int w = 0; w < WK; ++w)
        {
            mAll = fmaxf(mAll, ms[(wq * WK + w) * 16 + row]);
        }
        float const mRef = (mAll == -INFINITY) ? 0.f : mAll;
        float lAll = 0.f;
#pragma unroll
        for (int w = 0; w < WK; ++w)
        {
            lAll += ls[(wq * WK + w) * 16 + row] * exp2Of<EXACT>(ms[(wq * WK + w) * 16 + row] - mRef);
        }
        float const f = lAll > 0.f ? exp2Of<EXACT>(m[r] - mRef) / lAll : 0.f;
#pragma unroll
        for (int t = 0; t < D / 8; ++t)
        {
            *reinterpret_cast<float2*>(os + (slot + row) * kOLd + t * 8 + col)
                = make_float2(o[t][2 * r] * f, o[t][2 * r + 1] * f);
        }
    }
    __syncthreads();
    int const pairs = (d + 1) / 2; // column pairs that reach the output
    for (int i = tid; i < WQ * 16 * (D / 2); i += kThreads)
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
            float2 const v2 = *reinterpret_cast<float2 const*>(os + ((q * WK + w) * 16 + row) * kOLd + 2 * pr);
            a0 += v2.x;
            a1 += v2.y;
        }
        storeOut2(og + grow * p.outStride, 2 * pr, d, vec, a0, a1);
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
    loadRowsAny<__half, D, C::kLd, C::kRowsQ, C::kThreads>(vw, qs, qg, p.inStride, bc.q0, n, d, tid, RowsAll());

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
            loadRowsAny<__half, D, C::kLd, WK * KS, C::kThreads>(vw, ks, kg, p.inStride, c0, n, d, tid, map);
            cpAsyncCommit();
            loadRowsAny<__half, D, C::kLd, WK * KS, C::kThreads>(vw, vs, vg, p.inStride, c0, n, d, tid, map);
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

    storeAttnOutput<__half, D, WQ, WK, false>(p, bc, smem + C::kQBytes, m, l, o, tid, wq, wk, lane);
#else
    __trap(); // the host never launches this below sm_80 (checked through cudaFuncGetAttributes)
#endif
}

// ------------------------------------------------------------------------------------------------------------
// 3xTF32 tensor-core kernel (FP32)
// ------------------------------------------------------------------------------------------------------------
// A float x is split into hi = tf32(x) (round to nearest) and lo = x - hi (exact); a product is taken as
// lo_a hi_b + hi_a lo_b + hi_a hi_b on the TF32 tensor cores (mma.sync m16n8k8, FP32 accumulators). The dropped
// lo_a lo_b term and the tensor core's truncation of lo to TF32 leave ~2^-21 relative error per product: FP32-level
// results (a float64-reference emulation of this scheme on the peaked-softmax test case, N = 1000, scale 4:
// 7e-7 relative error, the contract is 1e-5), unlike plain TF32 (~1e-3).

// Shared memory of one FP32 tiling (bytes): K and V chunks of KT*WK rows of D+4 floats (conflict-free fragment
// reads for every D that is a multiple of 8), or the merge buffer when that is larger. Q lives in registers.
constexpr int x3SmemBytes(int d, int wq, int wk, int kt)
{
    return (2 * kt * wk * (d + 4) * 4) > mergeBytes(d, wq, wk) ? (2 * kt * wk * (d + 4) * 4) : mergeBytes(d, wq, wk);
}

// Built for head-dim class D when the shared memory fits in 48 KiB and the score tile (KT keys) plus Q (hi and lo)
// and the O accumulator stay within registers (D * KT <= 64 * 64).
constexpr bool x3Fits(int d, int wq, int wk, int kt)
{
    return x3SmemBytes(d, wq, wk, kt) <= 48 * 1024 && d * kt <= 64 * 64 && 32 * wq * wk <= 512;
}

template <int D, int WQ, int WK, int KT>
struct X3Config
{
    static_assert(D % 8 == 0 && D <= 64, "FP32 head-dim class: a multiple of 8 up to 64");
    static_assert(KT % 8 == 0, "keys per warp: whole 8-key tiles");
    static constexpr int kThreads = 32 * WQ * WK;
    static constexpr int kRowsQ = 16 * WQ;
    static constexpr int kChunk = KT * WK; // keys in shared memory at a time
    static constexpr int kLd = D + 4;      // floats per shared row
    static constexpr int kSmemBytes = x3SmemBytes(D, WQ, WK, KT);
    static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
};

// hi = x rounded to TF32, lo = x - hi (exact in FP32; the tensor core reads its top 19 bits).
__device__ __forceinline__ void splitTf32(float x, uint32_t& hi, uint32_t& lo)
{
#if __CUDA_ARCH__ >= 800
    uint32_t h;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(h) : "f"(x));
    hi = h;
    lo = __float_as_uint(x - __uint_as_float(h));
#else
    hi = __float_as_uint(x);
    lo = 0u;
#endif
}

// c += a * b for one m16n8k8 tile (TF32 operands, FP32 accumulators).
__device__ __forceinline__ void mma1688(float (&c)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// c += a * b in 3xTF32: the small terms first.
__device__ __forceinline__ void mma1688x3(
    float (&c)[4], uint32_t const (&aHi)[4], uint32_t const (&aLo)[4], float b0, float b1)
{
    uint32_t bh0, bl0, bh1, bl1;
    splitTf32(b0, bh0, bl0);
    splitTf32(b1, bh1, bl1);
    mma1688(c, aLo, bh0, bh1);
    mma1688(c, aHi, bl0, bl1);
    mma1688(c, aHi, bh0, bh1);
}

// attnX3Kernel<D, WQ, WK, KT>: D = head dim rounded up to a multiple of 8 (the padding columns of the K/V tiles are
// zeroed once per block, never loaded). A block owns 16*WQ query rows of one (batch, head); warp (wq, wk) reads its
// 16 rows of Q straight into A fragments (pre-scaled by scale * log2(e), split hi/lo once) and takes KT keys of each
// chunk of KT*WK keys that the block stages in shared memory with cp.async (16-, 8- or 4-byte pieces). S = Q K^T
// and O += P V on the tensor cores; P goes from the S accumulators to the A operand of P V in registers: lane
// (g, t) holds keys 2t and 2t+1 of each 8-key tile, so the k index of P V runs over the keys in the order
// 0 2 4 6 1 3 5 7 and the V fragment rows follow that order. Softmax in FP32 with exp2f.
template <int D, int WQ, int WK, int KT>
__global__ void __launch_bounds__(32 * WQ * WK) attnX3Kernel(AttnParams p)
{
#if __CUDA_ARCH__ >= 800
    using C = X3Config<D, WQ, WK, KT>;
    __shared__ __align__(16) unsigned char smem[C::kSmemBytes];
    float* ks = reinterpret_cast<float*>(smem);
    float* vs = ks + C::kChunk * C::kLd;

    int const tid = threadIdx.x;
    int const warp = tid / 32;
    int const lane = tid % 32;
    int const wq = warp / WK;
    int const wk = warp % WK;
    int const g = lane / 4;
    int const t4 = lane % 4;
    int const n = p.n;
    int const d = p.d;
    int const vw = p.vw;
    BlockCoord const bc = decodeBlock(p, C::kRowsQ);
    int64_t const base = bc.b * n * p.inStride + static_cast<int64_t>(bc.h) * d;
    float const* qg = static_cast<float const*>(p.q) + base;
    float const* kg = static_cast<float const*>(p.k) + base;
    float const* vg = static_cast<float const*>(p.v) + base;

    // Head-dim padding: columns d .. D-1 of the K and V rows (contiguous) stay zero for the whole block.
    if (d < D)
    {
        int const pad = D - d;
        for (int i = tid; i < 2 * C::kChunk * pad; i += C::kThreads)
        {
            int const r = i / pad;
            ks[r * C::kLd + d + (i - r * pad)] = 0.f;
        }
    }

    // Q fragments (m16n8k8 A layout: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4) of each 8-column step).
    uint32_t qHi[D / 8][4], qLo[D / 8][4];
    {
        int const r0 = bc.q0 + wq * 16 + g;
#pragma unroll
        for (int kb = 0; kb < D / 8; ++kb)
        {
#pragma unroll
            for (int e = 0; e < 4; ++e)
            {
                int const row = r0 + (e & 1) * 8;
                int const c = kb * 8 + t4 + (e >> 1) * 4;
                float const x = (row < n && c < d) ? __ldg(qg + row * p.inStride + c) * p.scaleLog2 : 0.f;
                splitTf32(x, qHi[kb][e], qLo[kb][e]);
            }
        }
    }

    float m[2] = {-INFINITY, -INFINITY}; // running max (log2 domain) of rows g and g+8
    float l[2] = {0.f, 0.f};             // this lane's part of the running sum
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

    for (int c0 = 0; c0 < n; c0 += C::kChunk)
    {
        if (c0 > 0)
        {
            __syncthreads(); // everyone is done with the previous chunk
        }
        loadRowsAny<float, D, C::kLd, C::kChunk, C::kThreads>(vw, ks, kg, p.inStride, c0, n, d, tid, RowsAll());
        cpAsyncCommit();
        loadRowsAny<float, D, C::kLd, C::kChunk, C::kThreads>(vw, vs, vg, p.inStride, c0, n, d, tid, RowsAll());
        cpAsyncCommit();
        cpAsyncWait<1>(); // K landed (V may still be in flight)
        __syncthreads();
        int const tile0 = wk * KT;
        int const keyBase = c0 + tile0;
        bool const active = keyBase < n; // warp-uniform; an inactive warp still joins every barrier
        float s[KT / 8][4];
#pragma unroll
        for (int j = 0; j < KT / 8; ++j)
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
            for (int j = 0; j < KT / 8; ++j)
            {
                // B = K^T: b0 = K[key g][col t], b1 = K[key g][col t+4]
                float const* kr = ks + (tile0 + j * 8 + g) * C::kLd + t4;
#pragma unroll
                for (int kb = 0; kb < D / 8; ++kb)
                {
                    mma1688x3(s[j], qHi[kb], qLo[kb], kr[kb * 8], kr[kb * 8 + 4]);
                }
            }
            bool const needMask = keyBase + KT > n;
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int j = 0; j < KT / 8; ++j)
            {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                {
                    float val = s[j][e];
                    if (needMask && keyBase + j * 8 + t4 * 2 + (e & 1) >= n)
                    {
                        val = -INFINITY;
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
                mUse[r] = (mNew == -INFINITY) ? 0.f : mNew;
                float const corr = exp2f(m[r] - mUse[r]);
                m[r] = mNew;
                l[r] *= corr;
#pragma unroll
                for (int t = 0; t < D / 8; ++t)
                {
                    o[t][2 * r] *= corr;
                    o[t][2 * r + 1] *= corr;
                }
            }
#pragma unroll
            for (int j = 0; j < KT / 8; ++j)
            {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                {
                    float const pe = exp2f(s[j][e] - mUse[e >> 1]);
                    s[j][e] = pe;
                    l[e >> 1] += pe;
                }
            }
        }
        cpAsyncWait<0>(); // V landed
        __syncthreads();
        if (active)
        {
#pragma unroll
            for (int j = 0; j < KT / 8; ++j)
            {
                // A = P with the k index in key order 0 2 4 6 1 3 5 7: a0 (g, key 2t), a1 (g+8, key 2t),
                // a2 (g, key 2t+1), a3 (g+8, key 2t+1) - exactly this lane's S accumulators.
                uint32_t pHi[4], pLo[4];
                splitTf32(s[j][0], pHi[0], pLo[0]);
                splitTf32(s[j][2], pHi[1], pLo[1]);
                splitTf32(s[j][1], pHi[2], pLo[2]);
                splitTf32(s[j][3], pHi[3], pLo[3]);
                // B = V in the same key order: b0 = V[key 2t][col g], b1 = V[key 2t+1][col g]
                float const* vr = vs + (tile0 + j * 8 + 2 * t4) * C::kLd + g;
#pragma unroll
                for (int t = 0; t < D / 8; ++t)
                {
                    mma1688x3(o[t], pHi, pLo, vr[t * 8], vr[C::kLd + t * 8]);
                }
            }
        }
    }
    storeAttnOutput<float, D, WQ, WK, true>(p, bc, smem, m, l, o, tid, wq, wk, lane);
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

// Elements per global load piece of the tensor-core paths: the widest piece of 16 / 8 / 4 bytes whose element
// count divides the head dim and the row stride and whose size matches the alignment of q, k and v; else 1 (FP16:
// plain 2-byte loads; FP32: 4-byte pieces).
int tcLoadWidth(AttnCall const& c)
{
    int const es = c.dtype == MVT_DTYPE_FLOAT32 ? 4 : 2;
    for (int bytes = 16; bytes >= 4 && bytes >= es; bytes /= 2)
    {
        int const vw = bytes / es;
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

template <int D, int WQ, int WK, int KT>
cudaError_t launchX3(AttnCall const& c, cudaStream_t stream)
{
    using C = X3Config<D, WQ, WK, KT>;
    bool const outVec = c.d % 2 == 0 && c.outStride % 2 == 0 && isAligned(c.out, 8);
    AttnParams p{c.q, c.k, c.v, c.out, c.inStride, c.outStride, static_cast<int>(c.n), c.heads, c.d,
        static_cast<int>((c.n + C::kRowsQ - 1) / C::kRowsQ), c.scale * kLog2e, tcLoadWidth(c), outVec ? 1 : 0};
    int64_t const blocks = static_cast<int64_t>(p.qTiles) * c.batch * c.heads;
    if (blocks > 0x7fffffff)
    {
        return cudaErrorInvalidConfiguration;
    }
    attnX3Kernel<D, WQ, WK, KT><<<static_cast<unsigned>(blocks), C::kThreads, 0, stream>>>(p);
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

// Head-dim classes of the FP32 (3xTF32) path: m16n8k8 tiles need multiples of 8 only; head dims <= 64.
constexpr int kX3Dims[] = {16, 24, 32, 40, 48, 64};
static_assert(sizeof(kX3Dims) == sizeof(kTcDims), "one launcher slot per class in TcImpl");

int dimClass(int const (&dims)[kNumDims], int d)
{
    for (int i = 0; i < kNumDims; ++i)
    {
        if (d <= dims[i])
        {
            return i;
        }
    }
    return -1;
}

int tcDimClass(int d)
{
    return dimClass(kTcDims, d);
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

template <bool FITS, int D, int WQ, int WK, int KT>
struct X3Pick
{
    static TcLauncher get()
    {
        return launchX3<D, WQ, WK, KT>;
    }
};
template <int D, int WQ, int WK, int KT>
struct X3Pick<false, D, WQ, WK, KT>
{
    static TcLauncher get()
    {
        return nullptr;
    }
};

struct TcImpl
{
    char const* name;
    TcLauncher byDim[kNumDims]; // nullptr: not built for that head-dim class
    int dtype;                  // MVT_DTYPE_FLOAT16 (tc_*: kTcDims classes) or MVT_DTYPE_FLOAT32 (x3_*: kX3Dims)
};

// Every class for which the tiling fits (tcFits) up to head dim maxDim.
template <int WQ, int WK, int KT, int KS = KT>
TcImpl tcImpl(char const* name, int maxDim = 128)
{
    return TcImpl{name,
        {tcLauncher<16, WQ, WK, KT, KS>(maxDim), tcLauncher<32, WQ, WK, KT, KS>(maxDim),
            tcLauncher<48, WQ, WK, KT, KS>(maxDim), tcLauncher<64, WQ, WK, KT, KS>(maxDim),
            tcLauncher<96, WQ, WK, KT, KS>(maxDim), tcLauncher<128, WQ, WK, KT, KS>(maxDim)},
        MVT_DTYPE_FLOAT16};
}

// The launcher of one class; no kernel is compiled for a class above MAXD or where the tiling does not fit.
template <int MAXD, int D, int WQ, int WK, int KT>
TcLauncher x3Launcher()
{
    return X3Pick<D <= MAXD && x3Fits(D, WQ, WK, KT), D, WQ, WK, KT>::get();
}

// FP32 3xTF32 tiling, built for every kX3Dims class up to MAXD where it fits (x3Fits).
template <int WQ, int WK, int KT, int MAXD = 64>
TcImpl x3Impl(char const* name)
{
    return TcImpl{name,
        {x3Launcher<MAXD, 16, WQ, WK, KT>(), x3Launcher<MAXD, 24, WQ, WK, KT>(), x3Launcher<MAXD, 32, WQ, WK, KT>(),
            x3Launcher<MAXD, 40, WQ, WK, KT>(), x3Launcher<MAXD, 48, WQ, WK, KT>(),
            x3Launcher<MAXD, 64, WQ, WK, KT>()},
        MVT_DTYPE_FLOAT32};
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
    // FP32 on the tensor cores in 3xTF32 (FP32 accuracy): x3_q<query rows per block>_k<key warps>x<keys per warp>.
    // The FP32 sweep also timed q16_k1x32, q16_k1x64, q32_k1x64 and q64_k1x32: never the fastest, not kept.
    x3Impl<1, 1, 16>("x3_q16_k1x16"),
    x3Impl<4, 1, 16>("x3_q64_k1x16"),
    x3Impl<4, 1, 64>("x3_q64_k1x64"),
    x3Impl<8, 1, 64>("x3_q128_k1x64"),
    x3Impl<1, 4, 32>("x3_q16_k4x32"),
    x3Impl<2, 4, 32>("x3_q32_k4x32"),
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
    int const cls = dimClass(impl.dtype == MVT_DTYPE_FLOAT32 ? kX3Dims : kTcDims, c.d);
    return cls < 0 ? nullptr : impl.byDim[cls];
}

// The tiling's dtype, a head-dim class it is built for. Any alignment: the load width follows the pointers
// (tcLoadWidth).
bool tcShapeOk(AttnCall const& c, TcImpl const& impl)
{
    return c.dtype == impl.dtype && c.n <= 0x7fffffff && tcLauncherFor(c, impl) != nullptr;
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

// FP32 (3xTF32) tiling rules, from the FP32 sweep of benchmark/bench_plugins.py on an H200 (plugin/README.md); every
// MobileViT shape ran faster on one of these than on the SIMT kernel, which stays for head dims > 64.
//  * N <= 16: a 4-warp block of 64 query rows (one busy warp, the other three share the K/V copies).
//  * N <= 128: 64 query rows per block, all keys in each warp.
//  * longer: 128 query rows per block once there are ~0.9 blocks per SM (K/V staged once per 128 queries); at ~2
//    blocks per SM and head dims > 32 (one shape: apple-s N=256, 128 pairs) 64 rows with 16-key tiles (fewer
//    registers per warp); with fewer (batch, head) pairs the keys are split over 4 warps, 32 query rows per block
//    when that still gives ~0.5 blocks per SM, else 16.
int autoX3Index(AttnCall const& c, int smCount)
{
    int64_t const seqs = c.batch * c.heads;
    int64_t const sms = smCount;
    if (c.d > 64)
    {
        return -1;
    }
    if (c.n <= 16)
    {
        return firstBuilt(c, {"x3_q64_k1x16", "x3_q16_k1x16"});
    }
    if (c.n <= 128)
    {
        return firstBuilt(c, {"x3_q64_k1x64"});
    }
    int64_t const blocks128 = (c.n + 127) / 128 * seqs;
    if (blocks128 >= (sms * 18) / 10 && c.d > 32)
    {
        return firstBuilt(c, {"x3_q64_k1x16"});
    }
    if (blocks128 >= (sms * 9) / 10)
    {
        return firstBuilt(c, {"x3_q128_k1x64", "x3_q64_k1x64"});
    }
    if ((c.n + 31) / 32 * seqs >= sms / 2)
    {
        return firstBuilt(c, {"x3_q32_k4x32", "x3_q16_k4x32", "x3_q64_k1x64"});
    }
    return firstBuilt(c, {"x3_q16_k4x32", "x3_q64_k1x64"});
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
        int const t = !tcOk ? -1
                                 : (c.dtype == MVT_DTYPE_FLOAT16 ? autoTcIndex(c, dev.smCount)
                                                                 : autoX3Index(c, dev.smCount));
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
