// common.cu - status strings, ABI version and the per-device cache.
#include "common.cuh"
#include "mvt_kernels.h"

#include <atomic>

namespace mvt
{
namespace
{
constexpr int kMaxDevices = 64;
// Packed (ccMajor << 24 | ccMinor << 16 | smCount) + 1 per device; 0 = not read yet. Benign duplicate reads.
std::atomic<int64_t> gDeviceCache[kMaxDevices];
} // namespace

cudaError_t currentDeviceInfo(DeviceInfo& info)
{
    int dev = 0;
    cudaError_t err = cudaGetDevice(&dev);
    if (err != cudaSuccess)
    {
        return err;
    }
    if (dev >= 0 && dev < kMaxDevices)
    {
        int64_t const packed = gDeviceCache[dev].load(std::memory_order_relaxed);
        if (packed != 0)
        {
            int64_t const v = packed - 1;
            info.ccMajor = static_cast<int>((v >> 24) & 0xff);
            info.ccMinor = static_cast<int>((v >> 16) & 0xff);
            info.smCount = static_cast<int>(v & 0xffff);
            return cudaSuccess;
        }
    }
    int major = 0, minor = 0, sms = 0;
    if ((err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess
        || (err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev)) != cudaSuccess
        || (err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess)
    {
        return err;
    }
    info.ccMajor = major;
    info.ccMinor = minor;
    info.smCount = sms;
    if (dev >= 0 && dev < kMaxDevices)
    {
        int64_t const v = (static_cast<int64_t>(major & 0xff) << 24) | (static_cast<int64_t>(minor & 0xff) << 16)
            | static_cast<int64_t>(sms & 0xffff);
        gDeviceCache[dev].store(v + 1, std::memory_order_relaxed);
    }
    return cudaSuccess;
}

} // namespace mvt

extern "C" int32_t mvt_kernels_abi_version(void)
{
    return 1;
}

extern "C" char const* mvt_status_string(int32_t status)
{
    return cudaGetErrorString(static_cast<cudaError_t>(status));
}
