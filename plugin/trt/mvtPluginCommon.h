// mvtPluginCommon.h - pieces shared by the TensorRT plugins of this library (logging, (de)serialisation, fields).
//
// Builds against the TensorRT 8.2 .. 11.x headers. TensorRT 10 deprecates IPluginV2DynamicExt / IPluginCreator
// (IPluginV3 is the new interface); they still work, and every file of the glue wraps itself in
// MVT_DEPRECATION_PUSH / MVT_DEPRECATION_POP so that those warnings are silenced here only.
#ifndef MVT_PLUGIN_COMMON_H
#define MVT_PLUGIN_COMMON_H

// TensorRT's own headers leave some parameters unused; that is not ours to warn about.
#if defined(__clang__)
#define MVT_TRT_HEADERS_BEGIN _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wunused-parameter\"")
#define MVT_TRT_HEADERS_END _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define MVT_TRT_HEADERS_BEGIN _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wunused-parameter\"")
#define MVT_TRT_HEADERS_END _Pragma("GCC diagnostic pop")
#else
#define MVT_TRT_HEADERS_BEGIN
#define MVT_TRT_HEADERS_END
#endif

#if defined(__clang__)
#define MVT_DEPRECATION_PUSH                                                                                            \
    _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wdeprecated-declarations\"")
#define MVT_DEPRECATION_POP _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define MVT_DEPRECATION_PUSH                                                                                            \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wdeprecated-declarations\"")
#define MVT_DEPRECATION_POP _Pragma("GCC diagnostic pop")
#elif defined(_MSC_VER)
#define MVT_DEPRECATION_PUSH __pragma(warning(push)) __pragma(warning(disable : 4996))
#define MVT_DEPRECATION_POP __pragma(warning(pop))
#else
#define MVT_DEPRECATION_PUSH
#define MVT_DEPRECATION_POP
#endif

MVT_DEPRECATION_PUSH

MVT_TRT_HEADERS_BEGIN
#include <NvInferRuntime.h>
MVT_TRT_HEADERS_END

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace mvt
{
namespace plugin
{

// One line on stderr: "[mvt_plugins] <where>: <message>". Never throws.
void logError(char const* where, char const* message) noexcept;
void logError(char const* where, std::string const& message) noexcept;
void logWarning(char const* where, std::string const& message) noexcept;

// Human-readable shape, e.g. "[-1,4,256,96]". Works with Dims of TensorRT 8 (int32) and 10+ (int64).
std::string dimsToString(nvinfer1::Dims const& dims);

// Product of dims.d[begin, end) (all concrete, >= 0).
int64_t volume(nvinfer1::Dims const& dims, int32_t begin, int32_t end) noexcept;

// Element size of the plugin data types this library accepts (0 for any other type).
size_t elementSize(nvinfer1::DataType type) noexcept;

template <typename T>
void writeValue(char*& buffer, T const& value) noexcept
{
    std::memcpy(buffer, &value, sizeof(T));
    buffer += sizeof(T);
}

// Reads one T; false when fewer than sizeof(T) bytes remain.
template <typename T>
bool readValue(char const*& buffer, char const* end, T& value) noexcept
{
    if (buffer == nullptr || end - buffer < static_cast<std::ptrdiff_t>(sizeof(T)))
    {
        return false;
    }
    std::memcpy(&value, buffer, sizeof(T));
    buffer += sizeof(T);
    return true;
}

// The field named `name` in `fc` (nullptr when absent).
nvinfer1::PluginField const* findField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept;

// Fields in `fc` whose names are not in `known` (for a warning).
std::string unknownFields(nvinfer1::PluginFieldCollection const* fc, std::vector<nvinfer1::PluginField> const& known);

// Reads a scalar FLOAT32 / INT32 field; on a wrong type or length writes the reason to `error` and returns false.
bool readFloat32Field(nvinfer1::PluginField const& field, float& value, std::string& error);
bool readInt32Field(nvinfer1::PluginField const& field, int32_t& value, std::string& error);

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP

#endif // MVT_PLUGIN_COMMON_H
