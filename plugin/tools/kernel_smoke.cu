// kernel_smoke.cu - launches every kernel path of libmvt_kernels.so on exact-size device buffers, for
// compute-sanitizer (memcheck: out-of-bounds / misaligned accesses; racecheck: shared-memory hazards).
// Numerical checks live in tests/gpu/test_plugin_kernels.py; this only checks statuses and sanitizer reports.
//   make -C plugin smoke && compute-sanitizer --tool racecheck plugin/build/kernel_smoke
#include "mvt_kernels.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace
{
int gLaunches = 0;

#define SMOKE_CHECK(call)                                                                                              \
    do                                                                                                                 \
    {                                                                                                                  \
        int const s_ = static_cast<int>(call);                                                                         \
        if (s_ != 0)                                                                                                   \
        {                                                                                                              \
            std::fprintf(stderr, "%s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, s_, mvt_status_string(s_));    \
            std::exit(1);                                                                                              \
        }                                                                                                              \
    } while (0)

// A device buffer of exactly `bytes` bytes filled with small random 16-bit patterns (valid FP16 and FP32 values).
void* randomBuffer(size_t bytes)
{
    void* p = nullptr;
    SMOKE_CHECK(cudaMalloc(&p, bytes > 0 ? bytes : 1));
    std::vector<unsigned short> host((bytes + 1) / 2);
    for (auto& h : host)
    {
        h = static_cast<unsigned short>(0x3000 + (std::rand() % 0x0c00)); // FP16 in [0.125, 1); FP32 finite
    }
    SMOKE_CHECK(cudaMemcpy(p, host.data(), bytes, cudaMemcpyHostToDevice));
    return p;
}

void layerNorm(int64_t rows, int64_t cols, int dtype, int tpr)
{
    size_t const es = dtype == MVT_DTYPE_FLOAT32 ? 4 : 2;
    void* x = randomBuffer(rows * cols * es);
    void* g = randomBuffer(cols * 4);
    void* b = randomBuffer(cols * 4);
    void* y = nullptr;
    SMOKE_CHECK(cudaMalloc(&y, rows * cols * es));
    SMOKE_CHECK(mvt_layernorm_ex(x, static_cast<float*>(g), static_cast<float*>(b), y, rows, cols, 1e-5f, dtype, tpr,
        nullptr));
    SMOKE_CHECK(cudaDeviceSynchronize());
    ++gLaunches;
    SMOKE_CHECK(cudaFree(x));
    SMOKE_CHECK(cudaFree(g));
    SMOKE_CHECK(cudaFree(b));
    SMOKE_CHECK(cudaFree(y));
}

// offset > 0: packed qkv starts `offset` elements into its buffer (pointers off the 16-byte grid)
void attention(int64_t batch, int64_t n, int heads, int d, int dtype, int impl, bool packed, int offset = 0)
{
    size_t const es = dtype == MVT_DTYPE_FLOAT32 ? 4 : 2;
    int64_t const hd = static_cast<int64_t>(heads) * d;
    void* out = nullptr;
    SMOKE_CHECK(cudaMalloc(&out, batch * n * hd * es));
    int status = 0;
    if (packed)
    {
        char* buf = static_cast<char*>(randomBuffer((batch * n * 3 * hd + offset) * es));
        char* qkv = buf + offset * es;
        status = mvt_attention_ex(qkv, qkv + hd * es, qkv + 2 * hd * es, out, batch, n, heads, d, 3 * hd, hd, 0.17f,
            dtype, impl, nullptr);
        SMOKE_CHECK(cudaDeviceSynchronize());
        SMOKE_CHECK(cudaFree(buf));
    }
    else
    {
        void* q = randomBuffer(batch * n * hd * es);
        void* k = randomBuffer(batch * n * hd * es);
        void* v = randomBuffer(batch * n * hd * es);
        status = mvt_attention_ex(q, k, v, out, batch, n, heads, d, hd, hd, 0.17f, dtype, impl, nullptr);
        SMOKE_CHECK(cudaDeviceSynchronize());
        SMOKE_CHECK(cudaFree(q));
        SMOKE_CHECK(cudaFree(k));
        SMOKE_CHECK(cudaFree(v));
    }
    SMOKE_CHECK(cudaFree(out));
    if (status == cudaErrorInvalidValue && impl != MVT_ATTN_AUTO)
    {
        return; // this implementation does not take this shape / dtype
    }
    SMOKE_CHECK(status);
    ++gLaunches;
}
} // namespace

int main()
{
    struct Ln
    {
        int64_t rows, cols;
    };
    Ln const lns[] = {{1027, 144}, {67, 33}, {5, 1024}, {9, 4100}, {300, 240}, {3, 1}};
    for (int dtype = 0; dtype < 2; ++dtype)
    {
        for (Ln const& s : lns)
        {
            for (int tpr : {0, 4, 8, 16, 32})
            {
                layerNorm(s.rows, s.cols, dtype, tpr);
            }
        }
    }
    struct At
    {
        int64_t batch, n;
        int heads, d;
    };
    // the original model (1 head of 32), Apple's MobileViT (4 heads of 16..60), odd / large head dims
    At const ats[] = {{3, 100, 1, 32}, {2, 17, 1, 32}, {2, 256, 1, 32}, {4, 16, 1, 32}, {2, 64, 2, 64}, {1, 300, 1, 128},
        {2, 33, 3, 24}, {1, 256, 4, 20}, {2, 64, 4, 30}, {2, 16, 4, 36}, {1, 70, 4, 60}, {1, 50, 2, 33}, {1, 40, 1, 96}};
    int const nImpls = mvt_attention_num_impls();
    for (int dtype = 0; dtype < 2; ++dtype)
    {
        for (At const& s : ats)
        {
            for (int impl = 0; impl < nImpls; ++impl)
            {
                attention(s.batch, s.n, s.heads, s.d, dtype, impl, true);
            }
            attention(s.batch, s.n, s.heads, s.d, dtype, MVT_ATTN_AUTO, false);
        }
        for (int offset : {1, 2, 3})
        {
            attention(2, 40, 2, 30, dtype, MVT_ATTN_AUTO, true, offset);
            for (int impl = MVT_ATTN_TC_FIRST; impl < nImpls; ++impl)
            {
                attention(1, 70, 1, 32, dtype, impl, true, offset);
            }
        }
    }
    std::printf("kernel_smoke: %d launches OK\n", gLaunches);
    return 0;
}
